package imapd

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Malformed input (RFC 9051 sections 2.2, 7.1.3 and 9; RFC 7888; RFC 7889):
// BAD, and the connection goes on, before login and after.
func TestMalformedBeforeLogin(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := dialWire(t, d.addr)
	for _, c := range []struct{ send, want string }{
		{"\r\n", "* BAD"},                       // an empty line: no tag
		{"garbage\r\n", "garbage BAD"},          // a tag and nothing else
		{"+plus NOOP\r\n", "* BAD"},             // "+" cannot be in a tag
		{"a1 FROBNICATE\r\n", "a1 BAD"},         // go-imap would say BYE here
		{"a2 ID NIL\r\n", "a2 BAD"},             // ID is not supported
		{"a3 UID LIST\r\n", "a3 BAD"},           // UID takes FETCH, STORE, ...
		{"(a4) NOOP\r\n", "* BAD"},              // not a tag
		{"a5 NOOP extra\r\n", "a5 BAD"},         // NOOP takes no argument
		{"a6 FROB {5}\r\n", "a6 BAD"},           // refused before the literal is asked for
		{"a7 FROB {3+}\r\nx\r\n\r\n", "a7 BAD"}, // the literal is skipped, not read as a command
	} {
		w.send(c.send)
		if got := w.response(); !strings.HasPrefix(got, c.want+" ") {
			t.Errorf("%q: got %q, want %s", c.send, got, c.want)
		}
	}
	w.ok("NOOP")
	w.ok("CAPABILITY")
	// Logging in with literals works after all that.
	w.ok(fmt.Sprintf("LOGIN {5}\r\nalice {%d}\r\n%s", len(testPassword), testPassword))
	w.ok("SELECT INBOX")
}

// A web page cannot make a browser talk IMAP to the port: the first line of
// an HTTP request ends the connection; and a peer that does not speak IMAP
// is cut off after 10 refused lines.
func TestHTTPRequestEndsConnection(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := dialWire(t, d.addr)
	w.send("POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\na LOGIN alice guess\r\n")
	if got := w.response(); !strings.HasPrefix(got, "* BYE") {
		t.Fatalf("HTTP request: got %q, want BYE", got)
	}
	// A URL of 48 KiB or more makes the request line longer than a
	// command's: it ends the connection all the same, and the body's
	// LOGIN (with the right password here) is never read, however few the
	// header lines. Before, the line got BAD as too long, and the body was
	// read as commands once a request had fewer than 10 header lines.
	long := dialWire(t, d.addr)
	long.send("POST /" + strings.Repeat("a", 50<<10) + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n" +
		"Content-Length: 30\r\n\r\na LOGIN alice \"" + testPassword + "\"\r\n")
	if got := long.response(); !strings.HasPrefix(got, "* BYE") {
		t.Fatalf("HTTP request with a long URL: got %q, want BYE", got)
	}
	long.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(long.br); len(rest) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Errorf("after BYE to an HTTP request with a long URL: %q, %v; want the connection closed", rest, err)
	}
	w2 := dialWire(t, d.addr)
	for i := 0; i < 10; i++ {
		w2.send(fmt.Sprintf("x%d NOPE\r\n", i))
		if got := w2.response(); !strings.HasPrefix(got, fmt.Sprintf("x%d BAD", i)) {
			t.Fatalf("line %d: %q", i, got)
		}
	}
	w2.send("x10 NOPE\r\n")
	if got := w2.response(); !strings.HasPrefix(got, "x10 BAD") {
		t.Fatalf("line 10: %q", got)
	}
	if got := w2.response(); !strings.HasPrefix(got, "* BYE") {
		t.Fatalf("after 11 refused lines: %q, want BYE", got)
	}
}

