package imapd

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// rawConn speaks IMAP line by line.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, c: c, br: bufio.NewReader(c)}
	rc.until("* OK")
	return rc
}

func (rc *rawConn) cmd(line string) {
	rc.t.Helper()
	rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.c.Write([]byte(line + "\r\n")); err != nil {
		rc.t.Fatalf("writing %q: %v", line, err)
	}
}

// until reads lines up to and including one starting with prefix, at most
// 1000 lines, within 10 s.
func (rc *rawConn) until(prefix string) string {
	rc.t.Helper()
	var b strings.Builder
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < 1000; i++ {
		line, err := rc.br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			rc.t.Fatalf("reading until %q: %v; got:\n%s", prefix, err, b.String())
		}
		if strings.HasPrefix(line, prefix) {
			return b.String()
		}
	}
	rc.t.Fatalf("no line starting with %q in 1000 lines", prefix)
	return ""
}

func TestMalformedLinesGetBAD(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	rc := dialRaw(t, d.addr)
	rc.cmd("a1 LOGIN alice \"" + testPassword + "\"")
	if got := rc.until("a1 "); !strings.Contains(got, "a1 OK") {
		t.Fatalf("LOGIN: %s", got)
	}
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	for i, line := range []string{
		"b1 FETCH (FLAGS)",
		"b2 FETCH 1 (FLAGS",
		"b3 STORE 1 +FLAGS (\\Seen",
		"b4 SEARCH (((",
		"b5 FROBNICATE",
		"b6 UID FETCH",
		"b7 STORE 1 FLAGZ (\\Seen)",
		// Dates that name no day or time: go-imap answered NO [SERVERBUG].
		// (A day its month does not have is searched:
		// TestSearchImpossibleDay.)
		"b8 SEARCH BEFORE 32-Dec-9999",
		"b9 UID SEARCH SENTSINCE 29-Fob-2023",
		"b10 APPEND INBOX \"29-Feb-2023 00:00:00 +0000\" {1+}\r\nx",
		"b11 APPEND INBOX (\\Seen) \"01-Jan-2024 24:00:00 +0099\" {1+}\r\nx",
		// Dates in no date's form: NO [SERVERBUG] too.
		"b12 SEARCH BEFORE 1-Jan-1",
		"b13 SEARCH SINCE 001-Jan-2020",
		"b14 UID SEARCH SENTBEFORE 1-Jan-00001",
	} {
		rc.cmd(line)
		tag := strings.Fields(line)[0]
		got := rc.until(tag + " ")
		if !strings.Contains(got, tag+" BAD") || (strings.Contains(line, "-20") || strings.Contains(line, "-Jan-")) && !strings.Contains(got, "is not a valid date") {
			t.Errorf("line %d %q: got %q, want BAD (naming the date, for a date)", i, line, got)
		}
	}
	rc.cmd("c1 FETCH 1 (UID FLAGS)")
	if got := rc.until("c1 "); !strings.Contains(got, "* 1 FETCH (UID 1 FLAGS (\\Recent))") || !strings.Contains(got, "c1 OK") {
		t.Fatalf("FETCH after malformed lines: %s", got)
	}
	// A UID range beyond the last UID still names the last message
	// (RFC 9051 section 6.4.9).
	rc.cmd("c3 UID FETCH 100:* (FLAGS)")
	if got := rc.until("c3 "); !strings.Contains(got, "* 4 FETCH (UID 4 FLAGS (\\Recent))") {
		t.Fatalf("UID FETCH 100:*: %s", got)
	}
	rc.cmd("c4 LSUB \"\" \"*\"")
	if got := rc.until("c4 "); !strings.Contains(got, "\"/\" INBOX\r\n") || !strings.Contains(got, "* LSUB") {
		t.Fatalf("LSUB: %s", got)
	}
	// IDLE over the raw socket, then a delivery.
	rc.cmd("c2 IDLE")
	rc.until("+ ")
	r.Deliver([]byte("Subject: raw idle\r\n\r\nhi\r\n"))
	if got := rc.until("* 5 EXISTS"); !strings.Contains(got, "* 5 EXISTS") {
		t.Fatalf("IDLE: %s", got)
	}
	rc.cmd("DONE")
	if got := rc.until("c2 "); !strings.Contains(got, "c2 OK") {
		t.Fatalf("IDLE DONE: %s", got)
	}
}

