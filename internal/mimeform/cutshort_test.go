package mimeform

import (
	"strings"
	"testing"
)

// TestCutShortLastLineBreak: the last part of a multipart cut short keeps
// its last line break (no delimiter follows it to own it), and a
// message/rfc822 part around a multipart cut short counts its own bytes,
// not the closing delimiters the structure is read with.
func TestCutShortLastLineBreak(t *testing.T) {
	head := "Subject: cut\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
	for _, c := range []struct {
		name, body, want string
	}{
		{"line", "--b1\r\nContent-Type: text/plain\r\n\r\ntwo\r\nthree\r\n",
			`"7bit" 12 2 NIL NIL NIL NIL) "mixed"`},
		{"in a line", "--b1\r\nContent-Type: text/plain\r\n\r\ntwo\r\nthr",
			`"7bit" 8 1 NIL NIL NIL NIL) "mixed"`},
		{"lf", "--b1\nContent-Type: text/plain\n\ntwo\nthree\n",
			`"7bit" 10 2 NIL NIL NIL NIL) "mixed"`},
		{"forwarded", "--b1\r\nContent-Type: message/rfc822\r\n\r\n" +
			"Subject: in\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n--i1\r\n\r\nin\r\n",
			`"7bit" 71 (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1 NIL NIL NIL NIL) "mixed" ("boundary" "i1") NIL NIL NIL) 6 NIL NIL NIL NIL) "mixed"`},
	} {
		_, _, form, err := ParseForms([]byte(head + c.body))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(form), c.want) {
			t.Errorf("%s: structure %s, want it to hold %s", c.name, form, c.want)
		}
	}

	// Sections: the mended message ends in the closing delimiters, each
	// after a line break of its own; a part that ends with the inner
	// multipart is given back without them.
	msg := head + "--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n\r\nin\r\n"
	m, added := MendedCut([]byte(msg))
	if want := msg + "\r\n--b2--\r\n--b1--\r\n"; string(m) != want {
		t.Errorf("MendedCut:\n got  %q\n want %q", m, want)
	}
	if got := string(Unmend([]byte("--b2\r\n\r\nin\r\n\r\n--b2--"), added)); got != "--b2\r\n\r\nin\r\n" {
		t.Errorf("Unmend: %q", got)
	}
	if m, added := MendedCut([]byte(msg + "--b2--\r\n--b1--\r\n")); added != nil || string(m) != msg+"--b2--\r\n--b1--\r\n" {
		t.Errorf("a message closed was mended: %q %q", m, added)
	}
}
