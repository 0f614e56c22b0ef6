package outbox_test

import (
	"strings"
	"testing"

	"cspool/internal/outbox"
)

// TestParseRelayURLHidesPassword: a relay URL carrying credentials, as
// other mail programs take them, is refused without its password in the
// error, which cspool prints to standard error (the journal under
// systemd); so is one url.Parse refuses, whose own error quotes the URL
// whole. Before, both errors quoted the URL, password and all.
func TestParseRelayURLHidesPassword(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"smtps://alice:s3cret-pw@mail.example.org:465",
		"smtp://alice%40example.org:s3cret-pw@mail.example.org",
		"smtps://alice:s3cret-pw@mail.example.org:notaport",
		"smtps://alice:s3cret-pw@mail.example.org:465/path?x=1",
		"smtps://alice:s3cret-pw@[::1",
		"smtps://alice:s3cret/pw?#@mail.example.org",
	} {
		_, err := outbox.ParseRelayURL(s)
		if err == nil {
			t.Errorf("%q: accepted", s)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows the password: %v", s, err)
		}
	}
	if _, err := outbox.ParseRelayURL("smtps://mail.example.org"); err != nil {
		t.Errorf("a relay without credentials: %v", err)
	}
}
