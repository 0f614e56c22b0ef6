package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// TestPlainBeyondLocalhost: which spool server URLs reach another
// machine without TLS.
func TestPlainBeyondLocalhost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		url  string
		want bool
	}{
		{"http://spool.example.org", true},
		{"http://spool.example.org:3999", true},
		{"HTTP://spool.example.org:3999", true},
		{"http://192.0.2.7:3999", true},
		{"http://[2001:db8::1]:3999", true},
		{"http://0.0.0.0:3999", true},
		{"https://spool.example.org:3999", false},
		{"https://192.0.2.7:3999", false},
		{"http://127.0.0.1:3999", false},
		{"http://127.0.0.53:3999", false},
		{"http://[::1]:3999", false},
		{"http://localhost:3999", false},
		{"http://LOCALHOST", false},
		{"spool.example.org:3999", false}, // refused by api.NewClient
	} {
		if got := plainBeyondLocalhost(c.url); got != c.want {
			t.Errorf("plainBeyondLocalhost(%q) = %v, want %v", c.url, got, c.want)
		}
	}
}

// TestPlainSpoolWarned: a device (cspool imap-server, sync, recover) and
// cspool deliver that reach their spool server over http:// on another
// machine say so, on standard error for cspool deliver and in the log for
// a device: on that path anyone can forge the spool's answers, and a
// delivery answered 200 by whoever sits there, never passed on, was lost
// with exit status 0 (tried with a fake server answering {"first":42,
// "count":1}: "delivered 29 bytes to alice at log position 42"). The
// server warns of an API it serves without TLS beyond localhost, but
// not of a proxy in front of it that passes plain HTTP on too; both
// clients went without a word. Nothing here reaches a network: the
// device only makes its client, and the delivery is over its --max-size,
// which cspool deliver finds before it sends anything.
func TestPlainSpoolWarned(t *testing.T) {
	t.Parallel()
	userKey, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spoolKey, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	userPub := filepath.Join(dir, "user.pub")
	spoolSec := filepath.Join(dir, "spool.sec")
	if err := keys.WriteFiles(userKey, filepath.Join(dir, "user.sec"), userPub, keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(spoolKey, spoolSec, filepath.Join(dir, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	const warning = "REACHED WITHOUT TLS BEYOND LOCALHOST"
	for _, c := range []struct {
		url  string
		warn bool
	}{
		{"http://spool.example.org:3999", true},
		{"http://192.0.2.7:3999", true},
		{"https://spool.example.org:3999", false},
		{"http://127.0.0.1:3999", false},
	} {
		t.Run("device "+c.url, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			dev, err := openDevice(io.Discard, device{user: "alice", userKey: userKey, spoolPub: spoolKey.Public(), spoolURL: c.url,
				dbPath: filepath.Join(t.TempDir(), "mail.db"), log: slog.New(slog.NewTextHandler(&logs, nil))}, "busy")
			if err != nil {
				t.Fatal(err)
			}
			defer dev.close()
			if err := dev.dial(); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), warning); got != c.warn {
				t.Fatalf("warned %v, want %v; the log:\n%s", got, c.warn, logs.String())
			}
		})
		t.Run("deliver "+c.url, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			e := &env{stdin: strings.NewReader("From: a@example.org\r\n\r\nhi\r\n"), stdout: &out, stderr: &out,
				getenv: func(string) string { return "" }}
			code := run(e, []string{"deliver", "--user", "alice", "--user-key", userPub, "--spool-key", spoolSec,
				"--spool-server", c.url, "--max-size", "1"})
			if code != exDataErr {
				t.Fatalf("exit status %d, want %d (the message is over --max-size, before anything is sent): %s", code, exDataErr, out.String())
			}
			if got := strings.Contains(out.String(), warning); got != c.warn {
				t.Fatalf("warned %v, want %v; standard error:\n%s", got, c.warn, out.String())
			}
		})
	}
}