// TestSearchBeforeYearOne: go-imap parses the date 1-Jan-0001 into the zero
// time, which its SearchCriteria take for "no such key", so BEFORE and
// SENTBEFORE 1-Jan-0001 (a client's smallest date, as .NET's
// DateTime.MinValue) matched every message, where they match none: a
// client deleting what it found before that date deleted everything. Now
// the search is refused; the other dates, and SINCE 1-Jan-0001, as before.
// SMALLER 0 and LARGER 0 were dropped the same way (a zero is "no such
// key"): SMALLER 0 matched every message, and NOT SMALLER 0 none.
func TestSearchBeforeYearOne(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	rc := dialRaw(t, d.addr)
	rc.cmd("a1 LOGIN alice \"" + testPassword + "\"")
	if got := rc.until("a1 "); !strings.Contains(got, "a1 OK") {
		t.Fatalf("LOGIN: %s", got)
	}
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	for _, tc := range []struct{ line, want string }{
		{"s1 SEARCH BEFORE 1-Jan-0001", "s1 NO [CANNOT] BEFORE 1-Jan-0001: "},
		{"s2 UID SEARCH SENTBEFORE 01-Jan-0001", "s2 NO [CANNOT] SENTBEFORE 01-Jan-0001: "},
		{"s3 SEARCH OR BEFORE \"1-Jan-0001\" SUBJECT nowhere-in-any-message", "s3 NO [CANNOT] BEFORE 1-Jan-0001: "},
		{"s4 SEARCH RETURN (SAVE) before 1-jan-0001", "s4 NO [CANNOT] BEFORE 1-jan-0001: "},
		{"s5 SEARCH BEFORE 1-Jan-0100", "* SEARCH\r\ns5 OK"},
		{"s6 SEARCH SINCE 1-Jan-0001", "* SEARCH 1 2 3 4\r\ns6 OK"},
		{"s7 SEARCH NOT BEFORE 1-Jan-0100", "* SEARCH 1 2 3 4\r\ns7 OK"},
		{"s8 SEARCH SMALLER 0", "s8 NO [CANNOT] SMALLER 0: no message is smaller"},
		{"s9 UID SEARCH NOT smaller 00", "s9 NO [CANNOT] SMALLER 00: "},
		{"s10 SEARCH OR LARGER 0 SUBJECT nowhere-in-any-message", "s10 NO [CANNOT] LARGER 0: "},
		{"s11 SEARCH SMALLER 1", "* SEARCH\r\ns11 OK"},
		{"s12 SEARCH LARGER 1", "* SEARCH 1 2 3 4\r\ns12 OK"},
		{"s13 SEARCH SUBJECT SMALLER", "* SEARCH\r\ns13 OK"},
	} {
		rc.cmd(tc.line)
		tag := strings.Fields(tc.line)[0]
		if got := rc.until(tag + " "); !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.line, got, tc.want)
		}
	}
}

// loggedInRaw dials addr and logs in as alice over a raw connection.
func loggedInRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.cmd("a1 LOGIN alice \"" + testPassword + "\"")
	if got := rc.until("a1 "); !strings.Contains(got, "a1 OK") {
		t.Fatalf("LOGIN: %s", got)
	}
	return rc
}

// selectedRaw logs in to a device holding deliverAll's four messages and
// selects INBOX over a raw connection.
func selectedRaw(t *testing.T) *rawConn {
	t.Helper()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	if got := rc.until("a2 "); !strings.Contains(got, "a2 OK") {
		t.Fatalf("SELECT: %s", got)
	}
	return rc
}

