package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// TestForwardedHeaderRead: a forwarded message whose header holds a line
// that is no field is read as the message's own header is: its structure
// lists the forwarded multipart's parts, and BODY[n], BODY[n.MIME] and
// BINARY[n] of them are theirs, as Dovecot serves them (the library read
// the fields after that line as the message's text, and served it as part
// 2.1), in a small message and in one over 256 KiB, whose sections are
// streamed where they can be; the forwarded message itself and its header
// are its bytes, the line included.
func TestForwardedHeaderRead(t *testing.T) {
	t.Parallel()
	line := strings.Repeat("z", 76) + "\r\n"
	big := strings.Repeat(line, (300<<10)/len(line))
	header := "From: mid@example.org\r\nthis line has no colon\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n"
	inner := header + "--i1\r\nContent-Type: text/plain\r\n\r\ninner one\r\n--i1\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naW5uZXIgdHdv\r\n--i1--"
	message := func(first string) string {
		return "From: ann@example.org\r\nSubject: forward with broken header\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain\r\n\r\n" + first + "\r\n" +
			"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n--b1--\r\n"
	}
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	for _, first := range []string{"see below", big} {
		msg := message(first)
		w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))
	}
	w.ok("SELECT INBOX")
	for seq := 1; seq <= 2; seq++ {
		u := w.ok(fmt.Sprintf("FETCH %d (BODYSTRUCTURE)", seq))
		want := fmt.Sprintf(`("message" "rfc822" NIL NIL NIL "7bit" %d (NIL "inner" ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) NIL NIL NIL NIL NIL) `+
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "base64" 12 0 NIL NIL NIL NIL) "mixed" ("boundary" "i1") NIL NIL NIL) %d `, len(inner), strings.Count(inner, "\n"))
		if len(u) != 1 || !strings.Contains(u[0], want) {
			t.Errorf("message %d: %q, want it to hold %q", seq, u, want)
		}
		for _, c := range []struct{ item, want string }{
			{"BODY[2]", inner},
			{"BODY[2.HEADER]", header},
			{"BODY[2.1]", "inner one"},
			{"BODY[2.1.MIME]", "Content-Type: text/plain\r\n\r\n"},
			{"BODY[2.2]", "aW5uZXIgdHdv"},
			{"BINARY[2.2]", "inner two"},
			{"BODY[2.2]<2.3>", "5uZ"},
		} {
			peek := strings.Replace(c.item, "[", ".PEEK[", 1)
			lit := "{"
			if strings.HasPrefix(c.item, "BINARY") {
				lit = "~{"
			}
			name := c.item
			if i := strings.Index(name, "]<"); i >= 0 {
				name = name[:i+1] + "<" + strings.SplitN(name[i+2:], ".", 2)[0] + ">"
			}
			exp := fmt.Sprintf("* %d FETCH (%s %s%d}\r\n%s)\r\n", seq, name, lit, len(c.want), c.want)
			if u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, peek)); len(u) != 1 || u[0] != exp {
				t.Errorf("message %d %s: %.200q, want %.200q", seq, c.item, u, exp)
			}
		}
		exp := fmt.Sprintf("* %d FETCH (BINARY.SIZE[2.2] 9)\r\n", seq)
		if u := w.ok(fmt.Sprintf("FETCH %d (BINARY.SIZE[2.2])", seq)); len(u) != 1 || u[0] != exp {
			t.Errorf("message %d: %q, want %q", seq, u, exp)
		}
	}
}
