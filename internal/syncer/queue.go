package syncer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// Changes made while the spool cannot be reached (docs/MAILSTORE.md,
// "Changes made on this device"; docs/IMAP.md, "Offline"). Invariants:
//
//   - Submit appends at once while the spool answers, this device's
//     queue is empty and no restore from a checkpoint runs. While the
//     spool answers and changes wait or a restore runs, it first waits up
//     to Config.DrainWait for the loop to send them and for the restore
//     to end (drained; while an APPEND is held for the quota it queues
//     at once, held.go), then appends: queued, a change is shown before the log has it,
//     and a message it adds to a mailbox can lose its UIDs to a delivery
//     the log puts first (docs/MAILSTORE.md), so an active client must
//     not keep the device queueing after one failed exchange. Otherwise
//     (the last exchange with the spool failed,
//     changes wait already, which must reach the log first, or a restore
//     from a checkpoint still runs, after which only the loop would apply
//     an appended change) it queues
//     the commands in the store (mailstore.Enqueue), which applies them
//     provisionally and keeps them on disk, and returns their provisional
//     outcomes. An append that fails queues its commands under the ids it
//     sealed them with: if only its answer was lost, the entry is in the
//     log, and the queue drops it when the loop reads it there; if the
//     loop applied or rejected it before it could be queued, the store
//     refuses it (the id was seen) and Submit answers with the outcome
//     rebuilt from the rejection recorded or from where its messages are
//     (seenOutcome), placements included.
//   - Only the sync loop sends the queue, in order, with the conditional
//     append (spool.HeadAppender, if_head). Entries it sent may be in the
//     log beyond the store's position only up to sentThrough: those of an
//     append that succeeded, and of one without a clear answer, which may
//     still land later, but only on the head it named. Once the store has
//     applied past sentThrough, they are either applied (and out of the
//     queue) or not in the log, and the queue is sent on the spool's head
//     as last read, and again at once on the head a refusal names (a
//     refusal appended nothing, and what came first is not this device's
//     queue), so entries arriving all the time cannot starve it. Before
//     that, it is sent only right after a read found the store at the
//     spool's head, on that head, once: exactly one of it and an earlier
//     attempt on that head can land. So it is too after a restart with
//     changes queued (sentUnknown), until a send of its own lands: the
//     run before may have sent them. A refusal is believed only once the
//     entry after the refused head is seen not to be the batch's first
//     (appendFrom, landedAt): a copy of the request may have landed. The
//     batch is then taken as appended only if all of it is there, in
//     order; if only its first changes are (an earlier send held fewer),
//     nothing is sent before the next read. Each queued change therefore
//     lands exactly once.
//   - A batch the spool refuses as too large (413) is sent in halves from
//     then on; a single change it refuses so stays queued (and so does
//     what follows it, in order), and the error says what to do. A batch
//     it refuses for the quota (507) is halved until one lands; a single
//     APPEND it refuses so is held, with what depends on it, and the
//     other changes are sent past it (held.go).
//   - The apply of the log confirms the queued changes it finds where they
//     were applied provisionally and takes the rest back and applies it
//     again after other devices' entries (mailstore); the loop only sends.
//   - Store applies and their notices to OnApplied are serialized (applyMu),
//     so IMAP sessions hear provisional changes and the log's in the order
//     the store made them. A restore holds applyMu for its last step only
//     (mailstore.StagedRestore.Commit), the one that changes the state:
//     changes queued during its first three steps are applied provisionally
//     on the old state, heard first, and applied again on top by that step.
//   - A failure that means no answer came (Config.Unreachable) makes the
//     loop, while it waits out its backoff, ask the spool (Prober) every
//     ProbeInterval whether it answers again, and try at once when it does:
//     a queue drains, and other devices' changes arrive, within about a
//     ProbeInterval of the spool's return, not after up to MaxBackoff.

// HeadSource is the optional capability of a Source to append on a
// condition (spool.HeadAppender, the API's if_head): a device sends its
// queued changes only this way. api.Client and StoreSource have it.
type HeadSource interface {
	// AppendAt appends batch only if the log's head is head; otherwise it
	// appends nothing and returns an error wrapping a
	// *spool.HeadMovedError.
	AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error)
}

// Prober is the optional capability of a Source to ask the spool, cheaply
// and without reading the log, whether it answers (api.Client's /v1/health).
type Prober interface {
	Health(ctx context.Context) error
}

var _ HeadSource = StoreSource{}

// queueing reports whether Submit must queue, unless drained says the
// wait is over: the last exchange with the spool failed, changes wait
// already, or a restore runs (the loop would apply an appended change
// only once the restore ends).
func (s *Syncer) queueing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.Queued > 0 || (!s.status.Connected && s.status.LastError != "") || s.status.StoreFailing || s.restoring
}

