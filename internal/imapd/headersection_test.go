package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// TestMessageHeaderAsItIs: BODY[n.HEADER], BODY[n.TEXT] and BODY[n.MIME]
// of a message's header are its bytes, as BODY[HEADER] is and as Dovecot
// serves them (testdata/oddparts, nested-broken-header, nested-no-body,
// no-blank-line): a line that is no field stays in the header, and a
// header with no blank line after it gets none. The library dropped the
// line, took the fields after it for text, and made up a blank line. A
// message over 256 KiB, whose sections are streamed, is served the same.
func TestMessageHeaderAsItIs(t *testing.T) {
	t.Parallel()
	inner := "From: mid@example.org\r\nthis line has no colon\r\nSubject: inner\r\n\r\n"
	r := newRig(t)
	d := r.device("a")
	texts := []string{"inner text\r\n", strings.Repeat(strings.Repeat("z", 76)+"\r\n", (300<<10)/78)}
	for _, text := range texts {
		msg := "From: ann@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + text +
			"--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@example.org\r\nSubject: no body\r\n--b1--\r\n"
		r.Deliver([]byte(msg))
	}
	top := "From: ann@example.org\r\nSubject: top, no blank line\r\nthis is no field\r\n"
	pos := r.Deliver([]byte(top))
	d.synced(pos)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	lit := func(s string) string { return fmt.Sprintf("{%d}\r\n%s", len(s), s) }
	for i, text := range texts {
		seq := i + 1
		// The line break before a delimiter is the delimiter's.
		text = strings.TrimSuffix(text, "\r\n")
		for _, c := range []struct{ item, want string }{
			{"BODY[2.HEADER]", lit(inner)},
			{"BODY[2.TEXT]", lit(text)},
			{"BODY[2.TEXT]<3>", lit(text[3:][:min(10, len(text)-3)])},
			{"BODY[2.1.MIME]", lit(inner)},
			{"BODY[3.HEADER]", lit("From: x@example.org\r\nSubject: no body")},
			{"BODY[3.TEXT]", lit("")},
			{"BODY[3.1.MIME]", lit("From: x@example.org\r\nSubject: no body")},
			{"BODY[2.MIME]", lit("Content-Type: message/rfc822\r\n\r\n")},
			{`BODY[2.HEADER.FIELDS ("SUBJECT")]`, lit("Subject: inner\r\n\r\n")},
			{`BODY[3.HEADER.FIELDS ("SUBJECT")]`, lit("Subject: no body\r\n\r\n")},
		} {
			cmd := strings.Replace(c.item, "[", ".PEEK[", 1)
			if strings.HasSuffix(cmd, "<3>") {
				cmd = strings.TrimSuffix(cmd, "<3>") + "<3.10>"
			}
			want := fmt.Sprintf("* %d FETCH (%s %s)\r\n", seq, c.item, c.want)
			if u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, cmd)); len(u) != 1 || u[0] != want {
				t.Errorf("message %d (%d bytes of text), %s:\n got  %.300q\n want %.300q", seq, len(text), cmd, u, want)
			}
		}
	}
	want := fmt.Sprintf("* 3 FETCH (BODY[1.MIME] %s)\r\n", lit(top))
	if u := w.ok("FETCH 3 (BODY.PEEK[1.MIME])"); len(u) != 1 || u[0] != want {
		t.Errorf("BODY[1.MIME] of a message without a blank line:\n got  %q\n want %q", u, want)
	}
	w.ok("LOGOUT")
}
