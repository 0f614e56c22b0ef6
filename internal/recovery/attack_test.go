package recovery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
)

// The spool cannot use restorations: it cannot sign one, an old one served
// again does not hold what a device applied after it, and one out of its
// place applies as nothing. Each test is a dishonest spool against real
// devices; "unchanged" means the device's state is byte for byte what it
// was.

// restored returns a spool restored from a backup taken after three
// deliveries, with one delivery since, and device a, which had applied two
// more before the restore.
func restored(t *testing.T) (*rig, *device) {
	t.Helper()
	r := newRig(t)
	a := r.device("a")
	r.deliver(3)
	a.mustSync()
	backup := r.backup()
	r.deliver(2)
	a.mustSync()
	r.restore(backup)
	r.deliver(1)
	return r, a
}

// restoredOnce runs an honest restore and recovery: a recovers; it returns
// the backup taken right after the restoration was written.
func restoredOnce(t *testing.T) (*rig, *device, string) {
	t.Helper()
	r, a := restored(t)
	if err := a.sync(); err == nil {
		t.Fatal("no alarm after the restore")
	}
	if _, err := a.recover(); err != nil {
		t.Fatal(err)
	}
	a.mustSync()
	return r, a, r.backup()
}

// TestOldRestorationServedAgain: after a recovery the log goes on; a spool
// that rolls back to just after the restoration, to serve it as the newest
// again (and hide what followed), gets the rollback alarm: the restoration
// does not hold what the device applied after it, so it is not adopted,
// and it supersedes none of it, so it explains nothing (the alarm is the
// rollback's, at the device's position, as for any restore).
func TestOldRestorationServedAgain(t *testing.T) {
	t.Parallel()
	r, a, afterRestoration := restoredOnce(t)
	r.deliver(2)
	a.mustSync()
	before := a.dump()
	pos, err := a.ms.Position(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.restore(afterRestoration)
	r.deliver(3) // regrown past the device: its start hash differs
	err = a.sync()
	if err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("sync after a rollback to the restoration: %v, want the rollback alarm", err)
	}
	if alarms, err := a.ms.Alarms(context.Background()); err != nil || len(alarms) != 1 || alarms[0].Pos != pos {
		t.Fatalf("alarms %v (%v), want the rollback's alone, at position %d", alarms, err, pos)
	}
	if d := mailstore.Diff(before, a.dump(), 5); d != nil {
		t.Fatalf("the device changed: %v", d)
	}
	if err := a.sync(); err == nil {
		t.Fatal("the alarm went away by itself")
	}
}

