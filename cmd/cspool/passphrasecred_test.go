package main

import (
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// A systemd credential cspool-passphrase open to other users was refused
// with the hint of a missing user key ("copy user.sec and user.pub from
// another of the user's devices ... gen-keys"), which sent the user after
// the key. Now it gets the credential's own hint, as --passphrase-file
// does: chmod 600 the credential.
func TestPassphraseCredentialTooOpen(t *testing.T) {
	dir := t.TempDir()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := keys.Protect(k, "a passphrase", 10)
	if err != nil {
		t.Fatal(err)
	}
	sec := filepath.Join(dir, "user.sec")
	if err := os.WriteFile(sec, b, 0o600); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "creds")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	cred := filepath.Join(creds, credentialName)
	if err := os.WriteFile(cred, []byte("a passphrase\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard, getenv: func(name string) string {
		if name == "CREDENTIALS_DIRECTORY" {
			return creds
		}
		return ""
	}}
	none := ""
	src := &passphraseSource{e: e, file: &none, tty: func() (*os.File, error) { return nil, errors.New("no terminal") }}
	_, err = deviceUserKey.loadSecret(src, sec, "")
	var h *hintError
	if err == nil || !errors.As(err, &h) {
		t.Fatalf("a credential of mode 0644: %v, want an error with a hint", err)
	}
	if !strings.Contains(err.Error(), cred) || !strings.Contains(h.hint, "chmod 600 "+cred) || strings.Contains(h.hint, "gen-keys") {
		t.Errorf("a credential of mode 0644: %v, hint %q; want the credential named and chmod 600 on it, not a new key", err, h.hint)
	}
	if err := os.Chmod(cred, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := deviceUserKey.loadSecret(src, sec, ""); err != nil {
		t.Errorf("a credential of mode 0600: %v", err)
	}
}
