package syncer

import (
	"context"
	"errors"
	"fmt"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// Tamper evidence, device side. Invariants:
//
//   - The device knows the chain hash h(p) at its position p (see
//     spool.ChainNext), recomputes it over every entry it is given, and
//     records it for every position it applies.
//   - Every read at or below the spool's head carries the chain hashes
//     (API v1 makes them mandatory; every spool.Store keeps the chain): a
//     read without them is an alarm, not an old server, or a proxy could
//     switch the checks below off by stripping two headers.
//   - A read must start from the device's own h(p) (the spool's StartHash):
//     otherwise the spool rewrote or rolled back the history the device
//     applied, or shows it a different one than before.
//   - A read that reaches the head must hash to the spool's HeadHash:
//     otherwise entries were dropped, altered or reordered in transit.
//   - The spool's head is never behind the device's position (rollback).
//   - Every command a device signs carries the head it had applied
//     (command.Head). Applying another device's command, the device checks
//     that head against its own chain at that position: a difference means
//     the spool showed the two devices different histories (a fork), found
//     as soon as their histories meet. Only a head under the user's key is
//     checked: one in an entry the spool's key signed is the spool's view,
//     not a device's, and proves nothing either way.
//   - A checkpoint restored over entries the device applied must extend its
//     history: it lists (id, position) of every entry its writer applied,
//     and must hold each entry this device applied at the same position, and
//     each message this device holds with the same bytes
//     (mailstore.Restore). Otherwise its writer saw another history: a fork.
//     Only its position being newer proves nothing.
//   - The device knows where its own appends went: once the spool answers
//     an append, the entries' ids and positions are recorded in the mail
//     store (so the check survives a restart) until an apply or a restore
//     reaches them, which must find each at its position (a dropped append
//     is an alarm, and the waiting Submit gets it at once). An append whose
//     answer never came has no known position and is not checked.
//   - A failed check raises an integrity alarm: recorded in the mail store,
//     shown in Status, on the status page and at IMAP login, and the sync
//     stops applying until a person clears it. Nothing repairs itself.

// ErrIntegrity: the sync stopped because an integrity check failed.
var ErrIntegrity = errors.New("integrity alarm: sync stopped")

func (s *Syncer) chainState() (spool.Hash, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.chain, s.chainKnown && !s.cfg.DisableIntegrity
}

func (s *Syncer) setChain(h spool.Hash, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chain, s.chainKnown = h, known
}

// checkRead checks a read's claims against what the device applied
// (chain.CheckRead); without a hash of its own at pos, it takes the
// spool's, and checks everything after it.
func (s *Syncer) checkRead(ctx context.Context, pos uint64, lr spool.LogRead) error {
	var f *chain.Failure
	if s.cfg.DisableIntegrity {
		f = chain.CheckHead(pos, lr.Head)
	} else {
		h, known := s.chainState()
		var mine *chain.Hash
		if known {
			mine = &h
		}
		f = chain.CheckRead(pos, mine, lr.Claim())
		if f == nil && !known {
			// No hash of our own at this position (a store that predates
			// chain tracking, or a checkpoint without one).
			s.setChain(lr.StartHash, true)
		}
	}
	switch {
	case f == nil:
		return nil
	case f.Kind == chain.RolledBack || f.Kind == chain.Rewritten:
		return s.rolledBack(ctx, pos, lr, f.Detail)
	default:
		return s.raise(ctx, f.Pos, f.Detail)
	}
}

// rolledBack handles a read whose log does not extend what this device
// applied: adopted (errAdopted) if the spool's newest checkpoint is a
// restoration that explains it (restoration.go), else an alarm.
func (s *Syncer) rolledBack(ctx context.Context, pos uint64, lr spool.LogRead, detail string) error {
	if err := s.tryRestoration(ctx, lr.Checkpoint); err != nil {
		return err
	}
	return s.raise(ctx, pos, detail)
}

// checkSeen checks the head a command's author had applied against this
// device's chain (chain.CheckSeen). batchStart is the position before the
// batch; hashes are the batch's hashes so far.
func (s *Syncer) checkSeen(ctx context.Context, at uint64, seen *command.Head, batchStart uint64, hashes []spool.Hash, cache map[uint64]spool.Hash) *chain.Failure {
	if seen == nil {
		return nil
	}
	if f := chain.CheckSeenOrder(at, seen.Pos); f != nil {
		return f
	}
	var mine spool.Hash
	switch {
	case seen.Pos > batchStart:
		mine = hashes[seen.Pos-batchStart-1]
	default:
		h, ok := cache[seen.Pos]
		if !ok {
			var err error
			h, ok, err = s.cfg.Store.ChainAt(ctx, seen.Pos)
			if err != nil || !ok {
				return nil // before a restored checkpoint: nothing to compare with
			}
			cache[seen.Pos] = h
		}
		mine = h
	}
	return chain.CheckSeen(at, seen.Pos, seen.Hash, mine)
}

// Alarmed is closed once an integrity alarm stops the sync (at once if one
// was recorded before the Syncer was created).
func (s *Syncer) Alarmed() <-chan struct{} { return s.alarmedChan() }

// raise records an integrity alarm and stops the sync.
func (s *Syncer) raise(ctx context.Context, pos uint64, detail string) error {
	s.log.Error("INTEGRITY ALARM: sync stopped", "pos", pos, "detail", detail)
	s.mu.Lock()
	if s.status.Alarm == "" {
		close(s.alarmed)
	}
	s.status.Alarm = detail
	s.mu.Unlock()
	if err := s.cfg.Store.RaiseAlarm(context.WithoutCancel(ctx), pos, detail); err != nil {
		s.log.Error("recording the integrity alarm failed", "err", err)
	}
	return fmt.Errorf("%w: %s", ErrIntegrity, detail)
}

// loadIntegrity restores the chain state and any recorded alarm at start.
func (s *Syncer) loadIntegrity(ctx context.Context) error {
	h, ok, err := s.cfg.Store.ChainAt(ctx, s.status.Position)
	if err != nil {
		return err
	}
	s.chain, s.chainKnown = h, ok
	alarms, err := s.cfg.Store.Alarms(ctx)
	if err != nil {
		return err
	}
	if n := len(alarms); n > 0 {
		s.status.Alarm = alarms[n-1].Detail
		close(s.alarmed)
	}
	if err := s.loadMisdelivered(ctx); err != nil {
		return err
	}
	return s.loadMisuse(ctx)
}

// misuseTally is what Status.Misuse says: how many entries the store
// recorded as beyond their author's rights, the newest of them, and the
// position through which the records were counted.
type misuseTally struct {
	n       int
	newest  mailstore.Rejection
	through uint64
}

// loadMisuse sets Status.Misuse, at the start, from the entries the store
// rejected as beyond their author's rights: only the spool's key can sign
// those, and only by signing something it must not. They are counted once
// here (Forbidden); countMisuse adds those of each batch after.
func (s *Syncer) loadMisuse(ctx context.Context) error {
	n, newest, err := s.cfg.Store.Forbidden(ctx)
	if err != nil {
		return err
	}
	s.misuse = misuseTally{n: n, through: s.status.Position}
	if newest != nil {
		s.misuse.newest = *newest
		s.misuse.through = max(s.misuse.through, newest.Pos)
	}
	s.setMisuse()
	return nil
}

// countMisuse adds to the tally the records after the position it counted
// through, once a batch up to position last that holds such an entry is
// applied, and sets Status.Misuse from it. Only the records after that
// position are read (RejectedAsAfter, on the table's key): before, each
// such batch counted every record of the reason again, a count over the
// whole table of rejections (the reason has no index), so a spool that
// served many entries the device rejects (a stranger's, say) and signed
// such an entry now and then made each of those batches cost in
// proportion to every rejection ever stored. A record is made only at a
// position applied, so a tally counted past last means the log was taken
// back (a restoration): then every record is counted again.
func (s *Syncer) countMisuse(ctx context.Context, last uint64) error {
	t := s.misuse
	if last < t.through {
		t = misuseTally{}
	}
	err := s.cfg.Store.RejectedAsAfter(ctx, mailstore.ReasonForbidden, t.through, func(r mailstore.Rejection) error {
		t.n++
		t.newest = r
		t.through = max(t.through, r.Pos)
		return nil
	})
	if err != nil {
		return err
	}
	t.through = max(t.through, last)
	s.misuse = t
	s.setMisuse()
	return nil
}

// setMisuse sets Status.Misuse from the tally; none leaves it as it is.
func (s *Syncer) setMisuse() {
	t := s.misuse
	if t.n == 0 {
		return
	}
	entries := "entry"
	if t.n > 1 {
		entries = "entries"
	}
	msg := fmt.Sprintf("the spool's key signed %d %s that only the user may write (the newest at position %d: %s); they were rejected and the mailbox is unchanged, but whoever holds the spool key tried to change it",
		t.n, entries, t.newest.Pos, t.newest.Detail)
	s.mu.Lock()
	s.status.Misuse = msg
	s.mu.Unlock()
}
