package recovery

import (
	"context"
	"errors"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestRestoreBackupAfterRecovery: the backup restored was taken shortly
// after an earlier recovery, so the newest checkpoint it holds is that
// recovery's restoration, which both devices applied and went past. Each
// gets the rollback alarm at its own position (not an alarm about the old
// restoration's own entry), a recovers, b is told its history is covered,
// and both adopt the new restoration with nothing lost.
func TestRestoreBackupAfterRecovery(t *testing.T) {
	t.Parallel()
	r, a, b, m, backup, _ := backupAfterRecovery(t)
	posA, _ := a.ms.Position(context.Background())
	posB, _ := b.ms.Position(context.Background())

	r.restore(backup)
	n := r.deliver(6) // the log grows past where the devices were
	for _, d := range []*device{a, b} {
		err := d.sync()
		if err == nil || !strings.Contains(err.Error(), "rolled back") {
			t.Errorf("%s after the restore: %v, want the rollback alarm", d.name, err)
		}
	}
	for d, pos := range map[*device]uint64{a: posA, b: posB} {
		alarms, err := d.ms.Alarms(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, al := range alarms {
			if al.Pos != pos {
				t.Errorf("%s: alarm at position %d, want %d (where it applied the log the restore removed): %s", d.name, al.Pos, pos, al.Detail)
			}
		}
	}

	if rep, err := a.recover(); err != nil {
		t.Fatalf("recover on a: %v (report %+v)", err, rep)
	}
	if err := a.sync(); err != nil {
		t.Fatalf("a after its recovery: %v", err)
	}
	if _, err := b.recover(); !errors.Is(err, ErrCovered) {
		t.Errorf("recover on b: %v, want ErrCovered", err)
	}
	if err := b.sync(); err != nil {
		t.Fatalf("b after a's restoration: %v", err)
	}
	want := a.dump()
	if d := mailstore.Diff(want, b.dump(), 5); d != nil {
		t.Errorf("b differs from a: %v", d)
	}
	held := map[command.ID][]string{}
	for _, msg := range want.Messages {
		held[msg.ID] = msg.Flags
	}
	for _, id := range append(m, n...) {
		if _, ok := held[id]; !ok {
			t.Errorf("message %s is missing", id)
		}
	}
	if f := held[m[0]]; len(f) != 1 || f[0] != `\Flagged` {
		t.Errorf("m0 has flags %v, want \\Flagged", f)
	}
	if len(want.Messages) != 15 {
		t.Errorf("%d messages, want 15 (every delivery)", len(want.Messages))
	}
}

// TestOldAlarmAfterRestoreBackupAfterRecovery: b recorded, as a device of
// the release before did in TestRestoreBackupAfterRecovery's case, an
// alarm at the old restoration's entry, below the restored head: the new
// restoration does not explain it, and clearing it (cspool sync
// --clear-alarm, once the restoration is on the spool) adopts the
// restoration with nothing lost, as docs/OPERATING.md says.
func TestOldAlarmAfterRestoreBackupAfterRecovery(t *testing.T) {
	t.Parallel()
	r, a, b, _, backup, at := backupAfterRecovery(t)
	r.restore(backup)
	r.deliver(6)
	ctx := context.Background()
	if err := b.ms.RaiseAlarm(ctx, at, "the restoration at position N neither holds nor supersedes entry ..."); err != nil {
		t.Fatal(err)
	}
	b.start()
	if err := a.sync(); err == nil {
		t.Fatal("a: no alarm after the restore")
	}
	if _, err := a.recover(); err != nil {
		t.Fatalf("recover on a: %v", err)
	}
	a.mustSync()
	if err := b.sync(); err == nil {
		t.Fatal("b adopted over an alarm the restoration does not explain")
	}
	if err := b.ms.ClearAlarms(ctx); err != nil {
		t.Fatal(err)
	}
	b.start()
	b.mustSync()
	if d := mailstore.Diff(a.dump(), b.dump(), 5); d != nil {
		t.Errorf("b differs from a: %v", d)
	}
}

// backupAfterRecovery runs a restore and a recovery on a (b adopts),
// delivers one more message and takes a backup, returned with the
// position of the restoration's entry, then delivers two (returned) that a
// flags and both devices apply.
func backupAfterRecovery(t *testing.T) (r *rig, a, b *device, m []command.ID, backup string, restoration uint64) {
	t.Helper()
	r = newRig(t)
	a, b = r.device("a"), r.device("b")
	r.deliver(3)
	a.mustSync()
	b.mustSync()
	first := r.backup()
	r.deliver(2)
	a.mustSync()
	b.mustSync()
	r.restore(first)
	r.deliver(1)
	if err := a.sync(); err == nil {
		t.Fatal("a: no alarm after the first restore")
	}
	rep, err := a.recover()
	if err != nil {
		t.Fatalf("the first recovery: %v", err)
	}
	a.mustSync()
	b.mustSync()
	r.deliver(1) // the log goes on past the restoration's entry
	backup = r.backup()
	m = r.deliver(2)
	a.mustSync()
	a.change(&command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{m[0]}})
	b.mustSync()
	return r, a, b, m, backup, rep.Restoration + 1
}