// rawCase is a command line and what its reply must contain.
type rawCase struct{ line, want string }

// runRaw sends each case's line and checks its reply up to the tagged one.
func runRaw(t *testing.T, rc *rawConn, cases []rawCase) {
	t.Helper()
	for _, tc := range cases {
		rc.cmd(tc.line)
		tag := strings.Fields(tc.line)[0]
		if got := rc.until(tag + " "); !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q in it", tc.line, got, tc.want)
		}
	}
}

// TestUnknownSearchKeyGetsBAD: go-imap takes a word it does not know as a
// search key (MODSEQ, without CONDSTORE) for a sequence set, and answered
// NO [SERVERBUG], telling the client the server had failed.
func TestUnknownSearchKeyGetsBAD(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t)
	runRaw(t, rc, []rawCase{
		{"s1 SEARCH MODSEQ 5", `s1 BAD [CLIENTBUG] "MODSEQ" is not a search key`},
		{"s2 UID SEARCH NOT OR SEEN (FROBNICATE) 1", `s2 BAD [CLIENTBUG] "FROBNICATE" is not a search key`},
		{"s3 SEARCH RETURN (COUNT) CHARSET UTF-8 modseq 1", `s3 BAD [CLIENTBUG] "modseq" is not a search key`},
		// Words where arguments go are not keys.
		{"s4 SEARCH SUBJECT modseq HEADER MODSEQ x", "* SEARCH\r\ns4 OK"},
		{"s5 SEARCH 1:2 UNSEEN", "* SEARCH 1 2\r\ns5 OK"},
		// An argument that starts with a digit is not a sequence set: a
		// date, a subject. The reply named the date, not the key.
		{"s6 SEARCH SENTON 1-Jan-2020 FUZZY TEXT x", `s6 BAD [CLIENTBUG] "FUZZY" is not a search key`},
		{"s7 SEARCH SUBJECT 2:x FROB", `s7 BAD [CLIENTBUG] "FROB" is not a search key`},
		{"s8 UID SEARCH SINCE 1-Feb-2024 OLDER 5", `s8 BAD [CLIENTBUG] "OLDER" is not a search key`},
		// Sequence sets that do not parse are named, as a key and as
		// UID's argument.
		{"s9 SEARCH SUBJECT x 1:x", `s9 BAD [CLIENTBUG] "1:x" is not a valid sequence set`},
		{"s10 SEARCH UID 2:y", `s10 BAD [CLIENTBUG] "2:y" is not a valid sequence set`},
	})
}