// drained waits, while the spool answers, up to Config.DrainWait for a
// restore from a checkpoint to end and the queue to empty, and reports
// whether Submit may append now instead of queueing. A failed exchange
// ends the wait (a queued change the spool refuses keeps the queue from
// draining, and every change would otherwise wait the whole DrainWait).
// A device a few entries behind another device's checkpoint rebuilds
// from it, mostly in well under a second: a change queued meanwhile would
// be shown before the log has it, and a message it adds to a mailbox the
// other device adds to as well would cost that mailbox a new UIDVALIDITY
// on this device (docs/MAILSTORE.md), so it waits for the restore like
// for the queue.
func (s *Syncer) drained(ctx context.Context) bool {
	timer := time.NewTimer(s.cfg.DrainWait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		down := (!s.status.Connected && s.status.LastError != "") || s.status.StoreFailing
		if down || s.heldCount > 0 {
			// With an APPEND held for the quota the queue does not
			// empty until there is room: queued at once, the change is
			// sent past it unless it depends on it (held.go).
			s.mu.Unlock()
			return false
		}
		if !s.restoring && s.status.Queued == 0 {
			s.mu.Unlock()
			return true
		}
		if s.emptied == nil {
			s.emptied = make(chan struct{})
		}
		emptied := s.emptied
		s.mu.Unlock()
		s.wakeUp()
		select {
		case <-emptied:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// Restoring reports whether a restore from a checkpoint runs: its
// bodies are being stored, none of its messages shows yet, and nothing
// calls Config.OnApplied until it ends.
func (s *Syncer) Restoring() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restoring
}

// setRestoring notes that a restore from a checkpoint runs, or ended: its
// end wakes the Submits waiting for it (drained).
func (s *Syncer) setRestoring(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restoring = on
	if !on && s.emptied != nil {
		close(s.emptied)
		s.emptied = nil
	}
}

// enqueue queues cmds in the store, under ids (nil: new ones), tells
// OnApplied what they show, and returns their provisional outcomes. A
// command the store would reject is not queued; its outcome says why.
func (s *Syncer) enqueue(ctx context.Context, cmds []*command.Command, ids []command.ID) ([]mailstore.Outcome, error) {
	// Once queued, a change is the device's to send: the caller's
	// cancellation must not leave half a batch queued.
	ctx = context.WithoutCancel(ctx)
	outs := make([]mailstore.Outcome, len(cmds))
	queued := 0
	var firstErr error
	for i, c := range cmds {
		var id command.ID
		if ids != nil {
			id = ids[i]
		} else if _, err := rand.Read(id[:]); err != nil {
			firstErr = fmt.Errorf("queueing a change: %w", err)
			break
		}
		s.applyMu.Lock()
		res, err := s.cfg.Store.Enqueue(ctx, id, c)
		if err == nil && len(res.Changes) > 0 && s.cfg.OnApplied != nil {
			s.cfg.OnApplied(res)
		}
		s.applyMu.Unlock()
		if err != nil {
			firstErr = &storeError{fmt.Errorf("queueing a change: %w", err)}
			break
		}
		o := res.Outcomes[0]
		if o.Status == mailstore.Rejected && ids != nil && (o.Reason == mailstore.ReasonIDExists || o.Reason == mailstore.ReasonReplay) {
			// The append whose answer was lost did land, and the loop
			// applied or rejected it before it could be queued: answered
			// with the rejection or where its messages are, as its Submit
			// would have heard.
			seen, err := s.cfg.Store.EntriesSeen(ctx, [][16]byte{id})
			if pos, ok := seen[id]; err == nil && ok {
				o = s.seenOutcome(ctx, id, pos, c)
			}
		} else if o.Status != mailstore.Rejected {
			queued++
		}
		outs[i] = o
	}
	if queued > 0 {
		s.refreshQueued(ctx)
		s.log.Info("changes queued until the spool has them", "queued", queued, "waiting", s.Status().Queued)
		s.wakeUp()
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return outs, nil
}

// refreshQueued reads how many changes wait into the status.
func (s *Syncer) refreshQueued(ctx context.Context) {
	n, err := s.cfg.Store.QueueLen(ctx)
	if err != nil {
		s.log.Warn("reading the queue of changes failed", "err", err)
		return
	}
	s.mu.Lock()
	s.status.Queued = n
	if n == 0 {
		s.sentUnknown = false
		if s.emptied != nil {
			close(s.emptied)
			s.emptied = nil
		}
	}
	s.mu.Unlock()
}

// wakeUp ends the loop's long poll, so that it sends what was queued.
func (s *Syncer) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// errWoken: a long poll ended early because changes were queued.
var errWoken = errors.New("woken to send queued changes")

// readLog is Source.ReadLog of up to count entries; a long poll (wait > 0)
// ends early, with errWoken, when wakeUp is called.
func (s *Syncer) readLog(ctx context.Context, after uint64, count int, wait time.Duration) (spool.LogRead, error) {
	if wait <= 0 {
		return s.cfg.Source.ReadLog(ctx, after, count, s.cfg.BatchBytes, 0)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	woke := make(chan bool, 1)
	go func() {
		select {
		case <-s.wake:
			woke <- true
			cancel()
		case <-done:
			woke <- false
		}
	}()
	lr, err := s.cfg.Source.ReadLog(rctx, after, count, s.cfg.BatchBytes, wait)
	close(done)
	if <-woke && err != nil && ctx.Err() == nil {
		return spool.LogRead{}, errWoken
	}
	return lr, err
}

// sendQueue sends the queued changes, in order, right after the head this
// device has applied, when the last read found that to be the spool's
// head. On success the loop's next read applies them (confirming them); a
// head that moved is not an error (the next read applies what came
// first). Only the sync loop calls it.
func (s *Syncer) sendQueue(ctx context.Context) error {
	st := s.Status()
	if st.Queued == 0 {
		s.unhold()
	}
	if st.Queued == 0 || st.Alarm != "" {
		return nil
	}
	// Where to send. Once the store has applied past every position an
	// earlier send may have reached (sentThrough), none of the queue is in
	// the log after the position: it is sent on the spool's head as last
	// read, and again on the head a refusal names (entries arriving all
	// the time cannot starve it). Before, only right after a read found
	// the store at the head, on that head, once: an attempt without a
	// clear answer may land there, and exactly one of the two can.
	s.mu.Lock()
	head, tries := st.Head, 20
	if s.sentUnknown || st.Position < s.sentThrough {
		head, tries = st.Position, 1
	}
	s.mu.Unlock()
	if tries == 1 && st.Position < st.Head {
		return nil
	}
	hs, ok := s.cfg.Source.(HeadSource)
	if !ok {
		if !s.noHeadSourceLogged {
			s.noHeadSourceLogged = true
			s.log.Error("changes wait in the queue but this spool client cannot append on a condition; they are not sent",
				"queued", st.Queued)
		}
		return nil
	}
	q, err := s.cfg.Store.Queue(ctx)
	if err != nil {
		return &storeError{err}
	}
	if len(q) == 0 {
		s.refreshQueued(ctx)
		return nil
	}
	if s.held != nil && tries > 1 && expunges(q, s.held.id) {
		// None of the queue can be in the log after the position: a held
		// APPEND whose message the user deleted goes as a placeholder
		// (held.go).
		shrunk, err := s.shrinkHeld(ctx)
		if err != nil {
			return err
		}
		if shrunk {
			if q, err = s.cfg.Store.Queue(ctx); err != nil {
				return &storeError{err}
			}
		}
	}
	seen := s.seenHead()
	most := s.cfg.BatchCount
	if s.sendMax > 0 {
		most = min(most, s.sendMax)
	}
	// An APPEND held for the quota, and what depends on it, is passed by,
	// unless it is its turn again: then it is sent alone (held.go).
	skip := s.heldSkip(q)
	retry := s.held != nil && s.heldRetryDue(s.held)
	if retry {
		most = 1
	}
	batch := make([][]byte, 0, min(len(q), most))
	ids := make([]command.ID, 0, cap(batch))
	var sent []mailstore.Queued
	var size int64
	for i, e := range q {
		if len(batch) == most {
			break
		}
		if retry && e.ID != s.held.id || !retry && skip != nil && skip[i] {
			continue
		}
		e.Cmd.Seen = seen
		b, _, err := entry.Seal(e.Cmd, s.cfg.UserKey, s.cfg.UserKey.Public(), s.cfg.User, &entry.Options{ID: e.ID})
		if err != nil {
			return fmt.Errorf("sealing queued change %d: %w", e.Seq, err)
		}
		if len(batch) > 0 && size+int64(len(b)) > s.cfg.BatchBytes {
			break
		}
		batch, ids, sent = append(batch, b), append(ids, e.ID), append(sent, e)
		size += int64(len(b))
	}
	if len(batch) == 0 {
		return nil // all held
	}
	first, err := s.appendFrom(ctx, hs, head, batch, ids, tries)
	switch {
	case errors.Is(err, spool.ErrHeadMoved):
		// Read what came first, then send on the new head (the apply
		// takes the queue back and applies it again after it).
		return nil
	case errors.Is(err, spool.ErrTooLarge) && len(batch) > 1:
		// The spool takes smaller requests than this: send fewer at a
		// time (nothing was appended).
		s.sendMax = len(batch) / 2
		s.log.Warn("the spool refused a batch of queued changes as too large; sending fewer at a time", "count", len(batch), "bytes", size, "next", s.sendMax)
		return nil
	case errors.Is(err, spool.ErrOverQuota) && len(batch) > 1:
		// The spool holds the user's own appends to its quota and a
		// margin (nothing was appended): the changes before the one
		// that does not fit may, so fewer at a time until one lands.
		s.sendMax, s.quotaHalved = len(batch)/2, true
		s.log.Warn("the spool refused a batch of queued changes for the quota; sending fewer at a time", "count", len(batch), "bytes", size, "next", s.sendMax)
		return nil
	case errors.Is(err, spool.ErrOverQuota) && sent[0].Cmd.Kind == command.Append: // alone
		// A single APPEND the spool will not take before there is room:
		// held, and the changes that do not depend on it are sent past
		// it, the deletes that make the room among them (nothing was
		// appended).
		s.holdAppend(sent[0], err)
		return nil
	case errors.Is(err, spool.ErrTooLarge):
		return fmt.Errorf("queued change %d (%s, %d bytes sealed) is larger than the spool takes in one request, so it cannot be sent; the spool's operator can raise its limit (cspool server --max-message-size, at least the device's): %w",
			sent[0].Seq, sent[0].Cmd.Kind, size, err)
	case err != nil:
		if temporary(err) {
			return fmt.Errorf("%w: sending %d queued changes: %v", ErrUnavailable, len(batch), err)
		}
		return fmt.Errorf("sending %d queued changes: %w", len(batch), err)
	}
	last := first + uint64(len(batch)) - 1
	if s.quotaHalved {
		// A batch landed: the next may hold them all again.
		s.sendMax, s.quotaHalved = 0, false
	}
	// An earlier run's attempts were on heads before this one: none of
	// them can land any more.
	s.mu.Lock()
	s.sentUnknown = false
	s.mu.Unlock()
	if retry {
		// The held APPEND is in the log: what depends on it follows.
		s.unhold()
	}
	if err := s.recordAppended(ctx, ids, first); err != nil {
		return err
	}
	s.sawHead(last)
	s.log.Info("sent queued changes", "count", len(batch), "first", first, "last", last, "left", len(q)-len(batch))
	return nil
}

// sawHead notes that the spool's head is at least head, so the next read
// does not wait.
func (s *Syncer) sawHead(head uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Head = max(s.status.Head, head)
}

// probeTimeout bounds one probe. A server that has just started, with
// all of its devices probing at once, answers late, not never: given up
// after a second, a probe's connection was closed and the next probe made
// a new one, so the server did each device's work several times over.
// 10,000 devices of a server restarted after 3 s were all back 12 to 13 s
// after its start, having given up 2.6 probes each (some 26,000 health
// answers nobody read), and its memory peaked at 2.2 to 2.6 times its
// idle RSS; now 7 s and 2 times (bench/devices --restart,
// docs/BENCHMARKS.md).
const probeTimeout = 10 * time.Second

// pause waits d, or less: after a failure that means the spool did not
// answer (Config.Unreachable), it asks the spool every ProbeInterval
// (every ProbeSlowInterval once the exchanges with it have failed for
// ProbeSlowAfter: Status.DownSince, which only a read or append that gets
// through ends, not an answered probe) whether it answers again and
// returns as soon as it does, with answered set. It returns ctx's error
// when ctx is done.
func (s *Syncer) pause(ctx context.Context, d time.Duration, err error) (answered bool, _ error) {
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	p, ok := s.cfg.Source.(Prober)
	if !ok || s.cfg.Unreachable == nil || !s.cfg.Unreachable(err) || d <= s.cfg.ProbeInterval {
		return false, sleep(d)
	}
	downSince := s.Status().DownSince
	end := time.Now().Add(d)
	for {
		every := s.cfg.ProbeInterval
		if time.Since(downSince) >= s.cfg.ProbeSlowAfter {
			every = s.cfg.ProbeSlowInterval
		}
		// A little jitter, so that devices do not all ask at once.
		step := every * time.Duration(90+mrand.IntN(21)) / 100
		left := time.Until(end)
		if left <= step {
			return false, sleep(left)
		}
		if err := sleep(step); err != nil {
			return false, err
		}
		pctx, cancel := context.WithTimeout(ctx, max(s.cfg.ProbeInterval, probeTimeout))
		perr := p.Health(pctx)
		cancel()
		if perr == nil {
			s.log.Info("spool answers again; syncing")
			return true, nil
		}
	}
}

// applyLocked runs f, a write of the store's state, and tells OnApplied
// its result, under applyMu.
func (s *Syncer) applyLocked(f func() (*mailstore.Result, error)) (*mailstore.Result, error) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	res, err := f()
	if err == nil && s.cfg.OnApplied != nil {
		s.cfg.OnApplied(res)
	}
	return res, err
}
