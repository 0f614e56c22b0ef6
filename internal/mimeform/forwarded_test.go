package mimeform

import (
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
