package syncer

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
)

// duringSource is the spool as a device sees it, which, once armed, calls
// fetching at the second read after it (the first is the read that finds
// the log compacted; the next ones fetch the checkpoint's bodies, inside
// the restore), and tells appended when this device appends meanwhile.
type duringSource struct {
	StoreSource
	mu       sync.Mutex
	armed    bool
	reads    int
	fetching func()
	appended chan struct{} // closed at the first append while armed
}

func (d *duringSource) arm(fetching func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.armed, d.reads, d.fetching = true, 0, fetching
	d.appended = make(chan struct{})
}

func (d *duringSource) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	d.mu.Lock()
	var hook func()
	if d.armed {
		if d.reads++; d.reads == 2 {
			hook, d.fetching = d.fetching, nil
		}
	}
	d.mu.Unlock()
	if hook != nil {
		hook()
	}
	return d.StoreSource.ReadLog(ctx, after, n, b, wait)
}

func (d *duringSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	d.mu.Lock()
	if d.armed && d.appended != nil {
		close(d.appended)
		d.appended = nil
	}
	d.mu.Unlock()
	return d.StoreSource.AppendAt(ctx, user, head, batch)
}

// queueSignal is the device's store, which says when a change is first
// queued (Enqueue entered), and which runs between the restore's steps,
// once its state is staged and its bodies stored, betweenSteps (if set):
// to kill the device there.
type queueSignal struct {
	*mailstore.Store
	once         sync.Once
	entered      chan struct{}
	betweenSteps func() error
}

func (q *queueSignal) Enqueue(ctx context.Context, id command.ID, c *command.Command) (*mailstore.Result, error) {
	q.once.Do(func() { close(q.entered) })
	return q.Store.Enqueue(ctx, id, c)
}