// TestForgedRestoration: the spool's key signs a Restoration and a Body (as
// entries where they would apply), and a Restoration holding the device's
// own state stored as the newest checkpoint after a rollback. Devices
// reject the entries as forbidden and never adopt the checkpoint.
func TestForgedRestoration(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	r.deliver(3)
	a.mustSync()
	backup := r.backup()
	r.deliver(2)
	a.mustSync()
	ctx := context.Background()

	seal := func(c *command.Command, by *keys.SecretKey) []byte {
		b, _, err := entry.Seal(c, by, r.userKey.Public(), user, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	restoration := func(sn *mailstore.Snapshot) *command.Command {
		state, err := mailstore.EncodeSnapshot(sn)
		if err != nil {
			t.Fatal(err)
		}
		d := sha256.Sum256(state)
		return &command.Command{Kind: command.Restoration, Position: sn.Position, Digest: d[:],
			Base: &command.Head{Pos: 0, Hash: make([]byte, 32)}, Body: state}
	}
	// As entries: a Body, then a Restoration of a state without the mail.
	empty, err := mailstore.Open(t.TempDir()+"/empty.db", mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	pos := uint64(5)
	if _, err := r.spool.Append(ctx, user, [][]byte{seal(&command.Command{Kind: command.Body, Body: message(99)}, r.spoolKey)}); err != nil {
		t.Fatal(err)
	}
	pos++
	if _, err := empty.Apply(ctx, nil, pos); err != nil {
		t.Fatal(err)
	}
	sn, err := empty.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sn.Chain = make([]byte, 32)
	sn.Superseded = snapshotEntries(t, a)
	if _, err := r.spool.Append(ctx, user, [][]byte{seal(restoration(sn), r.spoolKey)}); err != nil {
		t.Fatal(err)
	}
	before := a.dump()
	a.mustSync()
	st := a.s.Status()
	if st.Misuse == "" || st.Position != 7 {
		t.Errorf("status %+v: want the spool key's misuse shown and position 7", st)
	}
	for _, d := range mailstore.Diff(before, a.dump(), 10) {
		if !strings.HasPrefix(d, "position") && !strings.HasPrefix(d, "entries seen") {
			t.Errorf("the forged entries changed the mailbox: %v", d)
		}
	}

	// As the newest checkpoint, after a rollback: the spool's signature is
	// not trusted for checkpoints.
	r.restore(backup)
	r.deliver(1)
	mine, err := a.ms.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mine.Superseded, mine.Entries = mine.Entries, nil
	mine.Position = 4
	mine.Chain = make([]byte, 32)
	for i := range mine.Messages {
		mine.Messages[i].Body = 1
	}
	forged := seal(restoration(mine), r.spoolKey)
	if _, err := r.store.Compact(ctx, user, spool.Checkpoint{Pos: 4, Data: forged}, []uint64{1, 2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	before = a.dump()
	if err := a.sync(); err == nil || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("sync after the rollback with a forged restoration: %v, want the rollback alarm", err)
	}
	if d := mailstore.Diff(before, a.dump(), 5); d != nil {
		t.Fatalf("the device changed: %v", d)
	}
}

// snapshotEntries is the device's applied entry list.
func snapshotEntries(t *testing.T, d *device) []byte {
	t.Helper()
	sn, err := d.ms.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(sn.Entries)
}

// TestStaleRestoration: a restoration the user's key signed, served at a
// position other than right after its state, is rejected and changes
// nothing (it could only undo what came between).
func TestStaleRestoration(t *testing.T) {
	t.Parallel()
	r, a, _ := restoredOnce(t)
	ctx := context.Background()
	sn, err := a.ms.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.deliver(2) // the state is now two entries behind
	state, err := mailstore.EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(state)
	c := &command.Command{Kind: command.Restoration, Position: sn.Position, Digest: d[:],
		Base: &command.Head{Pos: 3, Hash: make([]byte, 32)}, Body: state}
	b, _, err := entry.Seal(c, r.userKey, r.userKey.Public(), user, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Append(ctx, user, [][]byte{b}); err != nil {
		t.Fatal(err)
	}
	a.mustSync()
	rej, err := a.ms.Rejected(ctx, 1)
	if err != nil || len(rej) != 1 || !strings.Contains(rej[0].Detail, "stale") {
		t.Fatalf("rejections %+v (%v), want the restoration rejected as stale", rej, err)
	}
	if n := len(a.dump().Messages); n != 8 {
		t.Errorf("%d messages after the stale restoration, want the 8 delivered", n)
	}
}

// liar is the device's spool client with every read's chain claims altered
// by lie, as a proxy on the way could.
type liar struct {
	*api.Client
	lie func(*spool.LogRead)
}

func (l liar) ReadLog(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) (spool.LogRead, error) {
	lr, err := l.Client.ReadLog(ctx, after, maxCount, maxBytes, wait)
	if err == nil {
		l.lie(&lr)
	}
	return lr, err
}

// TestRecoverChecksTheChain: a recovery reads the restored log as a sync
// does: answers without the chain hashes, or whose entries do not hash to
// the head hash they claim, are refused with the failure package chain
// names for them (the words of a sync's alarm), and nothing is written.
func TestRecoverChecksTheChain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lie  func(*spool.LogRead)
		want chain.Kind
	}{
		{"hashes stripped", func(lr *spool.LogRead) { lr.Chained = false }, chain.Unchained},
		{"head hash altered", func(lr *spool.LogRead) { lr.HeadHash[0] ^= 1 }, chain.HeadMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, a := restored(t)
			ctx := context.Background()
			head, err := r.store.Head(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			before := a.dump()
			_, err = Recover(ctx, Config{User: user, UserKey: r.userKey, SpoolKey: r.spoolKey.Public(),
				Source: liar{a.client, tc.lie}, Store: a.ms, Logger: r.quiet})
			var f *chain.Failure
			if !errors.As(err, &f) || f.Kind != tc.want {
				t.Fatalf("recover: %v; want a chain failure of kind %q", err, tc.want)
			}
			if now, err := r.store.Head(ctx, user); err != nil || now != head {
				t.Errorf("the spool's head is %d (%v) after the refused recovery; want %d, nothing written", now, err, head)
			}
			if d := mailstore.Diff(before, a.dump(), 5); d != nil {
				t.Errorf("the device changed: %v", d)
			}
		})
	}
}
