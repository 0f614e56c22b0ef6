package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDamagedDatabaseHint: a device database whose pages were damaged
// (all but its first, after a clean stop) stops the daemon with what to
// do: it is a copy of the spool's log, so moving it aside and starting
// again rebuilds it, and only changes not sent yet are in it alone.
// Before, the daemon said "imapd: reading the mailboxes: listing
// mailboxes: sqlite3: database disk image is malformed" and nothing else.
// With the file moved aside as the hint says, the daemon starts and syncs.
func TestDamagedDatabaseHint(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	env := os.Environ()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-dir", "spool", "--users", usersPath, "--spool-key", "spool.sec")
	waitHealthy(t, url, server)
	for i := range 3 {
		msg := fmt.Sprintf("m%d.eml", i)
		if err := os.WriteFile(filepath.Join(dir, msg), fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), 0o600); err != nil {
			t.Fatal(err)
		}
		runCmd(t, dir, env, msg, bin, "deliver", "--user", "alice", "--user-key", "user.pub", "--spool-key", "spool.sec", "--spool-server", url)
	}
	device := []string{"--db", "alice.db", "--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--spool-server", url}
	runCmd(t, dir, env, "", bin, append([]string{"sync"}, device...)...)
	db := filepath.Join(dir, "alice.db")
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(db + suffix)
	}
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(b) < 3*page {
		t.Fatalf("alice.db is %d bytes: too small to damage", len(b))
	}
	for i := page; i < len(b); i++ {
		b[i] = 0
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	imapPort := freePort(t)
	args := append([]string{"imap-server", "--port", fmt.Sprint(imapPort), "--status-addr", ""}, device...)
	code, _, stderr := runExit(t, dir, env, bin, args...)
	if code == 0 || !strings.Contains(stderr, "alice.db is damaged") || !strings.Contains(stderr, "move alice.db and alice.db-wal aside") {
		t.Fatalf("cspool imap-server on a damaged database: exit %d, want the damaged database's hint:\n%s", code, stderr)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(db+suffix, db+suffix+".damaged"); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	daemon := startProc(t, "cspool imap-server", dir, env, bin, args...)
	daemon.waitOutput(t, "state:", 30*time.Second)
	out := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, out, _ = runExit(t, dir, env, bin, "status", "--db", "alice.db"); strings.Contains(out, "Position:      3 of 3") {
			return
		}
	}
	t.Errorf("after the move the daemon did not sync the 3 messages; cspool status:\n%s", out)
}
