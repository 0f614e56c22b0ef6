package hostile

import (
	"bytes"
	"context"
	"crypto/rand"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"cspool/internal/command"
	"cspool/internal/spool"
)

// TestOldCheckpoint: after a second checkpoint compacted away the flag
// change and the expunge written since the first, the spool serves the
// first checkpoint again (on GET checkpoint and as Cspool-Checkpoint) to a
// new device and to one that stopped at the first checkpoint's position.
// Rebuilt from it, they would show the expunged message again; the entries
// that would bring them up to date are gone, and the gap is what they see.
// The operator kept a copy of the log before compaction, so it can also
// serve the old entries the old checkpoint needs; without that copy a new
// device cannot even rebuild from the old checkpoint.
func TestOldCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, b := r.device("a"), r.device("b")
	r.deliver(6)
	a.mustSync(t)
	msgs := a.inbox(t)
	a.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[0].ID}})
	if _, pos, err := a.s.WriteCheckpoint(ctx); err != nil || pos != 7 {
		t.Fatalf("first checkpoint: position %d, %v: want 7", pos, err)
	}
	old, err := r.store.LatestCheckpoint(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	b.mustSync(t) // b stops at 7
	backup, err := r.store.Read(ctx, user, 0, 100, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	a.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[1].ID}})
	a.submit(t, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[2].ID}})
	r.deliver(2) // 10, 11
	a.mustSync(t)
	if _, pos, err := a.s.WriteCheckpoint(ctx); err != nil || pos != 11 {
		t.Fatalf("second checkpoint: position %d, %v: want 11", pos, err)
	}
	if left, err := r.store.Read(ctx, user, 7, 10, 1<<20); err != nil || len(left) != 2 || left[0].Pos != 10 {
		t.Fatalf("after compaction, entries after 7: %v, %v: want only 10 and 11", left, err)
	}

	// Without the copy: the new device cannot rebuild. Once may be a race
	// with a newer checkpoint; the same checkpoint served again is an
	// alarm.
	n := r.device("n")
	r.proxy.Set("n", &View{Checkpoint: &old})
	err = n.sync(t)
	if err == nil || !strings.Contains(err.Error(), "entry 3 is gone from the spool") || n.s.Status().Alarm != "" || n.position(t) != 0 {
		t.Fatalf("device n, old checkpoint without its bodies: %v, alarm %q, position %d: want the restore refused (entry 3 gone), no alarm yet, nothing applied",
			err, n.s.Status().Alarm, n.position(t))
	}
	alarmed(t, n, n.sync(t), "the spool serves the checkpoint at position 7 as its newest, but fetching message bodies: entry 3 is gone from the spool", 0, nil)

	c := r.device("c")
	r.proxy.Set("b", &View{Checkpoint: &old})
	r.proxy.Set("c", &View{Checkpoint: &old, Rewrite: Backfill(backup, old.Pos)})
	bBefore := b.state(t)
	alarmed(t, b, b.sync(t), "skipped from position 7 to 10", 7, bBefore)
	err = c.sync(t)
	if got := c.s.Status().Restores; got != 1 {
		t.Fatalf("device c: %d restores (%v): want 1, from the old checkpoint", got, err)
	}
	alarmed(t, c, err, "skipped from position 7 to 10", 7, nil)
	if n := len(c.inbox(t)); n != 6 {
		t.Fatalf("device c: %d messages: want the old checkpoint's 6 and nothing applied after it", n)
	}
}

// TestReplayAfterCheckpoint: a device rebuilt from a checkpoint has never
// applied the entries the checkpoint covers; the spool replays one of them
// (kept from before compaction) after the checkpoint, to undo the user's
// later change. The checkpoint carries the ids of the entries it covers.
func TestReplayAfterCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a := r.device("a")
	r.deliver(3)
	a.mustSync(t)
	id := a.inbox(t)[0].ID
	a.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}})
	a.submit(t, &command.Command{Kind: command.ClearFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}})
	backup, err := r.store.Read(ctx, user, 0, 100, 1<<30)
	if err != nil || len(backup) != 5 {
		t.Fatalf("log before compaction: %d entries, %v: want 5", len(backup), err)
	}
	if _, pos, err := a.s.WriteCheckpoint(ctx); err != nil || pos != 5 {
		t.Fatalf("checkpoint: position %d, %v: want 5", pos, err)
	}
	c := r.device("c")
	r.proxy.Set("c", &View{Rewrite: func(h []spool.Entry) []spool.Entry {
		return append(slices.Clone(h), spool.Entry{Pos: 6, Data: backup[3].Data})
	}})
	err = c.sync(t)
	if got := c.s.Status().Restores; got != 1 {
		t.Fatalf("device c: %d restores (%v): want 1", got, err)
	}
	alarmed(t, c, err, "entry 6 replays entry 4", 5, nil)
	for _, m := range c.inbox(t) {
		if slices.Contains(m.Flags, `\Flagged`) {
			t.Fatalf("the replayed command flagged message %s again", m.ID)
		}
	}
}

