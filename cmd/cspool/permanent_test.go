package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/statuspage"
)

// TestPermanentErrors: what cannot heal by retrying is said once, with what
// to do, and cspool deliver exits with a status an MTA does not retry. A
// spool server with TLS (a self-signed certificate) and a users file that
// lists bob only:
//   - cspool deliver without trusting the certificate exits 78 (EX_CONFIG)
//     naming SSL_CERT_FILE; with http:// to the TLS port, 76 (EX_PROTOCOL)
//     naming https://;
//   - the daemon without trusting the certificate logs the problem once,
//     with SSL_CERT_FILE and docs/TLS.md, and `cspool status` shows it;
//   - the daemon trusting it but with a key the users file lacks (401
//     unknown key) logs the users file hint once, and status shows it;
//   - cspool sync --once=false with that key logs the same, not an outage.
func TestPermanentErrors(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	certPath, keyPath, _ := selfSigned(t, dir)
	env := append(os.Environ(), "USER=alice")
	runCmd(t, dir, env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"bob": mustKey(t)})

	port := freePort(t)
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--tls-cert", certPath, "--tls-key", keyPath, "--spool-key", "spool.sec", "--users", usersPath)
	trusted := append(env[:len(env):len(env)], "SSL_CERT_FILE="+certPath)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, _, _ := runExit(t, dir, trusted, bin, "deliver", "--users", usersPath, "--user", "bob",
			"--spool-key=spool.sec", "--spool-server", url, "--quiet", "--timeout", "5s")
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cspool deliver to bob over trusted TLS: exit %d after 20 s\n%s", code, server.stderr)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "message"), []byte("Subject: x\r\n\r\nx\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("deliver", func(t *testing.T) {
		for _, c := range []struct {
			name string
			url  string
			code int
			hint []string
		}{
			{"untrusted certificate", url, exConfig, []string{"SSL_CERT_FILE", "docs/TLS.md"}},
			{"http to the TLS port", strings.Replace(url, "https:", "http:", 1), exProtocol, []string{"https://"}},
		} {
			code, _, stderr := runExit(t, dir, env, bin, "deliver", "--users", usersPath, "--user", "bob",
				"--spool-key=spool.sec", "--spool-server", c.url, "--timeout", "10s", "--quiet")
			if code != c.code {
				t.Errorf("%s: exit %d, want %d (a permanent failure, not 75)\n%s", c.name, code, c.code, stderr)
			}
			for _, h := range c.hint {
				if !strings.Contains(stderr, "hint:") || !strings.Contains(stderr, h) {
					t.Errorf("%s: stderr lacks a hint naming %q:\n%s", c.name, h, stderr)
				}
			}
		}
	})

	// The daemon: the problem is logged once, with what to do, and the
	// status shows it. The daemons and cspool sync below have databases
	// and ports of their own, and run side by side (each watches its log
	// for 4 s).
	daemon := func(t *testing.T, env []string, db, logLine string, hint []string) {
		imapPort := freePort(t)
		d := startProc(t, "cspool imap-server", dir, env, bin, "imap-server", "--user=alice", "--user-key=user.sec",
			"--spool-key=spool.pub", "--user-public-key=user.pub", "--port", fmt.Sprint(imapPort),
			"--status-addr", "", "--db", db, "--spool-server", url)
		d.waitOutput(t, "state:", 30*time.Second)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(d.stderr.String(), logLine) {
			if time.Now().After(deadline) {
				t.Fatalf("the daemon never logged %q:\n%s", logLine, d.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The old loop retried after 0.25, 0.5, 1 and 2 s, a line each.
		time.Sleep(4 * time.Second)
		log := d.stderr.String()
		if n := strings.Count(log, logLine); n != 1 {
			t.Errorf("the daemon logged %q %d times in 4 s, want once:\n%s", logLine, n, log)
		}
		if n := strings.Count(log, "spool unreachable; retrying"); n != 0 {
			t.Errorf("the daemon retries a permanent error as a temporary one (%d lines):\n%s", n, log)
		}
		for _, h := range hint {
			if !strings.Contains(log, h) {
				t.Errorf("the daemon's log lacks %q:\n%s", h, log)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rep, err := statuspage.FetchSocket(ctx, controlSocketPath(filepath.Join(dir, db)))
		cancel()
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		for _, h := range hint {
			if !strings.Contains(rep.Sync.LastError, h) {
				t.Errorf("the status's last error %q lacks %q", rep.Sync.LastError, h)
			}
		}
		code, out, stderr := runExit(t, dir, env, bin, "status", "--db", db)
		if code != 0 || !strings.Contains(out, hint[0]) {
			t.Errorf("cspool status: exit %d, output lacks %q:\n%s%s", code, hint[0], out, stderr)
		}
		d.stop(t, syscall.SIGTERM, 30*time.Second)
	}
	t.Run("daemon, untrusted certificate", func(t *testing.T) {
		t.Parallel()
		daemon(t, env, "cert.db", "cannot sync with the spool until this is fixed", []string{"SSL_CERT_FILE", "docs/TLS.md"})
	})
	t.Run("daemon, unknown key", func(t *testing.T) {
		t.Parallel()
		daemon(t, trusted, "key.db", "cannot sync with the spool until this is fixed", []string{"users file", "401"})
	})
	// cspool sync --once=false follows the log as the daemon does: the
	// same problem named once, not retried as an outage.
	t.Run("sync --once=false, unknown key", func(t *testing.T) {
		t.Parallel()
		logLine := "cannot sync with the spool until this is fixed"
		s := startProc(t, "cspool sync --once=false", dir, trusted, bin, "sync", "--once=false", "--user=alice",
			"--user-key=user.sec", "--spool-key=spool.pub", "--user-public-key=user.pub", "--db", "follow.db",
			"--spool-server", url)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(s.stderr.String(), logLine) {
			if time.Now().After(deadline) {
				t.Fatalf("cspool sync --once=false never logged %q:\n%s", logLine, s.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
		log := s.stderr.String()
		if n := strings.Count(log, "spool unreachable; retrying"); n != 0 {
			t.Errorf("cspool sync --once=false retries a permanent error as a temporary one (%d lines):\n%s", n, log)
		}
		for _, h := range []string{"users file", "401"} {
			if !strings.Contains(log, h) {
				t.Errorf("the log lacks %q:\n%s", h, log)
			}
		}
		s.stop(t, syscall.SIGINT, 30*time.Second)
	})
}
