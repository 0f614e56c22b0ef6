package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// A command the framer refuses as too long is refused whole: the bytes of
// a non-synchronizing literal announced at the end of its long line are
// the command's data, never a command of their own, and a command whose
// lines add up to more than go-imap reads is answered BAD under its own
// tag, not cut in two. Each case below smuggles "DELETE" of a mailbox in
// the data of such a command; before, every one of them deleted it.
func TestLongCommandSmugglesNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := dialWire(t, d.addr)
	// A long tag and an AUTHENTICATE response, each under the limit:
	// go-imap answered NO [SERVERBUG] and ended the connection.
	tag := strings.Repeat("a", maxLine-100)
	w.send(tag + " AUTHENTICATE PLAIN\r\n")
	if got := w.response(); !strings.HasPrefix(got, "+") {
		t.Fatalf("AUTHENTICATE PLAIN under a long tag: got %.40q, want +", got)
	}
	w.send(strings.Repeat("QUFB", 2000) + "\r\n")
	if got := w.response(); !strings.HasPrefix(got, tag+" BAD ") {
		t.Errorf("an AUTHENTICATE response after a long tag: got %.40q...%q, want BAD under the tag", got, got[min(len(got), len(tag)):])
	}
	w.ok(`LOGIN alice "` + testPassword + `"`)
	w.ok("SELECT INBOX")
	long := strings.Repeat("x", maxLine+100)
	pad := strings.Repeat(" ALL", maxLine/6) // two thirds of a line: two make more than go-imap's 50 KiB
	smuggle := func(tag, victim string) string {
		inj := tag + " DELETE " + victim + "\r\n"
		return fmt.Sprintf("{%d+}\r\n%s", len(inj), inj)
	}
	cases := []struct{ name, cmd string }{
		// A long first line: answered BAD by the framer, and its
		// literal was read as the next command.
		{"first line", "SEARCH" + pad + pad + " TEXT " + smuggle("s1", "v1")},
		// A long line after a literal: go-imap was handed its end of
		// line and carried out the command as far as the literal.
		{"line after a literal", "DELETE {2}\r\nv2 " + long},
		{"line after a literal, with a literal", "SEARCH TEXT {1}\r\na " + long + " TEXT " + smuggle("s3", "v3")},
		// Lines each under the framer's limit but over go-imap's 50 KiB
		// together: go-imap answered NO [SERVERBUG] and read the rest of
		// the line as a command ("ALL BAD Unknown command").
		{"lines over 50 KiB", "SEARCH TEXT {1}\r\na" + pad + " TEXT {1}\r\nb" + pad + " TEXT " + smuggle("s4", "v4")},
		{"lines over 50 KiB, no literal after", "SEARCH TEXT {1}\r\na" + pad + " TEXT {1}\r\nb" + pad},
		// An APPEND whose message is followed by a long line.
		{"after an APPEND's message", "APPEND INBOX {5+}\r\nhello " + long + " " + smuggle("s6", "v6")},
		// A command refused at its first line: the rest is dropped.
		{"refused command", "FROB {3+}\r\nabc " + long + " " + smuggle("s7", "v7")},
	}
	for i := range cases {
		w.ok(fmt.Sprintf("CREATE v%d", i+1))
	}
	for _, c := range cases {
		u, tagged := w.run(c.cmd)
		if !strings.HasPrefix(status(tagged), "BAD") || len(u) != 0 {
			t.Errorf("%s: got %q %q, want BAD under the command's tag and nothing else", c.name, u, tagged)
		}
		// The next command is answered, alone.
		u, tagged = w.run("NOOP")
		if status(tagged) != "OK" || len(u) != 0 {
			t.Errorf("%s: NOOP after it: got %q %q, want OK alone", c.name, u, tagged)
		}
	}
	u := w.ok(`LIST "" v*`)
	if len(u) != len(cases) {
		t.Errorf("LIST after the long commands: %q, want all of v1 to v%d", u, len(cases))
	}
	// A long line ending with a synchronizing literal: the client is never
	// asked for it.
	w.send("y1 NOOP " + long + " {5}\r\n")
	if got := w.response(); !strings.HasPrefix(got, "y1 BAD ") {
		t.Errorf("a long line announcing a synchronizing literal: got %q, want y1 BAD", got)
	}
	w.ok("NOOP")
	// Under the limits, the same commands are carried out.
	w.ok("SEARCH TEXT {1}\r\na" + pad + " TEXT {1}\r\nb")
	w.ok("DELETE {2}\r\nv2")
}