func TestMalformedAfterLogin(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.deviceWith("a", Config{MaxMessageBytes: 1000})
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	u := w.ok("CAPABILITY")
	if len(u) != 1 || !strings.Contains(u[0], " APPENDLIMIT=1000") {
		t.Errorf("CAPABILITY: %q, want APPENDLIMIT=1000", u)
	}
	w.ok("SELECT INBOX")
	for _, c := range []struct{ cmd, want string }{
		{"FROBNICATE", "BAD"},
		{"FETCH 1:x (FLAGS)", "BAD [CLIENTBUG]"}, // go-imap alone: NO [SERVERBUG]
		{"FETCH 0 (FLAGS)", "BAD [CLIENTBUG]"},
		{"FETCH 1,,2 (UID)", "BAD [CLIENTBUG]"},
		{"SEARCH 1:x", "BAD [CLIENTBUG]"},
		{"FETCH 4294967296 (UID)", "BAD [CLIENTBUG]"},
		// Beyond the mailbox's 4 messages (RFC 9051 section 9,
		// seq-number: "The server should respond with a tagged BAD").
		{"FETCH 5 (FLAGS)", "BAD [CLIENTBUG]"},
		{"FETCH 2:9 (FLAGS)", "BAD [CLIENTBUG]"},
		{"STORE 7 +FLAGS (\\Seen)", "BAD [CLIENTBUG]"},
		{"COPY 5 Trash", "BAD [CLIENTBUG]"},
		{"MOVE 5:* Trash", "BAD [CLIENTBUG]"},
		// UIDs that do not exist are ignored (RFC 9051 section 6.4.9).
		{"UID FETCH 99 (FLAGS)", "OK"},
		{"UID STORE 99 +FLAGS (\\Seen)", "OK"},
		{"FETCH 4 (UID)", "OK"},
		{"FETCH 1:* (UID)", "OK"},
	} {
		_, tagged := w.run(c.cmd)
		if got := status(tagged); got != c.want && !(c.want == "BAD" && strings.HasPrefix(got, "BAD")) {
			t.Errorf("%s: got %q, want %s", c.cmd, tagged, c.want)
		}
	}
	// APPEND over APPENDLIMIT: refused at the announcement with TOOBIG,
	// before "+" (RFC 7889 section 4): run sends no byte of the message
	// unless the server asks.
	big := strings.Repeat("y", 1001)
	_, tagged := w.run(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(big), big))
	if status(tagged) != "NO [TOOBIG]" {
		t.Errorf("APPEND of 1001 bytes: %q, want NO [TOOBIG]", tagged)
	}
	// A non-synchronizing one is sent anyway: refused, its bytes dropped,
	// and none of them taken for a command.
	smuggled := "z1 LOGOUT\r\n" + strings.Repeat("z", 1001-len("z1 LOGOUT\r\n"))
	u, tagged = w.run(fmt.Sprintf("APPEND INBOX {%d+}\r\n%s", len(smuggled), smuggled))
	if status(tagged) != "NO [TOOBIG]" || len(u) != 0 {
		t.Errorf("non-synchronizing APPEND of 1001 bytes: %q %q, want NO [TOOBIG]", u, tagged)
	}
	// A syntax error before a non-synchronizing literal: the literal is
	// dropped with the command.
	u, tagged = w.run("STATUS ( {11+}\r\nz2 LOGOUT\r\n")
	if !strings.HasPrefix(status(tagged), "BAD") || len(u) != 0 {
		t.Errorf("STATUS with a syntax error before a literal: %q %q", u, tagged)
	}
	// At the limit it is taken.
	msg := "Subject: at the limit\r\n\r\n" + strings.Repeat("a", 1000-len("Subject: at the limit\r\n\r\n"))
	u = w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))
	// The message is recent for this session, the only one (RFC 3501
	// section 7.3.2).
	expectUntagged(t, "APPEND at the limit", u, "* 5 EXISTS", "* 5 RECENT")
	w.ok("FETCH 5 (UID)")
	_, tagged = w.run("FETCH 6 (UID)")
	if status(tagged) != "BAD [CLIENTBUG]" {
		t.Errorf("FETCH 6 of 5: %q", tagged)
	}
	// "*" names no message in an empty mailbox.
	w.ok("SELECT Junk")
	for _, cmd := range []string{"FETCH * (FLAGS)", "STORE * +FLAGS (\\Seen)", "FETCH 1 (FLAGS)"} {
		if _, tagged := w.run(cmd); status(tagged) != "BAD [CLIENTBUG]" {
			t.Errorf("%s in an empty mailbox: %q", cmd, tagged)
		}
	}
	w.ok("UID FETCH 1:* (FLAGS)")
	w.ok("LOGOUT")
}

