package syncer

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// Group commit of Submit (docs/IMAP.md, "What each mutation becomes").
// Many IMAP sessions submit at once; each change costs a durable
// append on the spool, a record of its position and an apply on the
// device, and one at a time they queue on those writes. So they share
// them. Invariants:
//
//   - One submission at a time leads: it takes the submissions waiting,
//     in the order they came (each one's entries together and in its
//     order, up to BatchCount entries and BatchBytes), appends them in one
//     request, and records their positions in one store transaction. The
//     sync loop then reads them in one batch and applies them in one
//     transaction. Each Submit still returns only its own entries'
//     outcomes, once they are applied: a rejection of one is in its own
//     outcome only.
//   - Submissions that arrive while a request is on its way wait for it to
//     be answered, then go together in the next. Once the burst of
//     Config.AppendBurst is spent, a leader first waits for its turn
//     (Config.AppendRate, waitTurns), and those that arrive meanwhile
//     join its group. The lead passes on as
//     soon as the spool has answered (or the group is queued), so the next
//     request is on its way while this group's positions are recorded.
//   - A group is appended on the head the spool last gave this device
//     (its own last append's, usually), conditionally as before: a head
//     that moved appends nothing and the group is sent again on the head
//     the refusal names, unless the entry after the refused head is the
//     group's first (a copy of the request landed: appendFrom).
//   - When the group cannot be appended now (the spool is unavailable, or
//     changes wait already, which must reach the log first) the leader
//     queues it, in order and under the ids it was sealed with, before the
//     lead passes on: a later submission then queues behind it.
//   - A refusal that is not about the head or the spool's availability (a
//     request too large, a bad request) may be one submission's doing: the
//     group is then sent again one submission at a time, so each gets its
//     own answer.
//   - A submission's wait for its group's request is not cut short by its
//     own context: the request runs until every member's context is done,
//     and every member hears how it went, so no session is told "not
//     changed" about a change the device has queued or the log has.

// submission is one Submit's entries, waiting to be appended with others.
//
// It is handed to whichever Submit leads the group, so it carries its
// caller's context, as a request does: the leader sees when the caller
// gave up, and the group's request runs until every member's is done.
type submission struct {
	ctx   context.Context
	cmds  []*command.Command
	batch [][]byte
	ids   []command.ID
	size  int64
	done  chan submitted // buffered: the leader never waits on it
}

// submitted is what became of a submission's append.
type submitted struct {
	first  uint64              // its first entry's position, when appended
	queued []mailstore.Outcome // its provisional outcomes, when queued instead
	err    error
}

// sendGrouped appends sub's entries together with those of other
// submissions waiting, leading the group when no request is on its way,
// and returns what became of them.
func (s *Syncer) sendGrouped(sub *submission) submitted {
	s.groupMu.Lock()
	s.groupWaiting = append(s.groupWaiting, sub)
	lead := !s.groupBusy
	s.groupBusy = true
	s.groupMu.Unlock()
	if lead {
		// Nothing was on its way, so nothing waited before sub: its
		// group starts with it.
		s.lead()
	}
	return <-sub.done
}

// lead sends the next group, then passes the lead to the one after, if
// any submission waits.
func (s *Syncer) lead() {
	s.waitTurns(context.Background(), 1)
	g := s.takeGroup()
	if g == nil {
		return
	}
	passed := false
	pass := func() {
		if passed {
			return
		}
		passed = true
		s.groupMu.Lock()
		more := len(s.groupWaiting) > 0
		if !more {
			s.groupBusy = false
		}
		s.groupMu.Unlock()
		if more {
			go s.lead()
		}
	}
	s.sendGroup(g, pass)
	pass()
}

// waitTurns waits for n turns of this device's appends
// (Config.AppendRate): at most AppendRate a second once the burst is spent.
// A group's leader waits for one before it takes the group, so the
// submissions made meanwhile go in it. An append refused because the head
// moved waits for two before it is sent again: each refusal costs the
// read of the entry after the refused head (landedAt) and the append
// again, and two devices of a user changing things at once refused each
// other's appends 2,915 times in 90 s, some 5,800 requests that no pace
// counted, which spent the user key's budget in 24 s (docs/BENCHMARKS.md).
// It returns ctx's error, giving the turns back, if ctx ends first.
func (s *Syncer) waitTurns(ctx context.Context, n int) error {
	if s.appends == nil {
		return nil
	}
	r := s.appends.ReserveN(time.Now(), min(n, s.appends.Burst()))
	d := r.Delay()
	if !r.OK() || d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return ctx.Err()
	}
}