func (q *queueSignal) StageRestoreFrom(ctx context.Context, r io.Reader, check func(*mailstore.Restored) error, fetch mailstore.BodyFetcher) (*mailstore.StagedRestore, error) {
	st, err := q.Store.StageRestoreFrom(ctx, r, check, fetch)
	if err != nil || q.betweenSteps == nil {
		return st, err
	}
	if err := q.betweenSteps(); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

// copyDB copies a store's files into dir, as a process killed now leaves
// them, and returns the copy's path.
func copyDB(t *testing.T, path, dir string) string {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil && !(suffix != "" && errors.Is(err, os.ErrNotExist)) {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "copy.db"+suffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "copy.db")
}

// flagEntries counts the entries of the log after pos that set \Flagged
// on id.
func (r *rig) flagEntries(t *testing.T, after uint64, id command.ID) int {
	t.Helper()
	lr, err := StoreSource{Store: r.log, User: "alice"}.ReadLog(context.Background(), after, 10000, 1<<30, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range lr.Entries {
		o, err := entry.Open(e.Data, r.user, "alice", r.user.Public(), r.spool.Public())
		if err != nil {
			t.Fatalf("entry %d: %v", e.Pos, err)
		}
		if o.Cmd.Kind == command.SetFlags && slices.Contains(o.Cmd.IDs, id) && slices.Contains(o.Cmd.Flags, `\Flagged`) {
			n++
		}
	}
	return n
}

// TestChangeDuringRestore: a device behind a compaction (it holds the
// first 5 of 155 deliveries) restores from the checkpoint, and while the
// restore fetches its bodies, held up for longer than Config.DrainWait, a
// mail client's flag change on a message it holds (Submit, as the IMAP
// server calls it) is queued once DrainWait is over: Submit returns, and
// sessions hear the change, before they hear the restore's changes; so
// are a message appended and then flagged. (A restore that ends within
// DrainWait is waited for: TestChangeWaitsForRestore.) After the restore the
// changes are in effect, sent once: the two messages alone are flagged,
// the appended one is there once, the log holds one entry of each flag
// change, and a new device shows the same state. Killed
// between the restore's steps, right after the change was answered, the
// device started again from what the kill left restores again and sends
// the change once too.
func TestChangeDuringRestore(t *testing.T) {
	t.Parallel()
	for _, kill := range []bool{false, true} {
		name := "completed"
		if kill {
			name = "killed between steps"
		}
		t.Run(name, func(t *testing.T) { changeDuringRestore(t, kill) })
	}
}

// restoringDevice delivers 5 messages and opens device b's store, seen
// through queueSignal, with a duringSource on the rig's log.
func restoringDevice(t *testing.T, r *rig) (*duringSource, *mailstore.Store, *queueSignal) {
	t.Helper()
	for i := 0; i < 5; i++ {
		r.deliver(r.spool, msg(i))
	}
	src := &duringSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	ms, err := mailstore.Open(filepath.Join(r.dir, "b.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	return src, ms, &queueSignal{Store: ms, entered: make(chan struct{})}
}

func changeDuringRestore(t *testing.T, kill bool) {
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, ms, store := restoringDevice(t, r)
	var mu sync.Mutex
	var events []string
	b, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: store,
		BatchCount: 50, CheckpointMin: -1, Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond,
		DrainWait: 100 * time.Millisecond,
		OnApplied: func(res *mailstore.Result) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case slices.ContainsFunc(res.Changes, func(c mailstore.Change) bool { return c.Pos == 155 }):
				events = append(events, "restored")
			case slices.ContainsFunc(res.Changes, func(c mailstore.Change) bool { return c.Kind == mailstore.MessageAdded }):
				events = append(events, "message appended")
			case slices.ContainsFunc(res.Changes, func(c mailstore.Change) bool { return c.Kind == mailstore.FlagsChanged }):
				events = append(events, "flag change shown")
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	syncAll(t, b)
	mu.Lock()
	events = nil // the first deliveries' changes
	mu.Unlock()
	_, held := inbox(t, ms)
	target := held[2].ID

	a, _ := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	a.cfg.CheckpointTail = -1 // as if started after it applied the flag change below
	// The entry after b's position is one the checkpoint will not keep (a
	// flag change, and a keeps no tail of them): b is behind the
	// compaction, and rebuilds.
	r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{held[0].ID}})
	for i := 6; i < 155; i++ {
		r.deliver(r.spool, msg(i))
	}
	syncAll(t, a)
	if _, pos, err := a.WriteCheckpoint(ctx); err != nil || pos != 155 {
		t.Fatalf("checkpoint: at %d, %v; want 155", pos, err)
	}

	type submitted struct {
		outs []mailstore.Outcome
		err  error
	}
	done := make(chan submitted, 1)
	appended := []byte("Subject: appended during the restore\r\n\r\nx\r\n")
	var mine command.ID
	flag := &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{target}}
	src.arm(func() {
		go func() {
			outs, err := b.Submit(ctx, flag)
			if err == nil {
				// A message appended, then flagged, during the restore.
				var o []mailstore.Outcome
				if o, err = b.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "INBOX", Date: 1, Body: appended}); err == nil {
					if len(o) != 1 || len(o[0].Placed) != 1 {
						t.Errorf("APPEND during the restore: %+v", o)
					} else {
						mine = o[0].Placed[0].ID
						_, err = b.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{mine}})
					}
				}
			}
			mu.Lock()
			events = append(events, "submit returned")
			mu.Unlock()
			done <- submitted{outs, err}
		}()
		select {
		case <-store.entered:
		case <-src.appended:
			t.Error("a change made during the restore was appended to the spool: it is answered once the restore ends and the log is read")
		}
		// The restore is held until the client's three changes are
		// answered.
		res := <-done
		done <- res
	})
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runDone := make(chan error, 1)
	var copied string
	if kill {
		store.betweenSteps = func() error {
			res := <-done
			done <- res
			copied = copyDB(t, ms.Path(), t.TempDir())
			stopRun()
			return runCtx.Err()
		}
	}
	go func() { runDone <- b.Run(runCtx) }()
	res := <-done
	done <- res
	if res.err != nil || len(res.outs) != 1 || res.outs[0].Status != mailstore.Applied {
		t.Fatalf("the flag change during the restore: %+v, %v; want applied", res.outs, res.err)
	}

	check := func(dev *Syncer, dms *mailstore.Store) {
		t.Helper()
		var head uint64
		waitFor(t, time.Minute, "the device at the spool's head with an empty queue", func() bool {
			head, _ = r.log.Head(ctx, "alice")
			st := dev.Status()
			return st.Restores == 1 && st.Queued == 0 && st.Position == head
		})
		if n := r.flagEntries(t, 155, target); n != 1 {
			t.Fatalf("the log holds %d entries of the flag change, want 1", n)
		}
		_, msgs := inbox(t, dms)
		flagged, copies := 0, 0
		for _, m := range msgs {
			if slices.Contains(m.Flags, `\Flagged`) {
				flagged++
				if m.ID != target && m.ID != mine {
					t.Fatalf("message %s is flagged, which no one flagged", m.ID)
				}
			}
			if string(m.Raw) == string(appended) {
				copies++
			}
		}
		if flagged != 2 || copies != 1 {
			t.Fatalf("after the restore, %d messages flagged and %d copies of the message appended during it: want 2 and 1", flagged, copies)
		}
		if n := r.flagEntries(t, 155, mine); n != 1 {
			t.Fatalf("the log holds %d entries flagging the message appended during the restore, want 1", n)
		}
		c, msc := r.device("c", nil, nil)
		c.cfg.CheckpointMin = -1
		syncAll(t, c)
		sameState(t, dms, msc)
	}
	if !kill {
		check(b, ms)
		stopRun()
		if err := <-runDone; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"flag change shown", "message appended", "flag change shown"}; len(events) < 5 || !slices.Equal(events[:3], want) ||
			!slices.Contains(events[3:5], "restored") || !slices.Contains(events[3:5], "submit returned") {
			t.Fatalf("events %q: want the changes made during the restore shown, and Submit returned, before the restore's changes", events)
		}
		return
	}
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if b.Status().Restores != 0 {
		t.Fatal("the device killed between the restore's steps restored")
	}
	mu.Lock()
	if want := []string{"flag change shown", "message appended", "flag change shown", "submit returned"}; !slices.Equal(events, want) {
		t.Fatalf("events %q before the kill, want %q", events, want)
	}
	mu.Unlock()
	ms2, err := mailstore.Open(copied, mimeform.Parser{})
	if err != nil {
		t.Fatalf("opening what the kill left: %v", err)
	}
	defer ms2.Close()
	if n, err := ms2.QueueLen(ctx); err != nil || n != 3 {
		t.Fatalf("what the kill left queues %d changes (%v), want the three made during the restore", n, err)
	}
	b2, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: ms2, CheckpointMin: -1, Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, b2)
	defer stop()
	check(b2, ms2)
}

