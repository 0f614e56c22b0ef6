package submit

import (
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// TestStripBcc: Bcc and Resent-Bcc fields go, with their continuation
// lines, whatever their case and the blanks before the colon, first in
// the header or twice; every other byte stays, the body's "Bcc:" lines
// included, and those of a message attached.
func TestStripBcc(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"From: a@x\r\nBcc: b@y\r\nTo: c@z\r\n\r\nbody\r\n", "From: a@x\r\nTo: c@z\r\n\r\nbody\r\n"},
		{"From: a@x\r\nbcc \t: b@y,\r\n c@y\r\nTo: c@z\r\n\r\nBcc: kept\r\n", "From: a@x\r\nTo: c@z\r\n\r\nBcc: kept\r\n"},
		{"Resent-From: a@x\r\nResent-Bcc: hidden@y\r\nRESENT-BCC:\r\n\tmore@y\r\nFrom: d@x\r\n\r\nb\r\n", "Resent-From: a@x\r\nFrom: d@x\r\n\r\nb\r\n"},
		{"From: a@x\r\nResent-To: c@z\r\nX-Bcc: kept\r\n\r\nb\r\n", "From: a@x\r\nResent-To: c@z\r\nX-Bcc: kept\r\n\r\nb\r\n"},
		{"Bcc: last@y", ""},
		{"Bcc: first@y\r\nFrom: a@x\r\n\r\nb\r\n", "From: a@x\r\n\r\nb\r\n"},
		{"From: a@x\r\nBcc: one@y\r\nTo: c@z\r\nbCC: two@y\r\n\r\nb\r\n", "From: a@x\r\nTo: c@z\r\n\r\nb\r\n"},
		// A line of blanks continues the field before it: the Bcc after
		// it is still in the header, for readers as for the checks.
		{"From: a@x\r\nX-A: 1\r\n \r\nBcc: ws@y\r\n\r\nb\r\n", "From: a@x\r\nX-A: 1\r\n \r\n\r\nb\r\n"},
		// A message attached (message/rfc822) is body: its Bcc stays.
		{"From: a@x\r\nBcc: outer@y\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n" +
			"From: c@x\r\nBcc: inner@y\r\n\r\ninner\r\n--B--\r\n",
			"From: a@x\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n" +
				"From: c@x\r\nBcc: inner@y\r\n\r\ninner\r\n--B--\r\n"},
	} {
		if got := string(StripBcc([]byte(c.in))); got != c.want {
			t.Errorf("StripBcc(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestContentDigest: a message and a client's copy of it compare equal
// when they differ only in Message-ID, Date, Bcc and Resent-Bcc fields
// (continuation lines included) and in the line ends after the last line
// (CRLF or LF alike); any other field, its order, or the body tells them
// apart.
func TestContentDigest(t *testing.T) {
	const sent = "From: a@x\r\nTo: c@z\r\nSubject: hi\r\n\r\nbody\r\n"
	for _, c := range []struct {
		copy string
		same bool
	}{
		{sent, true},
		{"Message-ID: <1@x>\r\nDate: Sun, 6 Dec 2026 16:00:00 +0000\r\n" + sent, true},
		{"From: a@x\r\nBcc: b@y,\r\n d@y\r\nTo: c@z\r\nSubject: hi\r\nResent-Bcc: e@y\r\n\r\nbody\r\n", true},
		{sent + "\r\n\r\n", true},
		{"From: a@x\nTo: c@z\nSubject: hi\n\nbody", true},
		{"From: a@x\r\nTo: c@z\r\nSubject: hi!\r\n\r\nbody\r\n", false},
		{"To: c@z\r\nFrom: a@x\r\nSubject: hi\r\n\r\nbody\r\n", false},
		{"From: a@x\r\nTo: c@z\r\nSubject: hi\r\nX-Mailer: m\r\n\r\nbody\r\n", false},
		{"From: a@x\r\nTo: c@z\r\nSubject: hi\r\n\r\nbody.\r\n", false},
		{"From: a@x\r\nTo: c@z\r\nSubject: hi\r\n\r\n\r\nbody\r\n", false},
	} {
		if same := string(ContentDigest([]byte(c.copy))) == string(ContentDigest([]byte(sent))); same != c.same {
			t.Errorf("ContentDigest(%q) equal to the sent message's: %v, want %v", c.copy, same, c.same)
		}
	}
}

// TestAtLookAlikes: every character whose NFKC form holds an "@" (from
// the Unicode data of golang.org/x/text) is read as an "@" in a display
// name, and the two Unicode 17 has (U+FE6B, U+FF20) are among them.
func TestAtLookAlikes(t *testing.T) {
	var found []rune
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !utf8.ValidRune(r) || !strings.Contains(norm.NFKC.String(string(r)), "@") {
			continue
		}
		found = append(found, r)
		v := "\"boss" + string(r) + "example.net\" <alice@example.org>"
		if got := namedAddresses(v); !slices.Contains(got, "boss@example.net") {
			t.Errorf("%U: %q names %q, want boss@example.net among them", r, v, got)
		}
	}
	for _, r := range []rune{0xFE6B, 0xFF20} {
		if !slices.Contains(found, r) {
			t.Errorf("%U is not read as an @ (found %U)", r, found)
		}
	}
}
