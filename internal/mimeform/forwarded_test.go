package mimeform

import (
	"strconv"
	"strings"
	"testing"
)

// TestBodyTextsOfForwardedMessage: a message forwarded as an attachment
// (message/rfc822) whose own text is quoted-printable and whose subject is
// an encoded word. Its raw bytes were the text SEARCH tested, so SEARCH
// BODY "été" and TEXT "Ünïcode" found nothing (Dovecot finds both); now
// its header, decoded too, and its decoded texts are searched, as the
// outer message's are.
func TestBodyTextsOfForwardedMessage(t *testing.T) {
	inner := "From: b@example.org\r\nSubject: =?utf-8?q?=C3=9Cn=C3=AFcode?=\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"C'=C3=A9tait l'=C3=A9t=C3=A9.\r\n"
	raw := "From: a@example.org\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nsee below\r\n" +
		"--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner +
		"--b1--\r\n"
	texts := strings.Join(BodyTexts([]byte(raw), headerLength([]byte(raw))), "\n")
	for _, want := range []string{"see below", "C'était l'été.", "Subject: Ünïcode", "=?utf-8?q?=C3=9Cn=C3=AFcode?="} {
		if !strings.Contains(texts, want) {
			t.Errorf("the texts lack %q:\n%s", want, texts)
		}
	}
	// Nested: a forwarded message inside a forwarded message.
	outer := "From: c@example.org\r\nSubject: Fwd again\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + raw
	texts = strings.Join(BodyTexts([]byte(outer), headerLength([]byte(outer))), "\n")
	if !strings.Contains(texts, "C'était l'été.") || !strings.Contains(texts, "Subject: Ünïcode") {
		t.Errorf("the texts of a message forwarded twice lack the innermost's:\n%s", texts)
	}
}

// TestForwardedHeaderLenient: a forwarded message's header with a line
// that is no field is read as the message's own is (Lenient): the fields
// after the line are its envelope's and its type's, and its multipart's
// parts are in the structure, where they were read as its text; its size
// and lines are its bytes'. A message forwarded as its own body, and one
// forwarded inside a forwarded one, alike. A header with no field at all
// is a header still, up to its blank line or the end of the part, as
// BODY[n.HEADER] serves it and Dovecot reads it: the library took its
// first line for the header and the rest for the text.
func TestForwardedHeaderLenient(t *testing.T) {
	inner := "From: mid@example.org\r\nthis line has no colon\r\nSubject: inner\r\n" +
		"Content-Type: multipart/mixed; boundary=i1\r\n\r\n" +
		"--i1\r\nContent-Type: text/plain\r\n\r\ninner one\r\n--i1--\r\n"
	innerForm := `(NIL "inner" ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) ((NIL NIL "mid" "example.org")) NIL NIL NIL NIL NIL) ` +
		`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL) "mixed" ("boundary" "i1") NIL NIL NIL) 9`
	head := "From: ann@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
	for _, c := range []struct{ name, msg, want string }{
		{"a part", head + "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "--b1--\r\n",
			`(("message" "rfc822" NIL NIL NIL "7bit" ` + strconv.Itoa(len(inner)-2) + ` ` + innerForm + ` NIL NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)`},
		{"the body", head + "Content-Type: message/rfc822\r\n\r\n" + inner,
			`("message" "rfc822" NIL NIL NIL "7bit" ` + strconv.Itoa(len(inner)) + ` ` + strings.Replace(innerForm, ") 9", ") 10", 1) + ` NIL NIL NIL NIL)`},
		{"twice", head + "Content-Type: message/rfc822\r\n\r\nFrom: x@example.org\r\nno field either\r\nContent-Type: message/rfc822\r\n\r\n" + inner,
			`"message" "rfc822" NIL NIL NIL "7bit" ` + strconv.Itoa(len(inner)) + ` ` + strings.Replace(innerForm, ") 9", ") 10", 1)},
	} {
		_, _, form, err := ParseForms([]byte(c.msg))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(form), c.want) {
			t.Errorf("%s:\n got  %s\n want %s", c.name, form, c.want)
		}
	}

	// No field at all: the whole part is its header, its text empty; with
	// a blank line, the text is after it.
	for _, c := range []struct{ fwd, want string }{
		{"not a message\r\nat all\r\n", `"7bit" 0 0 NIL NIL NIL NIL) 2 NIL`},
		{"not a message\r\n\r\nat all\r\n", `"7bit" 8 1 NIL NIL NIL NIL) 3 NIL`},
	} {
		_, _, form, err := ParseForms([]byte(head + "Content-Type: message/rfc822\r\n\r\n" + c.fwd))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(form), c.want) {
			t.Errorf("a forwarded message of no field %q:\n got  %s\n want %s", c.fwd, form, c.want)
		}
	}
}