// A quoted string left open at the end of a line is refused with its
// command: go-imap read it on across lines, so the client's next commands
// became the string (never answered), and the data of a literal the line
// announced, which the framer passes unread, was parsed as commands: the
// CREATE below, sent as a literal, created its mailbox.
func TestOpenQuoteSmugglesNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := dialWire(t, d.addr)
	// Before login too: the line is refused, the next command answered.
	w.send("q0 LOGIN \"alice\r\n")
	if got := w.response(); !strings.HasPrefix(got, "q0 BAD [CLIENTBUG] a quoted string does not end on its line") {
		t.Errorf("LOGIN with an open quote: got %q, want q0 BAD [CLIENTBUG]", got)
	}
	w.ok(`LOGIN alice "` + testPassword + `"`)
	inj := "\"\r\nz1 CREATE Smuggled\r\n"
	cases := []struct{ name, cmd string }{
		{"first line", `SELECT "INBOX`},
		{"escaped quote", `SELECT "INBOX\"`},
		{"escaped CR", "SELECT \"INBOX\\"},
		{"synchronizing literal after it", fmt.Sprintf(`SELECT "x {%d}`+"\r\n%s", len(inj), inj)},
		{"non-synchronizing literal after it", fmt.Sprintf(`SELECT "x {%d+}`+"\r\n%s", len(inj), inj)},
		{"line after a literal", "SEARCH TEXT {1}\r\na SUBJECT \"b"},
		{"line after a literal, literal after it", fmt.Sprintf("SEARCH TEXT {1}\r\na SUBJECT \"b {%d+}\r\n%s", len(inj), inj)},
	}
	for _, c := range cases {
		u, tagged := w.run(c.cmd)
		if !strings.HasPrefix(tagged, fmt.Sprintf("t%d BAD [CLIENTBUG] a quoted string does not end on its line", w.n)) || len(u) != 0 {
			t.Errorf("%s: got %q %q, want BAD [CLIENTBUG] under the command's tag and nothing else", c.name, u, tagged)
		}
		// The next command is answered, alone.
		u, tagged = w.run("NOOP")
		if status(tagged) != "OK" || len(u) != 0 {
			t.Errorf("%s: NOOP after it: got %q %q, want OK alone", c.name, u, tagged)
		}
	}
	if u := w.ok(`LIST "" Smuggled`); len(u) != 0 {
		t.Errorf("LIST after the open quotes: %q, want no mailbox Smuggled", u)
	}
	// Closed on its line, the same strings are taken.
	w.ok(`SELECT "INBOX"`)
	w.ok("SEARCH TEXT {1}\r\na SUBJECT \"b\\\"{5}\"")
}

// A literal announced with a space before the line's end, `{N+} ` CRLF,
// is one for the framer as it is for go-imap, whose parser takes the
// space there: the framer took the line for one without a literal, and
// the client's next line for a command of its own, while go-imap read
// that line as the literal's data and went on into the data of that
// line's own literal, which the framer passes unread; the two out of
// step, the CREATE below got NO [SERVERBUG] and the connection ended.
// Now the SEARCH after it is the framer's to check, and refused.
func TestLiteralBeforeSpaceSmugglesNothing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	deep := "\r\nz1 SEARCH " + strings.Repeat("NOT ", 1001) + "ALL\r\n"
	data := fmt.Sprintf("t2 SEARCH TEXT {%d+}\r\n", len(deep))
	w.send(fmt.Sprintf("a1 CREATE {%d+} \r\n", len(data)) + data + deep)
	if got := w.response(); !strings.HasPrefix(got, "a1 NO ") {
		t.Errorf("CREATE of a name holding CRLF: got %q, want a1 NO", got)
	}
	if got := w.response(); !strings.HasPrefix(got, "z1 BAD [CLIENTBUG] search keys nested more than 1000 deep") {
		t.Errorf("the SEARCH after it: got %.80q, want z1 BAD [CLIENTBUG] search keys nested ...", got)
	}
	if u, tagged := w.run("NOOP"); status(tagged) != "OK" || len(u) != 0 {
		t.Errorf("NOOP after them: got %q %q, want OK alone", u, tagged)
	}
	// A synchronizing literal so announced: "+", and the name is taken.
	w.send("s1 EXAMINE {5} \r\n")
	if got := w.response(); !strings.HasPrefix(got, "+") {
		t.Fatalf("EXAMINE {5} with a space before CRLF: got %q, want +", got)
	}
	w.send("INBOX\r\n")
	for {
		got := w.response()
		if strings.HasPrefix(got, "s1 ") {
			if !strings.HasPrefix(got, "s1 OK [READ-ONLY]") {
				t.Errorf("EXAMINE {5} INBOX: got %q, want OK [READ-ONLY]", got)
			}
			break
		}
	}
}
