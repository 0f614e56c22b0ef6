package syncer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// countingSource counts the entries a device reads.
type countingSource struct {
	StoreSource
	entries int
}

func (c *countingSource) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	lr, err := c.StoreSource.ReadLog(ctx, after, n, b, wait)
	c.entries += len(lr.Entries)
	return lr, err
}

func syncAll(t *testing.T, s *Syncer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
}

func sameState(t *testing.T, a, b *mailstore.Store) {
	t.Helper()
	ctx := context.Background()
	da, err := a.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := mailstore.Diff(da, db, 10); d != nil {
		t.Fatalf("devices differ: %v", d)
	}
}

// churn delivers n messages, then flags, moves and expunges through the
// device's own Submit, and returns the ids still alive.
func churn(t *testing.T, r *rig, s *Syncer, ms *mailstore.Store, n int, seed uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < n; i++ {
		r.deliver(r.spool, msg(i))
	}
	syncAll(t, s)
	stop := run(t, s)
	defer stop()
	_, msgs := inbox(t, ms)
	rng := rand.New(rand.NewPCG(seed, 0))
	ids := make([]command.ID, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	submit := func(c *command.Command) {
		if _, err := s.Submit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	for round := 0; round < 30; round++ {
		pick := []command.ID{ids[rng.IntN(len(ids))], ids[rng.IntN(len(ids))]}
		switch rng.IntN(3) {
		case 0:
			submit(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`, "$Later"}, IDs: pick})
		case 1:
			submit(&command.Command{Kind: command.ClearFlags, Flags: []string{`\Seen`}, IDs: pick})
		case 2:
			submit(&command.Command{Kind: command.Copy, Mailbox: "Archive", IDs: pick})
		}
	}
	submit(&command.Command{Kind: command.Move, Mailbox: "Trash", IDs: ids[:n/4]})
	submit(&command.Command{Kind: command.Expunge, IDs: ids[n/4 : n/2]})
}

func TestCompactionNewAndOfflineDevices(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	// b syncs the first deliveries, then goes offline.
	b, msb := r.device("b", nil, nil)
	for i := 0; i < 5; i++ {
		r.deliver(r.spool, msg(1000+i))
	}
	syncAll(t, b)
	churn(t, r, a, msa, 60, 1)
	syncAll(t, a)
	headBefore, _ := r.log.Head(ctx, "alice")

	stats, pos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pos != headBefore || stats.Deleted == 0 {
		t.Fatalf("checkpoint at %d deleted %d entries; want position %d and deletions", pos, stats.Deleted, headBefore)
	}
	// More traffic after the checkpoint.
	r.deliver(r.spool, msg(2000))
	syncAll(t, a)

	// A new device rebuilds from the checkpoint and reads only live entries.
	src := &countingSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	c, msc := r.device("c", src, nil)
	syncAll(t, c)
	sameState(t, msa, msc)
	if st := c.Status(); st.Restores != 1 {
		t.Errorf("new device restored %d times, want 1", st.Restores)
	}
	head, _ := r.log.Head(ctx, "alice")
	sn, err := msa.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if limit := len(sn.Keep()) + 2*int(head-pos); src.entries > limit {
		t.Errorf("new device read %d entries of a %d-entry history; the live mailbox needs %d: not proportional to it",
			src.entries, head, limit)
	}

	// The device that was offline across the compaction catches up too.
	syncAll(t, b)
	sameState(t, msa, msb)
	if st := b.Status(); st.Restores != 1 {
		t.Errorf("offline device restored %d times, want 1", st.Restores)
	}

	// A second checkpoint by another device at the same position is stale
	// and harmless.
	if _, _, err := c.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.WriteCheckpoint(ctx); err != nil {
		t.Fatalf("stale checkpoint reported an error: %v", err)
	}
}

// TestNewDeviceReadsFromCheckpoint: a new device rebuilding from a
// checkpoint reads each entry the checkpoint keeps once, then the log from
// the checkpoint's position on, each entry once: no entry after the
// checkpoint before the restore (read again after it), whichever way the
// kept entries are fetched.
func TestNewDeviceReadsFromCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	var ids []command.ID
	for i := range 120 {
		_, id := r.seal(r.spool, msg(i))
		ids = append(ids, id)
	}
	r.seal(r.user, &command.Command{Kind: command.Expunge, IDs: ids[:20]})
	syncAll(t, a)
	_, cpPos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := msa.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 120; i < 150; i++ {
		r.seal(r.spool, msg(i))
	}
	for _, id := range ids[50:55] {
		r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{id}})
	}
	syncAll(t, a)
	head, _ := r.log.Head(ctx, "alice")

	for _, batch := range []int{30, 1000} {
		t.Run(fmt.Sprint(batch), func(t *testing.T) {
			src := &countingSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
			c, msc := r.device(fmt.Sprintf("c%d", batch), src, nil)
			c.cfg.BatchCount = batch
			syncAll(t, c)
			sameState(t, msa, msc)
			if want := len(sn.Keep()) + int(head-cpPos); src.entries != want {
				t.Errorf("new device read %d entries; the checkpoint at %d keeps %d and %d follow it: want %d",
					src.entries, cpPos, len(sn.Keep()), head-cpPos, want)
			}
		})
	}
}

func TestBadCheckpointFallsBackToLog(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		r.deliver(r.spool, msg(i))
	}
	comp, ok := r.log.(spool.Compactor)
	if !ok {
		t.Fatal("the SQLite store is not a Compactor")
	}
	// A checkpoint that is not signed by the user: the spool forging one.
	if _, err := comp.Compact(ctx, "alice", spool.Checkpoint{Pos: 3, Data: []byte("forged state")}, []uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	d, ms := r.device("d", nil, nil)
	syncAll(t, d)
	if st := d.Status(); st.BadCheckpoint != 3 || st.Restores != 0 {
		t.Fatalf("status %+v: want the forged checkpoint rejected", st)
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != 3 {
		t.Fatalf("fell back to the log but INBOX has %d messages, want 3", len(msgs))
	}
	rej, _ := ms.Rejected(ctx, 0)
	if len(rej) == 0 || rej[0].Pos != 3 {
		t.Fatalf("rejections %+v: want the checkpoint at 3 listed", rej)
	}
}

// A change submitted by one device, applied and checkpointed by another
// before the first device reads it back, is still answered: the first
// device rebuilds from the checkpoint and finds its entry there.
func TestSubmitAnsweredAfterRestore(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, first := r.seal(r.spool, msg(0))
	r.deliver(r.spool, msg(1))
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	b, _ := r.device("b", nil, nil)
	b.cfg.CheckpointMin = -1
	b.cfg.CheckpointTail = -1 // as if started after it applied the flag change below
	syncAll(t, a)
	// An entry a has not applied and the checkpoint will not keep (a flag
	// change, and b keeps no tail of them): a is behind the compaction,
	// and rebuilds.
	r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{first}})

	type result struct {
		outs []mailstore.Outcome
		err  error
	}
	done := make(chan result, 1)
	go func() {
		outs, err := a.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "Drafts", Date: 1, Body: []byte("Subject: draft\r\n\r\nx\r\n")})
		done <- result{outs, err}
	}()
	// Wait until the entry is in the log, then let b apply and checkpoint it.
	for {
		if h, _ := r.log.Head(ctx, "alice"); h == 4 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the submitted entry never reached the log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	syncAll(t, b)
	if _, pos, err := b.WriteCheckpoint(ctx); err != nil || pos != 4 {
		t.Fatalf("checkpoint: %d, %v", pos, err)
	}
	stop := run(t, a)
	defer stop()
	res := <-done
	if res.err != nil {
		t.Fatalf("submit: %v", res.err)
	}
	if len(res.outs) != 1 || res.outs[0].Status != mailstore.Applied || len(res.outs[0].Placed) != 1 {
		t.Fatalf("outcome %+v: want applied with the message placed", res.outs)
	}
	drafts, err := msa.MailboxByName(ctx, "Drafts")
	if err != nil {
		t.Fatal(err)
	}
	if p := res.outs[0].Placed[0]; p.Mailbox != drafts.ID || p.UID != 1 || p.UIDValidity != drafts.UIDValidity {
		t.Fatalf("placed %+v: want Drafts UID 1 under its UIDVALIDITY %d", p, drafts.UIDValidity)
	}
	if a.Status().Restores != 1 {
		t.Fatalf("device a restored %d times, want 1", a.Status().Restores)
	}
}

// TestCheckpointOnlyWhenReclaimable runs a device over a log of 1,000
// deliveries alone (CheckpointMin 1,000): every entry holds a live
// message, so a checkpoint would let the spool compact nothing, and none
// is written. A flag change makes the log one entry longer than the live
// messages, and the device writes one.
func TestCheckpointOnlyWhenReclaimable(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, ms := r.device("a", nil, nil)
	a.cfg.CheckpointMin = 1000
	for i := range 1000 {
		r.deliver(r.spool, msg(i))
	}
	stop := run(t, a)
	defer stop()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30 s (status %+v)", what, a.Status())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the 1,000 deliveries applied", func() bool { return a.Status().Position == 1000 })
	// Run looks at whether a checkpoint is due after each step: a read at
	// the head after the last batch is one more.
	r.deliver(r.spool, msg(1000))
	waitFor("the 1,001st delivery applied", func() bool { return a.Status().Position == 1001 })
	if pos, err := spool.CheckpointPos(ctx, r.log, "alice"); err != nil || pos != 0 || a.Status().Checkpoint != 0 {
		t.Fatalf("a checkpoint at position %d (%v) of a log of deliveries alone", pos, err)
	}
	_, msgs := inbox(t, ms)
	if _, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[0].ID}}); err != nil {
		t.Fatal(err)
	}
	waitFor("a checkpoint once the log outnumbers the live messages", func() bool { return a.Status().Checkpoint == 1002 })
}

// TestCloseDeviceReadsOnAfterCheckpoint: device a writes a checkpoint while
// device b is a few entries behind. When those entries hold live messages
// (new mail, which the checkpoint keeps), or hold no message (a flag
// change, which the checkpoint keeps among the newest such entries a
// applied: its tail), the read after b's position has no hole, and b reads
// them instead of rebuilding from the checkpoint: a rebuild reads the
// whole state and queues b's own changes meanwhile, as offline. The older
// flag changes, beyond the tail, are deleted. When the compaction deleted
// one of the entries b lacks (the body of mail expunged, or a flag change
// a keeps no tail of), b rebuilds.
func TestCloseDeviceReadsOnAfterCheckpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		flags    bool // a flag change among the entries b lacks
		expunged bool // mail delivered and expunged among them
		tail     int  // a's Config.CheckpointTail
		lacks    int  // the entries b lacks
		restores int
	}{
		{"new mail", false, false, 5, 6, 0},
		{"a flag change among them", true, false, 5, 7, 0},
		{"mail expunged among them", false, true, 5, 8, 1},
		{"a flag change, without a tail", true, false, -1, 7, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			var ids []command.ID
			for i := range 20 {
				_, id := r.seal(r.spool, msg(i))
				ids = append(ids, id)
			}
			// Entries the checkpoint lets the spool delete: older than
			// the 5 newest flag changes.
			for i := range 10 {
				r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{"$Old"}, IDs: []command.ID{ids[i]}})
			}
			a, msa := r.device("a", nil, nil)
			a.cfg.CheckpointMin = -1
			a.cfg.CheckpointTail = tc.tail
			src := &countingSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
			b, msb := r.device("b", src, nil)
			b.cfg.CheckpointMin = -1
			syncAll(t, b)
			for i := range 6 {
				r.deliver(r.spool, msg(100+i))
			}
			if tc.flags {
				r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{ids[12]}})
			}
			if tc.expunged {
				_, gone := r.seal(r.spool, msg(200))
				r.seal(r.user, &command.Command{Kind: command.Expunge, IDs: []command.ID{gone}})
			}
			syncAll(t, a)
			stats, pos, err := a.WriteCheckpoint(ctx)
			if err != nil || pos != a.Status().Position || pos != 30+uint64(tc.lacks) {
				t.Fatalf("checkpoint: at %d, %v; want at a's position %d, %d", pos, err, a.Status().Position, 30+tc.lacks)
			}
			if stats.Deleted < 5 {
				t.Fatalf("the checkpoint at %d let the spool delete %d entries, want at least the 5 oldest flag changes", pos, stats.Deleted)
			}
			src.entries = 0
			syncAll(t, b)
			if got := b.Status().Restores; got != tc.restores {
				t.Errorf("device b, %d entries behind, restored %d times, want %d", tc.lacks, got, tc.restores)
			}
			if tc.restores == 0 && src.entries != tc.lacks {
				t.Errorf("device b read %d entries, want the %d it lacked", src.entries, tc.lacks)
			}
			if b.Status().Position != pos {
				t.Errorf("device b at %d, want %d", b.Status().Position, pos)
			}
			sameState(t, msa, msb)
			// A new device reads the live bodies and then from the
			// checkpoint on: not the tail.
			src.entries = 0
			c, msc := r.device("c", src, nil)
			c.cfg.CheckpointMin = -1
			syncAll(t, c)
			if _, live := inbox(t, msa); c.Status().Restores != 1 || src.entries != len(live) {
				t.Errorf("a new device restored %d times and read %d entries; want 1 and the %d live bodies", c.Status().Restores, src.entries, len(live))
			}
			sameState(t, msa, msc)
		})
	}
}

// A device rebuilt from a checkpoint at P forgets the entries up to P it
// passed by in a format it did not read: the checkpoint's writer read them,
// and the status report stops telling the user that mail is missing.
// Rejections for other reasons, and such entries past P, stay.
func TestRebuildForgetsUnreadFormats(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	b, msb := r.device("b", nil, nil)
	for i := range 5 {
		r.deliver(r.spool, msg(3000+i))
	}
	syncAll(t, b)
	// As a device built before a format records what it passes by.
	for pos, reason := range map[uint64]string{3: string(mailstore.ReasonUnknownVersion), 4: "entry signature invalid",
		1 << 40: string(mailstore.ReasonUnknownVersion)} {
		if err := msb.RecordRejected(ctx, pos, reason); err != nil {
			t.Fatal(err)
		}
	}
	churn(t, r, a, msa, 20, 2)
	syncAll(t, a)
	if _, _, err := a.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	syncAll(t, b)
	if st := b.Status(); st.Restores != 1 {
		t.Fatalf("the device restored %d times, want 1", st.Restores)
	}
	sameState(t, msa, msb)
	if n, err := msb.RejectedAs(ctx, mailstore.ReasonUnknownVersion); err != nil || n != 1 {
		t.Errorf("%d entries of an unread format still recorded (%v), want 1, the one past the checkpoint", n, err)
	}
	if n, err := msb.RejectedCount(ctx); err != nil || n != 2 {
		t.Errorf("%d rejections in all (%v), want 2", n, err)
	}
}

// cpCounter counts the checkpoints a device uploads.
type cpCounter struct {
	StoreSource
	mu    sync.Mutex
	puts  int
	stale int // of puts, refused as stale
}

func (c *cpCounter) PutCheckpointFrom(ctx context.Context, pos uint64, data *io.SectionReader, keep []uint64) (spool.CompactStats, error) {
	st, err := c.StoreSource.PutCheckpointFrom(ctx, pos, data, keep)
	c.mu.Lock()
	c.puts++
	if errors.Is(err, spool.ErrStaleCheckpoint) {
		c.stale++
	}
	c.mu.Unlock()
	return st, err
}

func (c *cpCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts
}

func (c *cpCounter) staleCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stale
}

// TestIdleDeviceLeavesCheckpoint: the device making the changes writes
// the checkpoints; another device of the user, which only reads them,
// writes one only when twice as many entries follow the last (no device
// that changes things writes any). Every device crossed the line at the
// same entry and wrote a checkpoint: beside a device under the stress
// mix, an idle one sealed 32 in 60 s, and the spool refused 19 as stale.
func TestIdleDeviceLeavesCheckpoint(t *testing.T) {
	t.Parallel()
	const min = 20
	for _, busyWrites := range []bool{true, false} {
		r := newRig(t)
		busyMin := min
		if !busyWrites {
			busyMin = -1 // a device that writes none (cspool sync --checkpoint-min -1)
		}
		busySrc := &cpCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
		idleSrc := &cpCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
		busy, _, _, msgs, ctx := startDevice(t, r, 1, Config{Source: busySrc, CheckpointMin: busyMin})
		idle, _ := r.deviceWith("idle", Config{Source: idleSrc, CheckpointMin: min})
		t.Cleanup(run(t, idle))
		var last uint64
		for i := range 3 * min {
			out, err := busy.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$k%d", i)}, IDs: []command.ID{msgs[0].ID}})
			if err != nil || len(out) != 1 {
				t.Fatalf("change %d: %v, %v", i, out, err)
			}
			last = busy.Status().Position
		}
		if err := idle.WaitApplied(ctx, last); err != nil {
			t.Fatal(err)
		}
		// The idle device's loop checks after each step; let it.
		if busyWrites {
			time.Sleep(300 * time.Millisecond)
		} else {
			waitFor(t, 20*time.Second, "a checkpoint by the idle device", func() bool { return idleSrc.count() > 0 })
		}
		switch b, i := busySrc.count(), idleSrc.count(); {
		case busyWrites && (b == 0 || i != 0):
			t.Errorf("the busy device wrote %d checkpoints and the idle one %d, want some and none", b, i)
		case !busyWrites && (b != 0 || i == 0):
			t.Errorf("with a busy device that writes none, the idle one wrote %d checkpoints over %d entries, want some", i, 3*min)
		}
	}
}

// TestBusyDevicesTakeTurns: two devices of one user both making changes
// (CheckpointMin 20, 240 changes in turns). The device that wrote the
// newest checkpoint writes the next one; the other waits a quarter more,
// and has mostly read it by then. Both crossed the line at the same entry
// and both sealed and uploaded a checkpoint, one of them refused as stale:
// every second upload was wasted.
func TestBusyDevicesTakeTurns(t *testing.T) {
	t.Parallel()
	const min, changes = 20, 240
	r := newRig(t)
	srcA := &cpCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	srcB := &cpCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, _, _, msgs, ctx := startDevice(t, r, 1, Config{Source: srcA, CheckpointMin: min})
	b, _ := r.deviceWith("b", Config{Source: srcB, CheckpointMin: min})
	t.Cleanup(run(t, b))
	if err := b.WaitApplied(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i := range changes {
		d := a
		if i%2 == 1 {
			d = b
		}
		out, err := d.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$k%d", i)}, IDs: []command.ID{msgs[0].ID}})
		if err != nil || len(out) != 1 {
			t.Fatalf("change %d: %v, %v", i, out, err)
		}
	}
	head, _ := r.log.Head(ctx, "alice")
	if err := a.WaitApplied(ctx, head); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitApplied(ctx, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // each loop checks after its step; let them
	stored := srcA.count() + srcB.count() - srcA.staleCount() - srcB.staleCount()
	stale := srcA.staleCount() + srcB.staleCount()
	// The first checkpoint has no writer before it: both may try; after
	// it, a loop slowed down (a loaded machine) may still let the other
	// device pass its quarter before it read the new checkpoint, now and
	// then. Both wrote at every line before: 12 of 24 stale.
	if stored < changes/min-2 || stale > changes/min/3 {
		t.Errorf("%d checkpoints stored and %d refused as stale (a %d/%d, b %d/%d) over %d changes; want about %d stored and at most %d stale",
			stored, stale, srcA.count(), srcA.staleCount(), srcB.count(), srcB.staleCount(), changes, changes/min, changes/min/3)
	}
}

// TestCheckpointAfterMailDeleted: a device holding 300 messages (the
// default CheckpointMin of 1,000) deletes 120 of them in one EXPUNGE. A
// tenth of its bodies are gone, so it writes a checkpoint at once and the
// spool frees their room, where it waited for 1,000 entries and more than
// the 180 messages left (a user at the quota who deleted mail got no room
// back). Another device, which deleted nothing, writes none; 30 more
// deleted (not a tenth of what is left) bring no second one.
func TestCheckpointAfterMailDeleted(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	src := &cpCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	otherSrc := &cpCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, _, _, msgs, ctx := startDevice(t, r, 300, Config{Source: src})
	other, _ := r.deviceWith("other", Config{Source: otherSrc})
	t.Cleanup(run(t, other))
	ids := make([]command.ID, 0, 150)
	for _, m := range msgs[:150] {
		ids = append(ids, m.ID)
	}
	if _, err := a.Submit(ctx, &command.Command{Kind: command.Expunge, IDs: ids[:120]}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "a checkpoint after the EXPUNGE", func() bool { return a.Status().Checkpoint == 301 })
	if lr, err := r.log.Read(ctx, "alice", 0, 1000, 1<<30); err != nil || len(lr) != 181 {
		t.Fatalf("the log holds %d entries (%v) after the checkpoint, want the 180 live messages and the EXPUNGE", len(lr), err)
	}
	if _, err := a.Submit(ctx, &command.Command{Kind: command.Expunge, IDs: ids[120:]}); err != nil {
		t.Fatal(err)
	}
	if err := other.WaitApplied(ctx, 302); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // each loop checks after its step; let them
	if n, o := src.count(), otherSrc.count(); n != 1 || o != 0 {
		t.Errorf("the deleting device wrote %d checkpoints and the other %d; want 1 and none", n, o)
	}
}
