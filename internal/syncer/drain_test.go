package syncer

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// TestSubmitWaitsForQueueToDrain: an append fails (the spool down for a
// moment), so its change is queued; the spool answers again. The change
// the client makes next, while the first still waits, is appended once
// the loop has sent the queue (Config.DrainWait), not queued behind it:
// queued, it would be shown before the log has it (a message it adds can
// then lose its UIDs to a delivery the log puts first), and a client that
// keeps making changes would keep the device queueing.
func TestSubmitWaitsForQueueToDrain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	for i := range 3 {
		r.deliver(r.spool, msg(i))
	}
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	var log syncLog
	a, msa := r.offlineDevice("a", src, time.Hour, &log)
	a.cfg.DrainWait = 30 * time.Second // far beyond the loop's send
	syncAll(t, a)
	_, held := inbox(t, msa)
	flag := func(i int, f string) *command.Command {
		return &command.Command{Kind: command.SetFlags, Flags: []string{f}, IDs: []command.ID{held[i].ID}}
	}
	src.set(true)
	submitOne(t, a, flag(0, `\Flagged`))
	if q := a.Status().Queued; q != 1 {
		t.Fatalf("%d changes queued after an append to a spool that is down, want 1", q)
	}
	src.set(false)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type submitted struct {
		outs []mailstore.Outcome
		err  error
	}
	done := make(chan submitted, 1)
	go func() {
		outs, err := a.Submit(ctx, flag(1, `\Seen`))
		done <- submitted{outs, err}
	}()
	stop := run(t, a)
	defer stop()
	res := <-done
	if res.err != nil || len(res.outs) != 1 || res.outs[0].Status == mailstore.Rejected {
		t.Fatalf("second change: %+v, %v", res.outs, res.err)
	}
	if n := strings.Count(log.String(), "changes queued until the spool has them"); n != 1 {
		t.Errorf("changes were queued %d times, want once (the first change, made while the spool was down); the log:\n%s", n, log.String())
	}
	// Appended, the second change is in the log where its outcome says,
	// after the first.
	head, err := r.log.Head(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if pos := res.outs[0].Pos; pos != 5 || head != 5 {
		t.Errorf("second change at %d with the log's head at %d, want both 5 (the first change at 4)", pos, head)
	}
	waitFor(t, 10*time.Second, "the queue empty and the device at the head", func() bool {
		st := a.Status()
		return st.Queued == 0 && st.Position == 5
	})
}

// refusingSource is offlineSource whose appends the spool refuses as too
// large while refuse is set: a queued change that cannot be sent.
type refusingSource struct {
	*offlineSource
	refuse atomic.Bool
}

func (f *refusingSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	if f.refuse.Load() {
		return 0, fmt.Errorf("appending %d entries: %w", len(batch), spool.ErrTooLarge)
	}
	return f.offlineSource.AppendAt(ctx, user, head, batch)
}

// TestSubmitQueuesWhenQueueStuck: the spool answers but refuses the queued
// change (too large for it, until its operator raises a limit), so the
// queue cannot drain. A change made meanwhile is queued as soon as the
// loop's send fails, not after the whole DrainWait: every change would
// otherwise wait it out.
func TestSubmitQueuesWhenQueueStuck(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	for i := range 3 {
		r.deliver(r.spool, msg(i))
	}
	src := &refusingSource{offlineSource: &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}}
	a, msa := r.offlineDevice("a", src, 10*time.Millisecond, nil)
	a.cfg.DrainWait = time.Hour
	syncAll(t, a)
	_, held := inbox(t, msa)
	src.set(true)
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{held[0].ID}})
	src.refuse.Store(true)
	src.set(false)
	stop := run(t, a)
	defer stop()
	waitFor(t, 20*time.Second, "the loop reading the log again", func() bool { return a.Status().Connected })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	outs, err := a.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{held[1].ID}})
	if err != nil || len(outs) != 1 || outs[0].Status == mailstore.Rejected {
		t.Fatalf("second change: %+v, %v", outs, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the second change waited out its 30 s for a queue that cannot drain")
	}
	if q := a.Status().Queued; q != 2 {
		t.Errorf("%d changes queued, want 2", q)
	}
}