// A line over the framer's limit is answered BAD under its own tag (RFC
// 9051 section 7.1.3), before login and after, and the connection goes on.
// The framer kept the end of such a line and took the tag from it: a long
// SEARCH was answered "OR BAD ...", and the client, waiting for its own tag,
// waited for ever.
func TestLongLineAnsweredUnderItsTag(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := dialWire(t, d.addr)
	w.send("pre1 NOOP " + strings.Repeat("xy ", maxLine/3+100) + "\r\n")
	if got := w.response(); !strings.HasPrefix(got, "pre1 BAD ") {
		t.Errorf("a long line before login: got %q, want pre1 BAD", got)
	}
	w.ok(`LOGIN alice "` + testPassword + `"`)
	w.ok("SELECT INBOX")
	for _, c := range []struct{ tag, line string }{
		{"long1", "SEARCH " + strings.Repeat("OR ALL ", maxLine/7+100) + "ALL"},
		{"long2", "FETCH 1 (" + strings.Repeat("FLAGS ", maxLine/6+100) + "UID)"},
		// The end of the line looks like another command.
		{"long3", "NOOP " + strings.Repeat("z", maxLine+100) + "\r\nnot3 NOOP"},
	} {
		w.send(c.tag + " " + c.line + "\r\n")
		if got := w.response(); !strings.HasPrefix(got, c.tag+" BAD ") {
			t.Errorf("%s: got %q, want %s BAD", c.tag, got, c.tag)
		}
	}
	// long3's second line is a command of its own.
	if got := w.response(); !strings.HasPrefix(got, "not3 OK") {
		t.Errorf("the line after long3: got %q, want not3 OK", got)
	}
	w.ok("NOOP")
}

// A continuation line over the limit (an AUTHENTICATE response, a line in
// IDLE's place) ends that command under its own tag, and the next line is
// a command of its own. It was answered with a tag taken from the line,
// and the next command was taken as the AUTHENTICATE response, its tag
// never answered.
func TestLongContinuationLine(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := dialWire(t, d.addr)
	w.send("a1 AUTHENTICATE PLAIN\r\n")
	if got := w.response(); !strings.HasPrefix(got, "+") {
		t.Fatalf("AUTHENTICATE PLAIN: got %q, want +", got)
	}
	w.send(strings.Repeat("QUFB", maxLine/4+100) + "\r\n")
	if got := w.response(); !strings.HasPrefix(got, "a1 BAD ") {
		t.Errorf("a long AUTHENTICATE response: got %q, want a1 BAD", got)
	}
	w.send("a2 NOOP\r\n")
	if got := w.response(); !strings.HasPrefix(got, "a2 OK") {
		t.Errorf("NOOP after it: got %q, want a2 OK", got)
	}
	w.ok(`LOGIN alice "` + testPassword + `"`)
	w.ok("SELECT INBOX")
	w.send("a3 IDLE\r\n")
	if got := w.response(); !strings.HasPrefix(got, "+") {
		t.Fatalf("IDLE: got %q, want +", got)
	}
	w.send(strings.Repeat("D", maxLine+100) + "\r\n")
	for {
		got := w.response()
		if strings.HasPrefix(got, "* ") {
			continue
		}
		if !strings.HasPrefix(got, "a3 BAD") {
			t.Errorf("a long line in IDLE: got %q, want a3 BAD", got)
		}
		break
	}
	w.ok("NOOP")
}

// Lists nested deeper than go-imap's parser takes are the client's error,
// answered BAD [CLIENTBUG], not the NO [SERVERBUG] go-imap gives for its own
// failures; the connection goes on.
func TestDeepNestingIsBad(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	for _, cmd := range []string{
		"SEARCH " + strings.Repeat("(", 1000) + "ALL" + strings.Repeat(")", 1000),
		"UID SEARCH " + strings.Repeat("(NOT ", 5000) + "ALL" + strings.Repeat(")", 5000),
		// NOT nests too, though go-imap takes it without a bound
		// (maxSearchDepth).
		"SEARCH " + strings.Repeat("NOT ", 5000) + "ALL",
	} {
		if _, tagged := w.run(cmd); status(tagged) != "BAD [CLIENTBUG]" {
			t.Errorf("%.40s... nested %d deep: got %q, want BAD [CLIENTBUG]", cmd, strings.Count(cmd, "("), tagged)
		}
	}
	// As deep as go-imap and maxSearchDepth take is searched.
	w.ok("SEARCH " + strings.Repeat("(", 999) + "ALL" + strings.Repeat(")", 999))
	w.ok("SEARCH " + strings.Repeat("NOT ", 1000) + "ALL")
	w.ok("NOOP")
}