// TestRejectedCheckpointNotFetchedAgain: to a device that is up to date,
// the spool gives a head and a checkpoint past its position with every
// read, a new position each time, entries withheld, and serves 1 MiB of
// random bytes as the checkpoint. The first is downloaded and rejected;
// the next is not downloaded until Config.RecheckPermanent has passed
// (the status says so, no alarm, nothing applied), where each read had
// the device download another; once the spool answers honestly, the
// device reads on.
func TestRejectedCheckpointNotFetchedAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(3)
	d.mustSync(t)
	before := d.state(t)
	garbage := make([]byte, 1<<20)
	rand.Read(garbage)
	var reads atomic.Uint64
	r.proxy.Set("d", &View{Checkpoint: &spool.Checkpoint{Pos: 4, Data: garbage}, Headers: func(h http.Header) {
		p := strconv.FormatUint(4+reads.Add(1), 10)
		h.Set("Cspool-Head", p)
		h.Set("Cspool-Checkpoint", p)
	}})
	var err error
	for range 3 {
		err = d.sync(t)
	}
	if n := d.s.Status().Rejected; n != 1 {
		t.Errorf("%d checkpoints rejected after 3 syncs: want the first alone, the others not downloaded", n)
	}
	if err == nil || !strings.Contains(err.Error(), "rejected the one at 4; it tries another in") {
		t.Errorf("third sync: %v: want the pause said", err)
	}
	if a := d.s.Status().Alarm; a != "" {
		t.Errorf("alarm %q: want none", a)
	}
	if d.position(t) != 3 || !bytes.Equal(d.state(t), before) {
		t.Errorf("position %d: want 3, the state unchanged", d.position(t))
	}
	r.proxy.Set("d", nil)
	r.deliver(1)
	d.mustSync(t)
	if d.position(t) != 4 {
		t.Errorf("position %d after an honest read: want 4", d.position(t))
	}
}

// TestOldCheckpointBelowPosition: the spool gives a head and a newest
// checkpoint past a device's position, and serves the device's own older
// checkpoint, below its position. It is rejected as a checkpoint that
// failed validation (nothing restored, no alarm), so it is not downloaded
// again after each read; before, the restore failed with "entry position
// out of order" and was tried again, download and all, at every retry.
func TestOldCheckpointBelowPosition(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	d := r.device("d")
	r.deliver(4)
	d.mustSync(t)
	if _, pos, err := d.s.WriteCheckpoint(ctx); err != nil || pos != 4 {
		t.Fatalf("checkpoint: position %d, %v: want 4", pos, err)
	}
	old, err := r.store.LatestCheckpoint(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	r.deliver(2)
	d.mustSync(t)
	before := d.state(t)
	r.proxy.Set("d", &View{Checkpoint: &old, Headers: func(h http.Header) {
		h.Set("Cspool-Head", "9")
		h.Set("Cspool-Checkpoint", "9")
	}})
	for range 2 {
		d.sync(t)
	}
	st := d.s.Status()
	if st.Alarm != "" || st.BadCheckpoint != 4 || st.Rejected != 1 {
		t.Errorf("alarm %q, bad checkpoint %d, %d rejected: want no alarm, the checkpoint at 4 rejected once", st.Alarm, st.BadCheckpoint, st.Rejected)
	}
	if d.position(t) != 6 || !bytes.Equal(d.state(t), before) {
		t.Errorf("position %d: want 6, the state unchanged", d.position(t))
	}
}
