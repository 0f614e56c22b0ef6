package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/statuspage"
)

// TestWrongSpoolKeyCheckpointNewest: a new device given another setup's
// spool.pub, whose first sync finds the log compacted and a checkpoint
// with no delivery after it, restores nothing and exits 77, saying the
// checkpoint was not restored: the deliveries the checkpoint keeps are
// signed by the spool's key, not by the one given. Before, it restored the
// checkpoint and exited 0, and the wrong key showed only at the next
// delivery. Given the right spool.pub, the same database syncs.
func TestWrongSpoolKeyCheckpointNewest(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python)
	a := s.newDevice(t, "a")
	conf := filepath.Join(a.home, ".config", "cspool", "alice.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("checkpoint-min = 1\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s.start(t, a)
	m := s.deliver(t, 3)
	s.synced(t, a)
	// A deletion: the log holds more entries than live messages, and the
	// daemon writes a checkpoint. What follows it in the log, if
	// anything, is the device's own: no delivery.
	s.imap(t, a, []string{"expunge", "INBOX", m[0]})
	s.synced(t, a)
	a.report(t, "a checkpoint", func(r *statuspage.Report) bool { return r.Checkpoint.Position > 3 })
	a.stop(t)

	c := s.newDevice(t, "c")
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "other.sec", "other.pub")
	cconf := filepath.Join(c.home, ".config", "cspool")
	copyFile := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(filepath.Join(s.dir, "other.pub"), filepath.Join(cconf, "spool.pub"))
	code, out, stderr := runExit(t, c.home, s.deviceEnv(c), bin, "sync", "--config", filepath.Join(cconf, "alice.conf"))
	for _, w := range []string{"which the checkpoint at position", "not by the spool key given", "was not restored", "hint:", "spool_key_id"} {
		if code != exNoPerm || !strings.Contains(stderr, w) {
			t.Errorf("first sync with another spool.pub from a checkpoint: exit %d, want %d, saying %q:\n%s\n%s", code, exNoPerm, w, out, stderr)
		}
	}
	copyFile(filepath.Join(s.dir, "spool.pub"), filepath.Join(cconf, "spool.pub"))
	if code, out, stderr := runExit(t, c.home, s.deviceEnv(c), bin, "sync", "--config", filepath.Join(cconf, "alice.conf")); code != 0 {
		t.Fatalf("sync with the right spool.pub: exit %d\n%s\n%s", code, out, stderr)
	}
}
