package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// fetchItem returns the bytes of the value of item name in the FETCH
// response resp, as written, or "" when it has none.
func fetchItem(resp, name string) string {
	_, s, ok := strings.Cut(resp, " FETCH (")
	for ok && s != "" && s[0] != ')' {
		v, rest, err := parseSexp(s)
		if err != nil {
			return ""
		}
		if !v.isList && v.atom == name {
			s = strings.TrimLeft(rest, " ")
			if _, rest, err = parseSexp(s); err != nil {
				return ""
			}
			return s[:len(s)-len(rest)]
		}
		s = strings.TrimLeft(rest, " ")
	}
	return ""
}

// TestStructureMD5OnEveryPath: a part's Content-MD5 is in BODYSTRUCTURE
// whichever way the response is written: by appendFetch (BODYSTRUCTURE
// alone), by the library (with a section, with ENVELOPE or BODY beside
// it, the section's origin beyond 32 bits), and streamed (a message over
// 256 KiB, a structure with no stored form: an 8-bit filename, and an
// MD5 in a message/rfc822 part). It was NIL when the library wrote the
// response.
func TestStructureMD5OnEveryPath(t *testing.T) {
	t.Parallel()
	big := strings.Repeat(strings.Repeat("y", 76)+"\r\n", (300<<10)/78)
	msgs := []struct{ msg, md5 string }{
		{"From: a@example.org\r\nSubject: md5\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n" +
			"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\nbody\r\n", `"Q2hlY2sgSW50ZWdyaXR5IQ=="`},
		{"From: a@example.org\r\nSubject: \"quoted\" BODYSTRUCTURE (\"text\"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n" +
			"--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\nContent-Type: text/plain\r\nContent-MD5: dHdv\r\n\r\n" + big + "--b1--\r\n", `"dHdv"`},
		{"From: a@example.org\r\nSubject: 8-bit\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b2\r\n\r\n" +
			"--b2\r\nContent-Type: text/plain; name=\"gr\xc3\xbc\xc3\x9fe.txt\"\r\nContent-MD5: Z3LDvA==\r\n\r\nx\r\n--b2\r\nContent-Type: message/rfc822\r\n\r\n" +
			"Subject: in\r\nContent-Type: text/plain\r\nContent-MD5: aW4=\r\n\r\ny\r\n--b2--\r\n", `"aW4="`},
	}
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for _, m := range msgs {
		pos = r.Deliver([]byte(m.msg))
	}
	d.synced(pos)
	w := loginWire(t, d.addr)
	w.ok("ENABLE IMAP4rev2") // a partial's origin beyond 32 bits
	w.ok("SELECT INBOX")
	for i, m := range msgs {
		seq := i + 1
		want := ""
		for _, items := range []string{"BODYSTRUCTURE", "BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (X-NONE)]",
			"ENVELOPE BODYSTRUCTURE BODY.PEEK[1]", "BODY BODYSTRUCTURE", "BODYSTRUCTURE BINARY.PEEK[1]<0.2>",
			"BODYSTRUCTURE BODY.PEEK[1]<4294967296.10>", "BODYSTRUCTURE BODY.PEEK[]", "UID FLAGS BODYSTRUCTURE BODY.PEEK[TEXT]<0.10>"} {
			u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, items))
			if len(u) != 1 {
				t.Fatalf("message %d, %s: %d responses", seq, items, len(u))
			}
			got := fetchItem(u[0], "BODYSTRUCTURE")
			if got == "" {
				t.Fatalf("message %d, %s: no BODYSTRUCTURE in %.300q", seq, items, u[0])
			}
			if !strings.Contains(got, m.md5) {
				t.Errorf("message %d, %s: the part's MD5 %s is not in %s", seq, items, m.md5, got)
			}
			if want == "" {
				want = got
			} else if got != want {
				t.Errorf("message %d, %s:\n got  %s\n want %s (BODYSTRUCTURE alone)", seq, items, got, want)
			}
			if !strings.HasSuffix(u[0], ")\r\n") {
				t.Errorf("message %d, %s: not one whole response: %.300q", seq, items, u[0])
			}
		}
	}
	w.ok("LOGOUT")
}
