package mimeform

import (
	"fmt"
	"strings"
	"testing"
)

// TestMultipartWithoutSubtype: a Content-Type of "multipart" with no
// subtype, or "multipart/" and none, names no multipart (noSubtype): the part is one part of its
// bytes, typed "" "" with no parameter ("application" "octet-stream" for
// the word alone), as Dovecot shows it and as the
// library's sections read it, at the top, inside a multipart and inside
// a forwarded message. It was a multipart to the structure, whose parts
// no section served. Nested as deep as the message allows, it is one
// part still, its walk one level deep; "multipart/mixed" nested so is
// Simplified.
func TestMultipartWithoutSubtype(t *testing.T) {
	nested := func(typ string, n int) []byte {
		var b strings.Builder
		b.WriteString("Subject: deep\r\n")
		for i := range n {
			fmt.Fprintf(&b, "Content-Type: %s; boundary=b%d\r\n\r\n--b%d\r\n", typ, i, i)
		}
		b.WriteString("Content-Type: text/plain\r\n\r\nx\r\n")
		for i := n - 1; i >= 0; i-- {
			fmt.Fprintf(&b, "--b%d--\r\n", i)
		}
		return []byte(b.String())
	}
	deep := nested("multipart", MaxPartDepth+4)
	deepBody := len(deep) - int(headerLength(deep))
	for _, c := range []struct {
		name      string
		msg       []byte
		status    Status
		structure string
	}{
		{"multipart/mixed nested", nested("multipart/mixed", MaxPartDepth+4), Simplified, ""},
		{"multipart nested", deep, Parsed,
			fmt.Sprintf(`("" "" NIL NIL NIL "7bit" %d NIL NIL NIL NIL)`, deepBody)},
		{"top", []byte("Subject: s\r\nContent-Type: MultiPart; boundary=b1\r\n\r\n--b1\r\n" +
			"Content-Type: text/plain\r\n\r\none\r\n--b1--\r\n"), Parsed,
			`("" "" NIL NIL NIL "7bit" 47 NIL NIL NIL NIL)`},
		{"the word alone", []byte("Subject: s\r\nContent-Type: multipart\r\n\r\n--b1\r\n\r\nx\r\n--b1--\r\n"), Parsed,
			`("application" "octet-stream" NIL NIL NIL "7bit" 19 NIL NIL NIL NIL)`},
		{"a slash and no subtype", []byte("Subject: s\r\nContent-Type: multipart/; boundary=b1\r\n\r\n--b1\r\n\r\nx\r\n--b1--\r\n"), Parsed,
			`("" "" NIL NIL NIL "7bit" 19 NIL NIL NIL NIL)`},
		{"in a multipart", []byte("Subject: s\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n" +
			"Content-Type: multipart; boundary=b2\r\nContent-Disposition: inline\r\n\r\n--b2\r\n\r\nx\r\n--b2--\r\n--b1--\r\n"), Parsed,
			`(("" "" NIL NIL NIL "7bit" 17 NIL ("inline" NIL) NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"forwarded", []byte("Subject: s\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n" +
			"Content-Type: multipart ; boundary=b2\r\n\r\n--b2\r\n\r\nx\r\n--b2--\r\n"), Parsed,
			`("message" "rfc822" NIL NIL NIL "7bit" 73 (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL) ("" "" NIL NIL NIL "7bit" 19 NIL NIL NIL NIL) 7 NIL NIL NIL NIL)`},
	} {
		p, _, form, err := ParseForms(c.msg)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != c.status {
			t.Errorf("%s: status %d, want %d", c.name, p.Status, c.status)
		}
		if c.structure != "" && string(form) != c.structure {
			t.Errorf("%s: structure\n got  %s\n want %s", c.name, form, c.structure)
		}
	}
}
