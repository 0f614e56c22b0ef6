package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"cspool/internal/mailstore"
	"cspool/internal/statuspage"
)

// TestCheckpointAfterRecover: the spool is backed up and restored as
// docs/OPERATING.md says while the one device holds mail delivered in
// between; the device recovers, its daemon writes checkpoints
// (checkpoint-min = 1) and mail is deleted, so that the spool compacts the
// log after the restoration. A new device set up with cspool sync then
// gets every message: the device's checkpoints name the bodies it put
// back at the Body entries that hold them now, not at their positions
// before the restore (where the restored log holds other mail).
func TestCheckpointAfterRecover(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	needTool(t, "sqlite3", "sqlite3")
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
	backup := s.backupSpool(t)
	m = append(m, s.deliver(t, 2)...) // m[3], m[4]: the restore removes them
	s.synced(t, a)

	s.restoreSpool(t, backup)
	n := s.deliver(t, 1) // where m[3] was
	out := s.recoverDevice(t, a)
	if !strings.Contains(out, "message bytes put back: 2 messages") {
		t.Fatalf("cspool recover did not put back m[3] and m[4]:\n%s", out)
	}
	s.synced(t, a)

	// Mail deleted: the daemon writes a checkpoint after it, and the spool
	// compacts the log.
	before := a.report(t, "a checkpoint", func(r *statuspage.Report) bool { return r.Checkpoint.Position > 0 }).Checkpoint.Position
	s.imap(t, a, []string{"expunge", "INBOX", n[0]}, []string{"expunge", "INBOX", m[0]})
	s.synced(t, a)
	a.report(t, "a checkpoint after the expunges", func(r *statuspage.Report) bool {
		return r.Checkpoint.Position > before && r.Checkpoint.Position >= r.Sync.Position
	})

	c := s.newDevice(t, "c")
	runCmd(t, c.home, s.deviceEnv(c), "", bin, "sync", "--config", filepath.Join(c.home, ".config", "cspool", "alice.conf"))
	a.stop(t)
	want := s.dumpOf(t, a.db)
	if diff := mailstore.Diff(want, s.dumpOf(t, c.db), 5); diff != nil {
		t.Errorf("c differs from a: %v", diff)
	}
	var got []string
	for _, msg := range want.Messages {
		got = append(got, s.subjects[msg.Digest])
	}
	slices.Sort(got)
	if w := []string{m[1], m[2], m[3], m[4]}; !slices.Equal(got, w) {
		t.Errorf("a holds %q, want %q", got, w)
	}
}
