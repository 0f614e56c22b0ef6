package api

import (
	"crypto/rand"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// TestBaseURLCredentialsRefused: a spool server URL with a name and
// password in it (for a proxy's basic authentication, as other programs
// take them) is refused without them in the error, which the device
// logs and cspool prints. The API signs each request with the user's key
// in Authorization, so such credentials were never sent: the client
// dropped them, and every message naming the URL (the warning of a spool
// without TLS, `syncing with URL`, the status page) showed the password.
// A URL url.Parse refuses, whose error quotes it whole, likewise.
func TestBaseURLCredentialsRefused(t *testing.T) {
	t.Parallel()
	key, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{
		"http://alice:s3cret-pw@192.0.2.1:3999",
		"https://alice:s3cret-pw@spool.example.org",
		"http://alice:s3cret-pw@192.0.2.1:notaport",
		"https://alice:s3cret/pw@spool.example.org",
		"https://alice:s3cret-pw@spool.example.org/path",
	} {
		_, err := NewClient(u, "alice", key, nil)
		if err == nil {
			t.Errorf("%q: accepted", u)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%q: the error shows the password: %v", u, err)
		}
	}
	if _, err := NewClient("http://192.0.2.1:3999", "alice", key, nil); err != nil {
		t.Errorf("a URL without credentials: %v", err)
	}
}
