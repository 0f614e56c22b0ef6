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

// TestQuotaKeptOverRestart runs cspool server with a 2.5 MB --quota (and
// the default --quota-margin, 118.5 MiB, within which the spool takes the
// user's own appends: the device refuses at the quota itself) and a
// device that APPENDs a 1.4 MB message, taken, and a second, refused by
// the device at the quota it heard. The device and the spool are
// stopped; the device started again with the spool down refuses the
// second message with NO [OVERQUOTA] by the quota kept in its database
// and takes a small one. Before, it had heard no quota in that run and
// queued the large one too, acknowledged, past the quota.
func TestQuotaKeptOverRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs Python")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	work := t.TempDir()
	env := os.Environ()
	alice, spoolK := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(alice, filepath.Join(work, "alice.sec"), filepath.Join(work, "alice.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(spoolK, filepath.Join(work, "spool.sec"), filepath.Join(work, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, filepath.Join(work, "users"), map[string]*keys.SecretKey{"alice": alice})
	const quota, size = 2_500_000, 1_400_000
	httpPort, imapPort := freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", work, env, bin, "server", "--port", fmt.Sprint(httpPort),
		"--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec", "--quota", fmt.Sprint(quota))
	waitHealthy(t, spoolURL, server)
	daemonArgs := []string{"imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub",
		"--db", "alice.db", "--port", fmt.Sprint(imapPort), "--spool-server", spoolURL, "--status-addr", ""}
	daemon := startProc(t, "cspool imap-server", work, env, bin, daemonArgs...)
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	port := fmt.Sprint(imapPort)

	// 1.4 MB seals to about 1.44 MB: one fits in 2.5 MB, a second does not.
	out := runCmd(t, work, env, "", python, "-c", imaplibAppendQuota, "127.0.0.1", port, "alice", password, "2", fmt.Sprint(size))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "OK ") || !strings.HasPrefix(lines[1], "NO ") || !strings.Contains(lines[1], "[OVERQUOTA]") {
		t.Fatalf("two APPENDs with the spool up: got\n%s\nwant OK, then NO [OVERQUOTA]", out)
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 30*time.Second)

	// Started again with nothing listening at the spool's address.
	daemon = startProc(t, "cspool imap-server", work, env, bin, daemonArgs...)
	password = daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	out = strings.TrimSpace(runCmd(t, work, env, "", python, "-c", imaplibAppendQuota, "127.0.0.1", port, "alice", password, "1", fmt.Sprint(size)))
	if !strings.HasPrefix(out, "NO ") || !strings.Contains(out, "[OVERQUOTA]") {
		t.Errorf("APPEND of %d bytes past the quota with the spool down after a restart: %q, want NO [OVERQUOTA]", size, out)
	}
	out = strings.TrimSpace(runCmd(t, work, env, "", python, "-c", imaplibAppendQuota, "127.0.0.1", port, "alice", password, "1", "1000"))
	if !strings.HasPrefix(out, "OK ") {
		t.Errorf("APPEND of 1000 bytes within the quota with the spool down after a restart: %q, want OK", out)
	}
}