// TestFetchSectionGrammar: FETCH items go-imap's parser takes although
// RFC 3501's grammar does not get BAD, not an answer under another label;
// the connection goes on.
func TestFetchSectionGrammar(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t)
	runRaw(t, rc, []rawCase{
		// An empty header-list: answered as BODY[HEADER], the whole
		// header, and without PEEK \Seen was set.
		{"f1 FETCH 1 BODY.PEEK[HEADER.FIELDS ()]", "f1 BAD [CLIENTBUG] HEADER.FIELDS (): the list of header field names is empty"},
		{"f2 UID FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS.NOT ()])", "f2 BAD [CLIENTBUG] HEADER.FIELDS.NOT ()"},
		{"f3 FETCH 2 BODY[HEADER.FIELDS ()]", "f3 BAD [CLIENTBUG]"},
		{"f4 FETCH 2 (FLAGS)", "* 2 FETCH (FLAGS (\\Recent))\r\nf4 OK"},
		{"f5 FETCH 1 (BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (Subject)])", " BODY[HEADER.FIELDS (\"Subject\")] {28}\r\n"},
		// Part numbers are nz-number.
		{"g1 FETCH 1 BODY.PEEK[0]", "g1 BAD [CLIENTBUG] section part 0"},
		{"g2 FETCH 1 BODY.PEEK[1.0]", "g2 BAD [CLIENTBUG] section part 0"},
		{"g3 FETCH 1 BINARY.PEEK[0]", "g3 BAD [CLIENTBUG] section part 0"},
		{"g4 UID FETCH 1 BINARY.SIZE[0]", "g4 BAD [CLIENTBUG] section part 0"},
		{"g5 FETCH 1 BODY.PEEK[1]", "* 1 FETCH (BODY[1] {"},
		// A first part number beyond 32 bits, or with a leading zero:
		// go-imap's parser dropped it, and BODY[4294967296] was answered
		// with the whole message under the label BODY[]; BODY[01] came
		// back as BODY[1], a label the client did not ask for.
		{"g6 FETCH 1 BODY.PEEK[4294967296]", "g6 BAD [CLIENTBUG] section part 4294967296"},
		{"g7 FETCH 1 (UID BODY.PEEK[99999999999999999999999]<0.10>)", "g7 BAD [CLIENTBUG] section part 99999999999999999999999"},
		{"g8 FETCH 1 body[4294967297.MIME]", "g8 BAD [CLIENTBUG]"},
		{"g9 FETCH 1 BODY.PEEK[01]", "g9 BAD [CLIENTBUG] section part 01"},
		{"g10 FETCH 1 BODY.PEEK[1.01]", "g10 BAD [CLIENTBUG] section part 01"},
		{"g11 FETCH 1 (BODY.PEEK[HEADER.FIELDS (\"BODY[4294967296]\")])", "g11 OK"},
		{"g12 FETCH 1 BODY.PEEK[4294967295]", "* 1 FETCH (BODY[4294967295] {0}\r\n)\r\ng12 OK"},
		// A partial origin beyond 32 bits was written back as <0>; before
		// ENABLE IMAP4rev2 it is not a number (TestFetchPartialNumber64).
		{"h1 FETCH 1 BODY.PEEK[]<4294967296.10>", "h1 BAD [CLIENTBUG] partial <4294967296.10>"},
		{"h2 FETCH 1 BINARY.PEEK[1]<0.4294967296>", "h2 BAD [CLIENTBUG] partial <0.4294967296>"},
		{"h3 FETCH 1 BODY.PEEK[]<4294967295.10>", "* 1 FETCH (BODY[]<4294967295> {0}\r\n)\r\nh3 OK"},
	})
}

// TestSearchSaveAlone: a SEARCH whose only result option is SAVE answers
// with no ESEARCH response (RFC 5182 section 2.1); go-imap wrote one. The
// result is saved all the same, and other result options are answered.
func TestSearchSaveAlone(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t)
	for _, tc := range []struct{ line, want string }{
		{"r1 SEARCH RETURN (SAVE) 2:3", "r1 OK"},
		{"r2 FETCH $ (UID)", "* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nr2 OK"},
		{"r3 UID SEARCH return (save) UID 4", "r3 OK"},
		{"r4 UID FETCH $ (UID)", "* 4 FETCH (UID 4)\r\nr4 OK"},
		{"r5 SEARCH RETURN (SAVE MIN) 2:3", "* ESEARCH (TAG \"r5\") MIN 2\r\nr5 OK"},
		{"r6 SEARCH RETURN () 1", "* ESEARCH (TAG \"r6\") ALL 1\r\nr6 OK"},
		{"r7 SEARCH 1", "* SEARCH 1\r\nr7 OK"},
	} {
		rc.cmd(tc.line)
		tag := strings.Fields(tc.line)[0]
		if got := rc.until(tag + " "); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: got %q, want it to start with %q", tc.line, got, tc.want)
		}
	}
}