// takeGroup takes the submissions waiting, in order, up to the batch
// limits (at least one), or returns nil and ends the lead when none waits.
func (s *Syncer) takeGroup() []*submission {
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	if len(s.groupWaiting) == 0 {
		s.groupBusy = false
		return nil
	}
	n, count, size := 0, 0, int64(0)
	for _, sub := range s.groupWaiting {
		if n > 0 && (count+len(sub.batch) > s.cfg.BatchCount || size+sub.size > s.cfg.BatchBytes) {
			break
		}
		n++
		count += len(sub.batch)
		size += sub.size
	}
	g := s.groupWaiting[:n:n]
	s.groupWaiting = append([]*submission(nil), s.groupWaiting[n:]...)
	return g
}

// sendGroup appends g's entries in one request and records their
// positions, or queues them, and tells each member; pass hands the lead
// on, as soon as what g did no longer decides what the next group does.
func (s *Syncer) sendGroup(g []*submission, pass func()) {
	var batch [][]byte
	var ids []command.ID
	for _, sub := range g {
		batch = append(batch, sub.batch...)
		ids = append(ids, sub.ids...)
	}
	ctx, cancel := groupContext(g)
	defer cancel()
	if s.queueing() {
		// The spool failed meanwhile, or changes wait already: they
		// reach the log first.
		s.queueGroup(ctx, g, false)
		return
	}
	first, err := s.appendOwn(ctx, batch, ids)
	if err == nil {
		s.sawHead(first + uint64(len(batch)) - 1)
		pass()
		if err := s.recordAppended(ctx, ids, first); err != nil {
			for _, sub := range g {
				sub.done <- submitted{err: err}
			}
			return
		}
		for _, sub := range g {
			sub.done <- submitted{first: first}
			first += uint64(len(sub.batch))
		}
		return
	}
	if errors.Is(err, spool.ErrOverQuota) {
		// The spool holds the user's own appends to its quota and a
		// margin (api.Config.OwnMargin), and this request appended
		// nothing: answered now, not queued (a queued change would be
		// acknowledged and then wait for room). Together, each alone:
		// only those that add mail are refused.
		if len(g) > 1 {
			for _, sub := range g {
				s.sendGroup([]*submission{sub}, func() {})
			}
			return
		}
		if size := addsMail(g[0].cmds); size > 0 {
			s.quotaRefused.Store(true)
			oq := &OverQuotaError{Size: size}
			oq.Usage, oq.Limit, _ = s.statedQuota()
			s.log.Info("the spool refused an append for the quota; not queued", "bytes", size, "err", err)
			g[0].done <- submitted{err: oq}
			return
		}
		// Changes that add no mail wait in the queue for room, as for
		// any refusal for now.
	}
	if errors.Is(err, spool.ErrHeadMoved) || temporary(err) || (s.cfg.Permanent != nil && s.cfg.Permanent(err) != "") {
		// The spool did not take them, or only the answer was lost:
		// queued under the same ids, they land once either way.
		s.log.Info("spool unavailable: queueing the changes", "count", len(batch), "err", err)
		s.queueGroup(ctx, g, true)
		return
	}
	if len(g) > 1 {
		// Perhaps one member's doing (too large, refused): each alone,
		// in order, gets its own answer.
		for _, sub := range g {
			s.sendGroup([]*submission{sub}, func() {})
		}
		return
	}
	g[0].done <- submitted{err: fmt.Errorf("appending to the spool: %w", err)}
}

// queueGroup queues g's commands in the store, in order, under the ids
// they were sealed with (sent: an append of them may have landed), and
// tells each member its provisional outcomes.
func (s *Syncer) queueGroup(ctx context.Context, g []*submission, sent bool) {
	var cmds []*command.Command
	var ids []command.ID
	for _, sub := range g {
		cmds = append(cmds, sub.cmds...)
		ids = append(ids, sub.ids...)
	}
	s.forget(ids)
	if !sent {
		ids = nil // never sent: new ids do
	}
	outs, err := s.enqueue(ctx, cmds, ids)
	for _, sub := range g {
		if err != nil {
			sub.done <- submitted{err: err}
			continue
		}
		sub.done <- submitted{queued: outs[:len(sub.cmds):len(sub.cmds)]}
		outs = outs[len(sub.cmds):]
	}
}

// groupContext is done once every member's context is done: the group's
// request serves them all.
func groupContext(g []*submission) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(g[0].ctx))
	var left atomic.Int32
	left.Store(int32(len(g)))
	stops := make([]func() bool, len(g))
	for i, sub := range g {
		stops[i] = context.AfterFunc(sub.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// forget drops the pending entries ids.
func (s *Syncer) forget(ids []command.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.pending, id)
	}
}
