package mimeform

import (
	"strings"
	"testing"
)

// TestContentMD5: a single part's Content-MD5 is its body-fld-md5 in the
// extension data of BODYSTRUCTURE (RFC 9051 section 9, RFC 1864), as
// Dovecot answers; it was NIL, go-imap's types having no field for it.
// The stored structure keeps it, so Forms of what Parse stored gives the
// same IMAP form as ParseForms. The wanted forms are Dovecot 2.3.19's
// answers to the same messages, but for the folded field's white space.
func TestContentMD5(t *testing.T) {
	for _, c := range []struct{ name, msg, want string }{
		{"single part",
			"From: a@example.org\nSubject: md5\nMIME-Version: 1.0\n" +
				"Content-Type: text/plain; charset=us-ascii\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n" +
				"Content-Language: en\nContent-Location: http://x/y\n\nbody\n",
			`("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" NIL ("en") "http://x/y")`},
		{"multipart",
			"From: a@example.org\nSubject: mp md5\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=XX\n\n" +
				"--XX\nContent-Type: text/plain; charset=us-ascii\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n\none\n" +
				"--XX\nContent-Type: text/plain; charset=us-ascii\n\ntwo\n--XX--\n",
			`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 "Q2hlY2sgSW50ZWdyaXR5IQ==" NIL NIL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL) "mixed" ("boundary" "XX") NIL NIL NIL)`},
		// Unfolded as go-message reads any field (Content-Location too),
		// white space around it dropped; Dovecot kept the line break's
		// white space and the trailing one: "Q2hlY2sg  SW50ZWdyaXR5IQ==  ".
		{"folded",
			"From: a@example.org\nSubject: md5 folded\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n" +
				"Content-MD5:   Q2hlY2sg\n  SW50ZWdyaXR5IQ==  \n\nbody\n",
			`("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 "Q2hlY2sg SW50ZWdyaXR5IQ==" NIL NIL NIL)`},
		{"forwarded",
			"From: a@example.org\nSubject: fwd\nMIME-Version: 1.0\nContent-Type: message/rfc822\n\n" +
				"Subject: inner\nContent-Type: text/plain; charset=us-ascii\nContent-MD5: aW5uZXI=\n\ninner\n",
			`("message" "rfc822" NIL NIL NIL "7bit" 92 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1 "aW5uZXI=" NIL NIL NIL) 5 NIL NIL NIL NIL)`},
	} {
		msg := []byte(strings.ReplaceAll(c.msg, "\n", "\r\n"))
		p, _, form, err := ParseForms(msg)
		if err != nil {
			t.Fatal(err)
		}
		if string(form) != c.want {
			t.Errorf("%s: ParseForms:\n got  %s\n want %s", c.name, form, c.want)
		}
		_, stored, err := Forms(p.Envelope, p.Structure)
		if err != nil {
			t.Fatal(err)
		}
		if string(stored) != c.want {
			t.Errorf("%s: Forms of the stored structure:\n got  %s\n want %s", c.name, stored, c.want)
		}
	}
}