// Before login a command of the authenticated state is refused at once
// (RFC 9051 section 3), without asking for its literal: go-imap sent "+"
// for an APPEND before login, read up to APPENDLIMIT bytes from a client
// that had not logged in, and only then answered BAD. Such lines count
// towards the refused lines that end the connection.
func TestBeforeLoginRefusedAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := dialWire(t, d.addr)
	for _, c := range []string{
		"b1 APPEND INBOX {5}",
		"b2 APPEND INBOX (\\Seen) {50000000}",
		"b3 SELECT INBOX",
		"b4 UID FETCH 1:* (FLAGS)",
		"b5 ENABLE IMAP4rev2",
		"b6 IDLE",
	} {
		w.send(c + "\r\n")
		tag := strings.Fields(c)[0]
		if got := w.response(); !strings.HasPrefix(got, tag+" BAD [CLIENTBUG] ") {
			t.Errorf("%s before login: got %q, want %s BAD [CLIENTBUG]", c, got, tag)
		}
	}
	// A non-synchronizing literal sent anyway is dropped, not taken for a
	// command.
	w.send("b7 APPEND INBOX {11+}\r\nb8 LOGOUT\r\n\r\n")
	if got := w.response(); !strings.HasPrefix(got, "b7 BAD [CLIENTBUG] ") {
		t.Errorf("non-synchronizing APPEND before login: got %q, want b7 BAD [CLIENTBUG]", got)
	}
	w.ok(`LOGIN alice "` + testPassword + `"`)
	w.ok("SELECT INBOX")
	msg := "Subject: after login\r\n\r\nhello\r\n"
	w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))

	// Ten refused, the eleventh ends the connection.
	w2 := dialWire(t, d.addr)
	for i := 0; i <= maxRejectedBeforeLogin; i++ {
		w2.send(fmt.Sprintf("s%d SELECT INBOX\r\n", i))
		if got := w2.response(); !strings.HasPrefix(got, fmt.Sprintf("s%d BAD", i)) {
			t.Fatalf("SELECT %d before login: got %q", i, got)
		}
	}
	if got := w2.response(); !strings.HasPrefix(got, "* BYE") {
		t.Errorf("after %d refused SELECTs: got %q, want BYE", maxRejectedBeforeLogin+1, got)
	}
}

// A literal over 4096 bytes in a command other than APPEND is refused NO
// [TOOBIG] before "+" (RFC 7889), before login and after, and the bytes of
// one sent unasked are dropped, none taken for a command. go-imap refused
// it where it buffers a string but then read the literal's bytes as an
// atom: the framer sent "+" for a LOGIN's 5000-byte password, and the
// bytes were tried as the password.
func TestLargeLiteralRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := dialWire(t, d.addr)
	big := strings.Repeat("a", maxBufferedLiteral+1)
	w.send("l1 LOGIN alice {5000}\r\n")
	if got := w.response(); !strings.HasPrefix(got, "l1 NO [TOOBIG]") {
		t.Errorf("LOGIN with a password of 5000 bytes: got %q, want l1 NO [TOOBIG] before +", got)
	}
	smuggled := "z1 LOGOUT\r\n" + big[len("z1 LOGOUT\r\n"):]
	w.send(fmt.Sprintf("l2 LOGIN {%d+}\r\n%s \"x\"\r\n", len(smuggled), smuggled))
	if got := w.response(); !strings.HasPrefix(got, "l2 NO [TOOBIG]") {
		t.Errorf("LOGIN with a non-synchronizing literal of %d bytes: got %q, want l2 NO [TOOBIG]", len(smuggled), got)
	}
	w.ok(`LOGIN alice "` + testPassword + `"`)
	w.ok("SELECT INBOX")
	for _, cmd := range []string{
		"SELECT {5000}",
		"CREATE {4097}",
		"SEARCH TEXT {1000000}",
		fmt.Sprintf("SEARCH TEXT {5} SUBJECT {%d}", maxBufferedLiteral+1), // the second literal
	} {
		u, tagged := w.run(strings.Replace(cmd, "{5}", "{5}\r\nhello", 1))
		if status(tagged) != "NO [TOOBIG]" || len(u) != 0 {
			t.Errorf("%s: got %q %q, want NO [TOOBIG] before +", cmd, u, tagged)
		}
	}
	u, tagged := w.run(fmt.Sprintf("SEARCH TEXT {%d+}\r\n%s", len(smuggled), smuggled))
	if status(tagged) != "NO [TOOBIG]" || len(u) != 0 {
		t.Errorf("SEARCH with a non-synchronizing literal of %d bytes: got %q %q, want NO [TOOBIG]", len(smuggled), u, tagged)
	}
	// At the limit it is taken.
	at := strings.Repeat("b", maxBufferedLiteral)
	w.ok(fmt.Sprintf("SEARCH TEXT {%d}\r\n%s", len(at), at))
	w.ok("NOOP")
}