// TestFetchPartialNumber64: once the session enabled IMAP4rev2, a
// partial's origin and length are number64 (RFC 9051 section 9) and are
// served, the origin written back whole; before, they are 32 bits (RFC 3501
// section 9) and get BAD (TestFetchSectionGrammar). An origin past the end
// of the section is the empty string (RFC 9051 section 6.4.5).
func TestFetchPartialNumber64(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	rc := dialRaw(t, d.addr)
	runRaw(t, rc, []rawCase{
		{"a1 LOGIN alice \"" + testPassword + "\"", "a1 OK"},
		{"a2 ENABLE IMAP4rev2", "* ENABLED IMAP4rev2\r\na2 OK"},
		{"a3 SELECT INBOX", "a3 OK"},
		// go-imap wrote the origin back as its low 32 bits: <0>.
		{"w1 FETCH 1 BODY.PEEK[]<4294967296.10>", "* 1 FETCH (BODY[]<4294967296> {0}\r\n)\r\nw1 OK"},
		{"w2 FETCH 1 (BODY.PEEK[TEXT]<9223372036854775807.1> BODY.PEEK[1.MIME]<4294967297.2>)",
			"* 1 FETCH (BODY[TEXT]<9223372036854775807> {0}\r\n BODY[1.MIME]<4294967297> {0}\r\n)\r\nw2 OK"},
		{"w3 FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (Subject)]<4294967296.1> BODY.PEEK[]<0.4>)",
			" BODY[]<0> {4}\r\n"},
		{"w4 FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Subject \"X-A\")]<4294967296.1>)",
			"* 1 FETCH (BODY[HEADER.FIELDS.NOT (\"Subject\" \"X-A\")]<4294967296> {0}\r\n)\r\nw4 OK"},
		// A length near 2^63 overflowed origin plus length.
		{"w5 FETCH 1 BODY.PEEK[]<1.9223372036854775807>", "* 1 FETCH (BODY[]<1> {"},
		{"w6 FETCH 1 BODY.PEEK[1]<1.9223372036854775807>", "* 1 FETCH (BODY[1]<1> {"},
		{"w7 FETCH 1 BINARY.PEEK[1]<4294967296.9223372036854775807>", "* 1 FETCH (BINARY[1] ~{0}\r\n)\r\nw7 OK"},
		// Beyond number64: go-imap's parser refuses it.
		{"w8 FETCH 1 BODY.PEEK[]<9223372036854775808.1>", "w8 BAD"},
		// Without PEEK, \Seen is set and the new flags go with the section.
		{"w9 FETCH 2 BODY[]<4294967296.10>", "(FLAGS (\\Seen) BODY[]<4294967296> {0}\r\n)\r\nw9 OK"},
		{"w10 FETCH 2 FLAGS", "* 2 FETCH (FLAGS (\\Seen))\r\nw10 OK"},
	})
	// The response to w3 holds both sections, the wide one whole.
	rc.cmd("w11 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (Subject)]<4294967296.1>)")
	got := rc.until("w11 ")
	if n := strings.Count(got, " BODY[HEADER.FIELDS (\"Subject\")]<4294967296> {0}\r\n)\r\n"); n != 4 || !strings.Contains(got, "w11 OK") {
		t.Errorf("UID FETCH 1:* of a wide section: %d sections written back whole, want 4: %q", n, got)
	}
}

