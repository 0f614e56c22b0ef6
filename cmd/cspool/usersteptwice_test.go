package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestUsersStepTwice runs docs/systemd/README.md's operator step that adds
// alice to the users file, as printed but for /etc/cspool, twice, each
// followed by the unit's reload (SIGHUP) of a running server, as an
// operator pasting it again would: the file lists alice once, both reloads
// take it, LMTP takes her mail, and a restart of the server starts. The
// step appended her line again at its second run: the reload was refused
// (the journal alone said so) and the next start failed on "listed twice".
func TestUsersStepTwice(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	var step string
	for _, s := range systemdRecipe(t) {
		if strings.Contains(s.script, ">> /etc/cspool/users") {
			step = s.script
		}
	}
	if step == "" || !strings.Contains(step, "systemctl reload cspool-server") {
		t.Fatalf("docs/systemd/README.md: no operator step adding alice to the users file and reloading: %q", step)
	}
	bin := buildServerBinary(t)
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	spoolK, alice := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(spoolK, filepath.Join(etc, "spool.sec"), filepath.Join(etc, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(alice, filepath.Join(root, "alice.sec"), filepath.Join(root, "alice.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(etc, "users")
	if err := os.WriteFile(users, nil, 0o644); err != nil { // the README's touch
		t.Fatal(err)
	}
	lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"--users", users, "--spool-dir", filepath.Join(root, "spool"), "--spool-key", filepath.Join(etc, "spool.sec"), "--lmtp", lmtp}
	if err := os.Mkdir(filepath.Join(root, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	server := startServer(t, bin, args...)
	reloads := 0
	run := func() {
		t.Helper()
		runRecipe(t, step, root, os.Environ(), []string{"/etc/cspool", etc}, func(l string) {
			if l != "systemctl reload cspool-server" {
				t.Fatalf("unexpected %q in the operator's step", l)
			}
			if err := server.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			reloads++
			deadline := time.Now().Add(30 * time.Second)
			for log := server.stderr.String(); strings.Count(log, "users reloaded")+strings.Count(log, "users reload failed") < reloads; log = server.stderr.String() {
				if time.Now().After(deadline) {
					t.Fatalf("no answer to reload %d within 30 s:\n%s", reloads, log)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	run()
	run()
	if log := server.stderr.String(); strings.Contains(log, "users reload failed") {
		t.Errorf("the step run twice: a reload was refused:\n%s", log)
	}
	if b, err := os.ReadFile(users); err != nil || strings.Count(string(b), "alice ") != 1 {
		t.Errorf("the users file after the step run twice (%v):\n%s\nwant alice's line once", err, b)
	}
	lmtpSendOne(t, lmtp, "alice@example.org", 0)
	server.stop(t)
	server = startServer(t, bin, args...)
	lmtpSendOne(t, lmtp, "alice@example.org", 0)
	server.stop(t)
}