// TestChangeWaitsForRestore: a device a few entries behind another
// device's checkpoint (mail it lacks was delivered and expunged, and its
// body compacted away) rebuilds from it, and while the restore fetches its bodies a delivery lands after
// the checkpoint and a mail client appends to INBOX. The APPEND waits for
// the restore (it ends well within Config.DrainWait) and goes to the
// spool: the log puts it after the delivery, and the client is told the
// UID the log gives it, under INBOX's UIDVALIDITY as every device shows
// it. Queued instead, as before, it took the delivery's UID on this device
// and the log's order then cost INBOX a new UIDVALIDITY here, which makes
// every client fetch the mailbox again.
func TestChangeWaitsForRestore(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	src, ms, store := restoringDevice(t, r)
	b, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: store,
		BatchCount: 50, CheckpointMin: -1, Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond,
		DrainWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	syncAll(t, b)
	mb, _ := inbox(t, ms)
	a, _ := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	// Mail delivered and expunged after b's position: its body is the
	// hole that makes b rebuild.
	_, gone := r.seal(r.spool, msg(5))
	r.seal(r.user, &command.Command{Kind: command.Expunge, IDs: []command.ID{gone}})
	for i := 6; i < 154; i++ {
		r.deliver(r.spool, msg(i))
	}
	syncAll(t, a)
	if _, pos, err := a.WriteCheckpoint(ctx); err != nil || pos != 155 {
		t.Fatalf("checkpoint: at %d, %v; want 155", pos, err)
	}

	type submitted struct {
		outs []mailstore.Outcome
		err  error
	}
	done := make(chan submitted, 1)
	src.arm(func() {
		r.deliver(r.spool, msg(155))
		go func() {
			outs, err := b.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "INBOX", Date: 1,
				Body: []byte("Subject: appended during the restore\r\n\r\nx\r\n")})
			done <- submitted{outs, err}
		}()
		// Queued, the change is in the store at once; the restore goes
		// on after a while either way.
		select {
		case <-store.entered:
		case <-time.After(500 * time.Millisecond):
		}
	})
	stop := run(t, b)
	defer stop()
	res := <-done
	select {
	case <-store.entered:
		t.Error("the APPEND made during a short restore was queued, not appended")
	default:
	}
	if res.err != nil || len(res.outs) != 1 || res.outs[0].Status != mailstore.Applied || len(res.outs[0].Placed) != 1 {
		t.Fatalf("the APPEND during the restore: %+v, %v; want applied, one message placed", res.outs, res.err)
	}
	p := res.outs[0].Placed[0]
	if p.UID != 156 || p.UIDValidity != mb.UIDValidity {
		t.Fatalf("the APPEND during the restore was told UID %d under UIDVALIDITY %d; want 156 (after the delivery's 155) under %d, INBOX's in the log",
			p.UID, p.UIDValidity, mb.UIDValidity)
	}
	waitFor(t, time.Minute, "the device at the spool's head", func() bool {
		head, _ := r.log.Head(ctx, "alice")
		return b.Status().Position == head && b.Status().Restores == 1
	})
	if now, _ := inbox(t, ms); now.UIDValidity != mb.UIDValidity {
		t.Fatalf("INBOX shows UIDVALIDITY %d after the restore, want %d as before", now.UIDValidity, mb.UIDValidity)
	}
}
