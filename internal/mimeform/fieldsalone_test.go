package mimeform

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// TestPartOfFieldsAlone: a multipart's part whose header ends at the next
// delimiter line, with no blank line (RFC 2046 section 5.1.1's body-part
// of MIME-part-headers alone), is a part of no body, last or not, in CRLF
// or LF, nested in a forwarded message, whose size is its own bytes;
// the parts after it are found. A part with a line that is no field, or
// with no line at all, still makes the structure one text part.
func TestPartOfFieldsAlone(t *testing.T) {
	head := "Subject: fields alone\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
	text := `("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" `
	inner := "Subject: in\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n" +
		"--i1\r\nContent-Type: text/plain\r\n--i1\r\nContent-Type: text/plain\r\n\r\nin\r\n--i1--"
	for _, c := range []struct {
		name, body string
		status     Status
		want       string
	}{
		{"last", "--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\nContent-Type: text/plain\r\nContent-Description: fields alone\r\n--b1--\r\n", Parsed,
			`(` + text + `3 0 NIL NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL "fields alone" "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"first", "--b1\r\nContent-Type: text/plain\r\n--b1\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b1--\r\n", Parsed,
			`(` + text + `0 0 NIL NIL NIL NIL)` + text + `3 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"lf", "--b1\nContent-Type: text/plain\n--b1\nContent-Type: text/plain\n\ntwo\n--b1--\n", Parsed,
			`(` + text + `0 0 NIL NIL NIL NIL)` + text + `3 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"padded and unclosed", "--b1 \r\nContent-Type: text/plain\r\n--b1\t\r\nContent-Type: text/plain\r\n\r\ntwo", Parsed,
			`(` + text + `0 0 NIL NIL NIL NIL)` + text + `3 0 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"forwarded", "--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n--b1--\r\n", Parsed,
			`(("message" "rfc822" NIL NIL NIL "7bit" ` + strconv.Itoa(len(inner)) + ` (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL) (` +
				text + `0 0 NIL NIL NIL NIL)` + text + `2 0 NIL NIL NIL NIL) "mixed" ("boundary" "i1") NIL NIL NIL) 9 NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"a line no field", "--b1\r\nContent-Type: text/plain\r\nno field\r\n--b1--\r\n", Simplified, ""},
		{"no line", "--b1\r\n--b1\r\nContent-Type: text/plain\r\n\r\ntwo\r\n--b1--\r\n", Simplified, ""},
	} {
		p, _, form, err := ParseForms([]byte(head + c.body))
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != c.status {
			t.Errorf("%s: status %d, want %d", c.name, p.Status, c.status)
		}
		if c.want != "" && string(form) != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, form, c.want)
		}
	}
}

// TestMendingOwn: the library finds the parts after a part of fields
// alone in Mend's bytes, which hold a line break before the delimiter
// line that ends its header; a forwarded message read from them, whose
// multipart holds such a part too, is given back by Own as the message
// holds it, and a part of the message untouched as it is.
func TestMendingOwn(t *testing.T) {
	inner := "Subject: in\r\nContent-Type: multipart/mixed; boundary=i1\r\n\r\n" +
		"--i1\r\nContent-Type: text/plain\r\n--i1\r\nContent-Type: text/plain\r\n\r\nin\r\n--i1--"
	msg := "Subject: fields alone\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n" +
		"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nthree\r\n--b1--\r\n"
	mm := Mend([]byte(msg))
	if mm.Cut() || len(mm.blanks) != 2 || len(mm.Bytes) != len(msg)+4 {
		t.Fatalf("Mend: %q, %d line breaks added, want 2", mm.Bytes, len(mm.blanks))
	}
	for _, c := range []struct {
		part []int
		want string
	}{{[]int{1}, ""}, {[]int{2}, inner}, {[]int{2, 1}, ""}, {[]int{2, 2}, "in"}, {[]int{3}, "three"}} {
		sec := &imap.FetchItemBodySection{Part: c.part}
		if got := imapserver.ExtractBodySection(bytes.NewReader([]byte(msg)), sec); len(c.part) == 1 && c.part[0] > 1 && got != nil {
			t.Errorf("BODY%v found in the message as it is: the library reads past a part of fields alone now", c.part)
		}
		got := mm.Own(imapserver.ExtractBodySection(bytes.NewReader(mm.Bytes), sec))
		if string(got) != c.want {
			t.Errorf("BODY%v: %q, want %q", c.part, got, c.want)
		}
	}
	if !strings.Contains(string(mm.Bytes), "Content-Type: text/plain\r\n\r\n--b1\r\n") {
		t.Errorf("Mend did not add the blank line: %q", mm.Bytes)
	}
}
