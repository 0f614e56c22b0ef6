package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// TestPartHeaderAsItIs: BODY[n.MIME] of a multipart's part whose header
// ends without a blank line (the line break before the next delimiter is
// the delimiter's, RFC 2046 section 5.1.1) is the message's bytes, as
// Dovecot serves it: at the top, in a forwarded message and in a nested
// multipart, in a small message and in one over 256 KiB, whose sections
// are streamed. The library wrote such a header with a blank line the
// message does not have. A header with its blank line keeps it.
func TestPartHeaderAsItIs(t *testing.T) {
	t.Parallel()
	line := strings.Repeat("x", 76) + "\r\n"
	big := strings.Repeat(line, (300<<10)/len(line))
	message := func(first string) string {
		return "From: ann@example.org\r\nSubject: bare part headers\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain\r\n\r\n" + first + "\r\n" +
			"--b1\r\nContent-Type: message/rfc822\r\n\r\n" +
			"Subject: inner\r\nContent-Type: multipart/mixed; boundary=b2\r\n\r\n" +
			"--b2\r\nContent-Type: text/plain\r\nContent-Description: fields alone\r\n\r\n--b2--\r\n" +
			"--b1\r\nContent-Type: multipart/alternative;\r\n boundary=b3\r\n\r\n" +
			"--b3\r\nContent-Type: text/plain\r\n\r\n\r\n" +
			"--b3  \r\nContent-Type: text/html\r\n\r\n--b3--\r\n" +
			"--b1\r\nContent-Type: message/rfc822\r\n\r\n--b1--\r\n"
	}
	want := map[string]string{
		"2.1": "Content-Type: text/plain\r\nContent-Description: fields alone\r\n",
		"3.1": "Content-Type: text/plain\r\n\r\n", // its blank line is its own
		"3.2": "Content-Type: text/html\r\n",
		"4":   "Content-Type: message/rfc822\r\n",
	}
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	sizes := []string{"small", "large"}
	for _, first := range []string{"one", big} {
		msg := message(first)
		w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))
	}
	w.ok("SELECT INBOX")
	for i, size := range sizes {
		for _, part := range []string{"2.1", "3.1", "3.2", "4"} {
			cmd := fmt.Sprintf("FETCH %d (BODY.PEEK[%s.MIME])", i+1, part)
			exp := fmt.Sprintf("* %d FETCH (BODY[%s.MIME] {%d}\r\n%s)\r\n", i+1, part, len(want[part]), want[part])
			if u := w.ok(cmd); len(u) != 1 || u[0] != exp {
				t.Errorf("%s message, %s:\n got  %q\n want %q", size, cmd, u, exp)
			}
			cmd = fmt.Sprintf("FETCH %d (BODY.PEEK[%s])", i+1, part)
			exp = fmt.Sprintf("* %d FETCH (BODY[%s] {0}\r\n)\r\n", i+1, part)
			if u := w.ok(cmd); len(u) != 1 || u[0] != exp {
				t.Errorf("%s message, %s:\n got  %q\n want %q", size, cmd, u, exp)
			}
		}
	}
}

// TestPartOfFieldsAloneRead: a multipart's parts of fields alone (a
// header ending at the next delimiter line, RFC 2046 section 5.1.1), at
// the top and in a forwarded message, are listed by the structure as
// parts of no body, their headers served as the message holds them, and
// the parts after them found; the forwarded message, read from the
// message mended for the library, is served and counted as its own
// bytes, in a small message and in one over 256 KiB.
func TestPartOfFieldsAloneRead(t *testing.T) {
	t.Parallel()
	line := strings.Repeat("y", 76) + "\r\n"
	big := strings.Repeat(line, (300<<10)/len(line))
	inner := "Subject: in\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n" +
		"--i1\r\nContent-Type: text/plain\r\n--i1\r\nContent-Type: text/plain\r\n\r\nin\r\n--i1--"
	message := func(last string) string {
		return "From: ann@example.org\r\nSubject: fields alone\r\nMIME-Version: 1.0\r\n" +
			"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain\r\n" +
			"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n" +
			"--b1\r\nContent-Type: text/plain\r\n\r\n" + last + "\r\n--b1--\r\n"
	}
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	lasts := []string{"three", big}
	for _, last := range lasts {
		msg := message(last)
		w.ok(fmt.Sprintf("APPEND INBOX {%d}\r\n%s", len(msg), msg))
	}
	w.ok("SELECT INBOX")
	for i, last := range lasts {
		seq := i + 1
		u := w.ok(fmt.Sprintf("FETCH %d (BODYSTRUCTURE)", seq))
		want := fmt.Sprintf(`BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)("message" "rfc822" NIL NIL NIL "7bit" %d `, len(inner))
		if len(u) != 1 || !strings.Contains(u[0], want) || !strings.Contains(u[0], fmt.Sprintf(`"7bit" %d %d NIL NIL NIL NIL) "mixed" ("boundary" "b1")`, len(last), strings.Count(last, "\n"))) {
			t.Errorf("message %d: %q, want it to hold %q and part 3", seq, u, want)
		}
		for _, c := range []struct{ item, want string }{
			{"BODY[1]", ""},
			{"BODY[1.MIME]", "Content-Type: text/plain"},
			{"BODY[2]", inner},
			{"BINARY[2]", inner},
			{"BODY[2.1]", ""},
			{"BODY[2.1.MIME]", "Content-Type: text/plain"},
			{"BODY[2.2]", "in"},
			{"BODY[3]", last},
		} {
			peek := strings.Replace(c.item, "[", ".PEEK[", 1)
			lit := "{"
			if strings.HasPrefix(c.item, "BINARY") {
				lit = "~{"
			}
			exp := fmt.Sprintf("* %d FETCH (%s %s%d}\r\n%s)\r\n", seq, c.item, lit, len(c.want), c.want)
			if u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, peek)); len(u) != 1 || u[0] != exp {
				t.Errorf("message %d %s: %.200q, want %.200q", seq, c.item, u, exp)
			}
		}
		exp := fmt.Sprintf("* %d FETCH (BINARY.SIZE[2] %d)\r\n", seq, len(inner))
		if u := w.ok(fmt.Sprintf("FETCH %d (BINARY.SIZE[2])", seq)); len(u) != 1 || u[0] != exp {
			t.Errorf("message %d: %q, want %q", seq, u, exp)
		}
	}
}
