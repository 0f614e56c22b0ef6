package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDeviceFilesPrivate starts the daemon under umask 000, as a service
// manager or a shell may leave it, in a folder others can enter, and checks
// that every file it makes beside the database is its owner's alone: SQLite
// made the -wal and -shm files of the database and of the outbox with mode
// 0666 less the umask, so any local user could write them.
func TestDeviceFilesPrivate(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	sh := needTool(t, "sh", "dash")
	bin := buildServerBinary(t)
	dir, devDir := t.TempDir(), t.TempDir()
	if err := os.Chmod(devDir, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "CREDENTIALS_DIRECTORY=")
	for _, name := range []string{"alice", "spool"} {
		runCmd(t, dir, env, "", bin, "gen-keys", name+".sec", name+".pub")
	}
	httpPort, imapPort, smtpPort := freePort(t), freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(httpPort))
	waitHealthy(t, url, server)
	if err := os.WriteFile(filepath.Join(dir, "message"), []byte("From: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd(t, dir, env, "message", bin, "deliver", "--user=alice", "--user-key=alice.pub", "--spool-key=spool.sec")

	db := filepath.Join(devDir, "alice.db")
	deadRelay := freePort(t)
	daemon := startProc(t, "cspool imap-server (umask 000)", dir, env, sh, "-c", `umask 000 && exec "$0" "$@"`, bin,
		"imap-server", "--user", "alice", "--user-key", "alice.sec", "--user-public-key", "alice.pub",
		"--spool-key", "spool.pub", "--db", db, "--port", fmt.Sprint(imapPort), "--status-addr", "",
		"--spool-server", url, "--smtp-port", fmt.Sprint(smtpPort),
		"--relay", fmt.Sprintf("smtp://127.0.0.1:%d", deadRelay), "--identity", "alice@example.org")
	daemon.waitOutput(t, "SMTP settings", 30*time.Second)
	pw, err := os.ReadFile(db + ".password")
	if err != nil {
		t.Fatal(err)
	}
	fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", string(pw[:len(pw)-1]), 1)

	for _, name := range []string{"alice.db-wal", "alice.db-shm", "alice.db.outbox-wal", "alice.db.outbox-shm"} {
		if _, err := os.Stat(filepath.Join(devDir, name)); err != nil {
			t.Errorf("%s: %v (want it made by the running daemon)", name, err)
		}
	}
	entries, err := os.ReadDir(devDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err == nil && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %#o under umask 000, want no permission for group or others", e.Name(), info.Mode().Perm())
		}
	}
}