// TestAppendEndsWithMessage: text after an APPEND's message literal other
// than the end of the command. go-imap appended the message, then found
// no CRLF and answered nothing at all: the client waited for a reply
// that never came (and would send the message again), and a literal in
// that text ended the connection. Now it is BAD, nothing is appended,
// and the connection stays in step.
func TestAppendEndsWithMessage(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t) // INBOX holds 4 messages
	rc.cmd("e1 ENABLE UTF8=ACCEPT")
	rc.until("e1 ")
	for _, tc := range []struct{ send, tag, want string }{
		{"b1 APPEND INBOX {3+}\r\nabc extra", "b1", `b1 BAD [CLIENTBUG] " extra" follows the message`},
		{"n1 NOOP", "n1", "n1 OK"},
		{"b2 APPEND INBOX {3+}\r\nabc {1+}\r\nx", "b2", "b2 BAD [CLIENTBUG] "},
		{"n2 NOOP", "n2", "n2 OK"},
		{"b3 APPEND INBOX UTF8 (~{3+}\r\nabc) x", "b3", "b3 BAD [CLIENTBUG] "},
		{"b4 APPEND INBOX (\\Seen) {3+}\r\nabc\x00", "b4", "b4 BAD [CLIENTBUG] "},
		{"g1 APPEND INBOX {3+}\r\nabc", "g1", "g1 OK [APPENDUID "},
		{"g2 APPEND INBOX UTF8 (~{3+}\r\nabc)", "g2", "g2 OK [APPENDUID "},
		{"g3 APPEND INBOX {3+}\r\nabc ", "g3", "g3 OK [APPENDUID "}, // a space before CRLF, as go-imap takes it
		{"n3 NOOP", "n3", "n3 OK"},
	} {
		rc.cmd(tc.send)
		if got := rc.until(tc.tag + " "); !strings.Contains(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.send, got, tc.want)
		}
	}
	// A synchronizing literal: "+" first, then the same.
	rc.cmd("b5 APPEND INBOX {3}")
	rc.until("+ ")
	rc.cmd("abc junk")
	if got := rc.until("b5 "); !strings.Contains(got, "b5 BAD [CLIENTBUG] ") {
		t.Errorf("APPEND of a synchronizing literal with text after it: %q", got)
	}
	rc.cmd("s1 STATUS INBOX (MESSAGES)")
	if got := rc.until("s1 "); !strings.Contains(got, "(MESSAGES 7)") {
		t.Errorf("INBOX after the APPENDs: %q, want the 4 messages and the 3 well-formed APPENDs", got)
	}
}

// TestAppendEmptyEndsWithMessage: the same for an empty message ({0}),
// whose bytes go-imap never reads: text after it left the APPEND
// unanswered, and its empty message appended.
func TestAppendEmptyEndsWithMessage(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t) // INBOX holds 4 messages
	for _, tc := range []struct{ send, tag, want string }{
		{"b1 APPEND INBOX {0+}\r\n extra", "b1", `b1 BAD [CLIENTBUG] " extra" follows the message`},
		{"n1 NOOP", "n1", "n1 OK"},
		{"b2 APPEND INBOX (\\Seen) {0+}\r\n {1+}\r\nx", "b2", "b2 BAD [CLIENTBUG] "},
		{"n2 NOOP", "n2", "n2 OK"},
		{"g1 APPEND INBOX {0+}\r\n", "g1", "g1 OK [APPENDUID "},
		{"n3 NOOP", "n3", "n3 OK"},
	} {
		rc.cmd(tc.send)
		if got := rc.until(tc.tag + " "); !strings.Contains(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.send, got, tc.want)
		}
	}
	// A synchronizing literal: "+" first, then the same.
	rc.cmd("b3 APPEND INBOX {0}")
	rc.until("+ ")
	rc.cmd(" junk")
	if got := rc.until("b3 "); !strings.Contains(got, "b3 BAD [CLIENTBUG] ") {
		t.Errorf("APPEND of an empty synchronizing literal with text after it: %q", got)
	}
	rc.cmd("g2 APPEND INBOX {0}")
	rc.until("+ ")
	rc.cmd("")
	if got := rc.until("g2 "); !strings.Contains(got, "g2 OK [APPENDUID ") {
		t.Errorf("APPEND of an empty synchronizing literal: %q", got)
	}
	rc.cmd("s1 STATUS INBOX (MESSAGES)")
	if got := rc.until("s1 "); !strings.Contains(got, "(MESSAGES 6)") {
		t.Errorf("INBOX after the APPENDs: %q, want the 4 messages and the 2 well-formed APPENDs", got)
	}
}

