package mimeform

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

// TestEncodedGlobalPart: a message/global part in base64 or
// quoted-printable (RFC 6532 section 3.5) is one part of its bytes
// (encodedGlobal), as Dovecot 2.3 shows it, at the top, inside a
// multipart and inside a forwarded message, whatever the case of the
// encoding's name: no envelope, structure or lines, and a multipart's
// delimiters inside quoted-printable are none of the message's. It was
// read as a message as it stands: base64's lines a header of no field
// and an envelope all NIL, quoted-printable's "=C3=B6" the envelope's
// text. A message/global part in 8bit stays a message, and the decoded
// message's words are still found by SEARCH.
func TestEncodedGlobalPart(t *testing.T) {
	inner := "From: J\u00f6rg <j\u00f6rg@beispiel.de>\r\nSubject: Gr\u00fc\u00dfe\r\n\r\nDas Kennwort lautet Schneeflockenwalzer.\r\n"
	plain := "From: b@example.org\r\nSubject: plain\r\n\r\nSchneeflockenwalzer\r\n"
	b64 := base64.StdEncoding.EncodeToString([]byte(inner)) + "\r\n"
	qpMulti := "From: J=C3=B6rg <j=C3=B6rg@beispiel.de>\r\nSubject: Gr=C3=BC=C3=9Fe\r\n" +
		"Content-Type: multipart/mixed; boundary=3D\"q1\"\r\n\r\n--q1\r\nContent-Type: text/plain\r\n\r\n" +
		"Regenbo=\r\ngenforelle\r\n--q1\r\nContent-Type: text/plain\r\n\r\nzwei\r\n--q1--\r\n"
	multi := func(cte, body string) string {
		return "From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"g1\"\r\n\r\n" +
			"--g1\r\nContent-Type: text/plain\r\n\r\nsee below\r\n" +
			"--g1\r\nContent-Type: message/global\r\nContent-Transfer-Encoding: " + cte + "\r\n\r\n" + body + "--g1--\r\n"
	}
	basic := func(cte string, size int) string {
		return `("message" "global" NIL NIL NIL "` + cte + `" ` + strconv.Itoa(size) + ` NIL NIL NIL NIL)`
	}
	inMulti := func(part string) string {
		return `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)` + part + ` "mixed" ("boundary" "g1") NIL NIL NIL)`
	}
	for _, c := range []struct {
		name, msg, structure string
		words                []string
	}{
		{"base64 in a multipart", multi("base64", b64), inMulti(basic("base64", len(b64)-2)), []string{"Schneeflockenwalzer"}},
		{"BASE64", multi("BASE64", b64), inMulti(basic("base64", len(b64)-2)), []string{"Schneeflockenwalzer"}},
		{"quoted-printable holding a multipart", multi("quoted-printable", qpMulti), inMulti(basic("quoted-printable", len(qpMulti)-2)),
			[]string{"Regenbogenforelle", "zwei"}},
		{"base64 at the top", "From: a@example.org\r\nSubject: s\r\nContent-Type: message/global\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64,
			basic("base64", len(b64)), []string{"Schneeflockenwalzer"}},
		{"base64 in a forwarded message", "From: a@example.org\r\nSubject: s\r\nContent-Type: message/rfc822\r\n\r\n" +
			"From: b@example.org\r\nSubject: in\r\nContent-Type: message/global\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64,
			`("message" "rfc822" NIL NIL NIL "7bit" ` + strconv.Itoa(101+len(b64)) + ` (NIL "in" ((NIL NIL "b" "example.org")) ((NIL NIL "b" "example.org")) ((NIL NIL "b" "example.org")) NIL NIL NIL NIL NIL) ` +
				basic("base64", len(b64)) + ` 6 NIL NIL NIL NIL)`, []string{"Schneeflockenwalzer"}},
		{"8bit, a message", multi("8bit", plain),
			inMulti(`("message" "global" NIL NIL NIL "8bit" 58 (NIL "plain" ((NIL NIL "b" "example.org")) ((NIL NIL "b" "example.org")) ((NIL NIL "b" "example.org")) NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 19 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)`),
			[]string{"Schneeflockenwalzer"}},
	} {
		b := []byte(c.msg)
		p, _, form, err := ParseForms(b)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != Parsed {
			t.Errorf("%s: status %d", c.name, p.Status)
		}
		if string(form) != c.structure {
			t.Errorf("%s: structure\n got  %s\n want %s", c.name, form, c.structure)
		}
		if _, stored, err := Forms(p.Envelope, p.Structure); err != nil || string(stored) != string(form) {
			t.Errorf("%s: the stored structure's form is %s (%v)", c.name, stored, err)
		}
		if m := Mended(b); string(m) != string(Lenient(b, true)) {
			t.Errorf("%s: mended, where nothing is to mend:\n%s", c.name, m)
		}
		texts := strings.Join(BodyTexts(b, headerLength(b)), "\n")
		for _, w := range c.words {
			if !strings.Contains(texts, w) {
				t.Errorf("%s: the search texts lack %q", c.name, w)
			}
		}
	}
}
