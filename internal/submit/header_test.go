package submit

import "testing"

// TestStripBcc: Bcc and Resent-Bcc fields go, with their continuation
// lines, whatever their case and the blanks before the colon; every other
// byte stays, the body's "Bcc:" lines included.
func TestStripBcc(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"From: a@x\r\nBcc: b@y\r\nTo: c@z\r\n\r\nbody\r\n", "From: a@x\r\nTo: c@z\r\n\r\nbody\r\n"},
		{"From: a@x\r\nbcc \t: b@y,\r\n c@y\r\nTo: c@z\r\n\r\nBcc: kept\r\n", "From: a@x\r\nTo: c@z\r\n\r\nBcc: kept\r\n"},
		{"Resent-From: a@x\r\nResent-Bcc: hidden@y\r\nRESENT-BCC:\r\n\tmore@y\r\nFrom: d@x\r\n\r\nb\r\n", "Resent-From: a@x\r\nFrom: d@x\r\n\r\nb\r\n"},
		{"From: a@x\r\nResent-To: c@z\r\nX-Bcc: kept\r\n\r\nb\r\n", "From: a@x\r\nResent-To: c@z\r\nX-Bcc: kept\r\n\r\nb\r\n"},
		{"Bcc: last@y", ""},
	} {
		if got := string(StripBcc([]byte(c.in))); got != c.want {
			t.Errorf("StripBcc(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
