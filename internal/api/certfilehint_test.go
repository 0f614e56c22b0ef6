package api

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestCertFileHint: a device whose SSL_CERT_FILE names the wrong file (not
// there, a folder, the server's private key, a cspool key, another
// server's certificate) gets a hint saying what is wrong with that file.
// The hint said to start the program with SSL_CERT_FILE, which it was:
// Go passes over such a file without a word, so nothing else said why
// the certificate was not trusted. A real TLS server, a real handshake.
func TestCertFileHint(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	other := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer other.Close()
	key, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	privPEM := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAbcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n-----END PRIVATE KEY-----\n"
	otherCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate().Raw})
	if err := os.Mkdir(filepath.Join(dir, "certs"), 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path string
		want       []string
	}{
		{"missing", filepath.Join(dir, "spool-ca.pem"), []string{"spool-ca.pem, which does not exist"}},
		{"folder", filepath.Join(dir, "certs"), []string{"a folder", "SSL_CERT_DIR"}},
		{"private key", write("privkey.pem", []byte(privPEM)), []string{"holds no certificate but a PEM PRIVATE KEY", "never leaves the server"}},
		{"cspool key", write("spool.pub", []byte(key.Public().String()+"\n")), []string{"holds no PEM certificate"}},
		{"another server's certificate", write("other.pem", otherCert), []string{"none of the 1 certificates in it signed", "another server's"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("SSL_CERT_FILE", c.path)
			cl, err := NewClient(srv.URL, "alice", key, &http.Client{Timeout: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = cl.Read(context.Background(), 0, 1, 1<<20, 0)
			if err == nil {
				t.Fatal("a read over TLS with an untrusted certificate succeeded")
			}
			h := Hint(err)
			if !strings.HasPrefix(h, "SSL_CERT_FILE names "+c.path) {
				t.Errorf("hint %q does not start by naming SSL_CERT_FILE's %s", h, c.path)
			}
			for _, w := range c.want {
				if !strings.Contains(h, w) {
					t.Errorf("hint %q does not say %q", h, w)
				}
			}
			if strings.Contains(h, "MC4CAQAw") || strings.Contains(h, key.Public().String()) {
				t.Errorf("hint %q shows the file's contents", h)
			}
		})
	}
	// Unset, the hint says to set it, as before.
	t.Setenv("SSL_CERT_FILE", "")
	cl, err := NewClient(srv.URL, "alice", key, &http.Client{Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = cl.Read(context.Background(), 0, 1, 1<<20, 0)
	if h := Hint(err); !strings.Contains(h, "start this program with SSL_CERT_FILE=/path/to/ca.pem") {
		t.Errorf("without SSL_CERT_FILE: hint %q", h)
	}
}