// An AUTHENTICATE PLAIN response that is not base64, or whose message is
// not [authzid] NUL authcid NUL passwd (RFC 4616 section 2), is the
// client's error: BAD (RFC 9051 section 6.2.2), and the connection goes
// on. go-imap answered "NO [SERVERBUG] Internal server error" to each,
// before login, as for a failure of the server's own.
func TestAuthenticateMalformedResponse(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := dialWire(t, d.addr)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, c := range []struct{ name, initial, cont string }{
		{"initial response not base64", "!!!!", ""},
		{"initial response base64 without padding", "QUE", ""},
		{"initial response of no NUL", b64("alice " + testPassword), ""},
		{"initial response of one NUL", b64("\x00alice"), ""},
		{"initial response empty", "=", ""},
		{"initial response of three NULs", b64("\x00alice\x00" + testPassword + "\x00"), ""},
		// The initial response is the rest of the line (RFC 4959 section
		// 3): go-imap answered these NO [SERVERBUG].
		{"initial response followed by a word", b64("\x00alice\x00x") + " extra", ""},
		{"empty initial response followed by a word", "= extra", ""},
		{"initial response and a space", b64("\x00alice\x00x") + " ", ""},
		{"initial response quoted", `"` + b64("\x00alice\x00x") + `"`, ""},
		{"initial response as a literal", "{4}", ""},
		{"response of no NUL", "", b64("alice")},
		{"response empty", "", "="},
		{"response of three NULs", "", b64("a\x00b\x00c\x00d")},
	} {
		if c.initial != "" {
			w.send("m1 AUTHENTICATE PLAIN " + c.initial + "\r\n")
		} else {
			w.send("m1 AUTHENTICATE PLAIN\r\n")
			if got := w.response(); !strings.HasPrefix(got, "+") {
				t.Fatalf("%s: AUTHENTICATE PLAIN: got %q, want +", c.name, got)
			}
			w.send(c.cont + "\r\n")
		}
		if got := w.response(); !strings.HasPrefix(got, "m1 BAD ") {
			t.Errorf("%s: got %q, want m1 BAD", c.name, got)
		}
		w.send("n1 NOOP\r\n")
		if got := w.response(); !strings.HasPrefix(got, "n1 OK") {
			t.Fatalf("%s: NOOP after it: got %q, want n1 OK", c.name, got)
		}
	}
	// Well-formed ones are answered as before: another authorization
	// identity NO, a wrong password NO [AUTHENTICATIONFAILED], the right
	// one OK.
	w.send("a1 AUTHENTICATE PLAIN " + b64("bob\x00alice\x00"+testPassword) + "\r\n")
	if got := w.response(); !strings.HasPrefix(got, "a1 NO ") {
		t.Errorf("another authorization identity: got %q, want a1 NO", got)
	}
	w.send("a2 AUTHENTICATE PLAIN " + b64("\x00alice\x00guess") + "\r\n")
	if got := w.response(); !strings.HasPrefix(got, "a2 NO [AUTHENTICATIONFAILED]") {
		t.Errorf("a wrong password: got %q, want a2 NO [AUTHENTICATIONFAILED]", got)
	}
	w.send("a3 AUTHENTICATE PLAIN\r\n")
	if got := w.response(); !strings.HasPrefix(got, "+") {
		t.Fatalf("AUTHENTICATE PLAIN: got %q, want +", got)
	}
	w.send(b64("alice\x00alice\x00"+testPassword) + "\r\n")
	if got := w.response(); !strings.HasPrefix(got, "a3 OK") {
		t.Fatalf("the right password: got %q, want a3 OK", got)
	}
	w.ok("SELECT INBOX")
	// After login too: BAD, not a server failure.
	w.send("m2 AUTHENTICATE PLAIN !!!!\r\n")
	if got := w.response(); !strings.HasPrefix(got, "m2 BAD ") {
		t.Errorf("AUTHENTICATE after login, not base64: got %q, want m2 BAD", got)
	}
	w.ok("NOOP")
}