// TestAppendDateTimeGetsBAD: an APPEND date-time of another shape than
// the grammar's ("", "garbage", a date without a time, a two-digit year)
// got NO [SERVERBUG] from go-imap, telling the client the server failed;
// one of the right shape naming no day was BAD already.
func TestAppendDateTimeGetsBAD(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t)
	var cases []rawCase
	for i, d := range []string{`""`, `"garbage"`, `"1-Jan-2020"`, `" 1-Jan-2020 10:00:00"`, `"1-Jan-20 10:00:00 +0000"`, `"29-Feb-2023 10:00:00 +0000"`} {
		for j, flags := range []string{"", `(\Seen) `} {
			cases = append(cases, rawCase{fmt.Sprintf("d%d%d APPEND INBOX %s%s {1+}\r\nx", i, j, flags, d), "BAD [CLIENTBUG] "})
		}
	}
	cases = append(cases,
		rawCase{"d9 APPEND \"INBOX\" (\\Seen) \"01-Jan-2020 10:00:00 +0000\" {1+}\r\nx", "d9 OK [APPENDUID "},
		rawCase{"s1 STATUS INBOX (MESSAGES)", "(MESSAGES 5)"})
	runRaw(t, rc, cases)
}

// TestIdleDoneAnyCase: IDLE ends with DONE in any case, the grammar's
// strings being case-insensitive (RFC 5234 section 2.3, RFC 9051 section
// 9, idle); go-imap answered "done" with BAD.
func TestIdleDoneAnyCase(t *testing.T) {
	t.Parallel()
	rc := selectedRaw(t)
	for i, done := range []string{"done", "Done", "DONE"} {
		tag := fmt.Sprintf("i%d", i)
		rc.cmd(tag + " IDLE")
		rc.until("+ ")
		rc.cmd(done)
		if got := rc.until(tag + " "); !strings.Contains(got, tag+" OK") {
			t.Errorf("IDLE ended with %q: %q, want OK", done, got)
		}
	}
	runRaw(t, rc, []rawCase{{"n1 NOOP", "n1 OK"}})
}

// TestSelectUnseen: RFC 3501 section 6.3.1 requires OK [UNSEEN n], the
// first message without \Seen, in SELECT's answer to an IMAP4rev1 client;
// it was never sent. After ENABLE IMAP4rev2 it is not (RFC 9051 dropped it).
func TestSelectUnseen(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	if got := rc.until("a2 "); !strings.Contains(got, "* OK [UNSEEN 1]") {
		t.Errorf("SELECT with no message seen: %q, want OK [UNSEEN 1]", got)
	}
	rc.cmd("a3 STORE 1:2 +FLAGS.SILENT (\\Seen)")
	rc.until("a3 ")
	rc.cmd("a4 SELECT INBOX")
	if got := rc.until("a4 "); !strings.Contains(got, "* OK [UNSEEN 3]") {
		t.Errorf("SELECT with 1 and 2 seen: %q, want OK [UNSEEN 3]", got)
	}
	rc.cmd("a5 STORE 1:* +FLAGS.SILENT (\\Seen)")
	rc.until("a5 ")
	rc.cmd("a6 SELECT INBOX")
	if got := rc.until("a6 "); strings.Contains(got, "UNSEEN") {
		t.Errorf("SELECT with every message seen: %q, want no UNSEEN", got)
	}
	rc2 := loggedInRaw(t, d.addr)
	rc2.cmd("b2 ENABLE IMAP4rev2")
	rc2.until("b2 ")
	rc2.cmd("b3 SELECT INBOX")
	rc2.until("b3 ")
	rc2.cmd("b35 STORE 1 -FLAGS.SILENT (\\Seen)")
	rc2.until("b35 ")
	rc2.cmd("b4 SELECT INBOX")
	if got := rc2.until("b4 "); strings.Contains(got, "UNSEEN") {
		t.Errorf("SELECT after ENABLE IMAP4rev2: %q, want no UNSEEN", got)
	}
}
