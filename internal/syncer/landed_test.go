package syncer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/command"
)

// partLandedSource is offlineSource that, armed, lands the first entry of
// the next conditional append of two or more entries alone, on the head
// that append names, just before the append reaches the spool: as an
// earlier request of that entry alone, held up on its way and landing
// late, would (a group whose answer was lost, then queued under its id,
// with a change queued after it). The append is then refused, the first
// of its entries is in the log after the refused head, and the rest is
// not.
type partLandedSource struct {
	*offlineSource
	armed  atomic.Bool
	landed chan uint64 // where the first entry landed alone
}

func (p *partLandedSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	if len(batch) > 1 && p.armed.CompareAndSwap(true, false) {
		pos, err := p.offlineSource.AppendAt(ctx, user, head, batch[:1])
		if err != nil {
			return 0, err
		}
		p.landed <- pos
	}
	return p.offlineSource.AppendAt(ctx, user, head, batch)
}

// TestQueuePartlyLanded: the queue's batch of two changes is refused on
// the head it names because its first change alone landed there from an
// earlier request. The device must neither send that change again (the
// log would hold it twice: a replay alarm) nor take the second as
// appended with it: the second lands once, after the first, and the queue
// empties at the spool's head. Before, a refusal whose next entry was the
// batch's first was taken as the whole batch appended: the second change
// was recorded at a position it never took and stayed queued for as long
// as nothing else came (sendQueue waits for the head it believed in).
func TestQueuePartlyLanded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.spool, msg(0))
	src := &partLandedSource{offlineSource: &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}},
		landed: make(chan uint64, 1)}
	a, msa := r.offlineDevice("a", src, 250*time.Millisecond, nil)
	if _, err := a.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	src.set(true)
	for _, k := range []string{"$One", "$Two"} {
		submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{k}, IDs: []command.ID{msgs[0].ID}})
	}
	if q := a.Status().Queued; q != 2 {
		t.Fatalf("%d queued, want 2", q)
	}
	src.armed.Store(true)
	src.set(false)
	stop := run(t, a)
	defer stop()
	waitFor(t, 30*time.Second, "the queue empty at the spool's head", func() bool {
		head, _ := r.log.Head(ctx, "alice")
		st := a.Status()
		return st.Alarm != "" || (st.Queued == 0 && st.Position == head && head >= 3)
	})
	select {
	case pos := <-src.landed:
		if pos != 2 {
			t.Fatalf("the first change landed alone at %d, want 2", pos)
		}
	default:
		t.Fatal("no batch of two reached the spool: nothing landed alone")
	}
	if st := a.Status(); st.Alarm != "" {
		t.Fatalf("alarm %q, want none", st.Alarm)
	}
	if head, _ := r.log.Head(ctx, "alice"); head != 3 {
		t.Fatalf("the log's head is %d, want 3: a delivery and two changes, each once", head)
	}
	if n, err := msa.RejectedCount(ctx); err != nil || n != 0 {
		t.Fatalf("%d entries rejected (%v), want none", n, err)
	}
	_, got := inbox(t, msa)
	if len(got) != 1 || !equal(got[0].Flags, []string{"$One", "$Two"}) {
		t.Fatalf("INBOX %+v, want one message flagged $One $Two", got)
	}
}
