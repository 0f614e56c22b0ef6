package syncer

import (
	"context"
	"errors"
	"fmt"

	"cspool/internal/command"
	"cspool/internal/entry"
)

// ErrOverQuota means Submit refused a change that adds mail to the log
// (an Append: IMAP APPEND, the outbox's copy into Sent) because the spool
// last stated that the user's log would go past its quota with it
// (QuotaStated, docs/API.md §3). Nothing was queued or appended. Changes
// that add no message (flags, expunges, moves, copies, mailboxes) are never
// refused for the quota: they are how a user makes room. IMAP answers NO
// [OVERQUOTA].
var ErrOverQuota = errors.New("over the spool's quota")

// OverQuotaError is Submit's refusal for the quota: the usage and quota the
// spool last stated, and about the bytes the change would add.
type OverQuotaError struct {
	Usage, Limit, Size int64
}

func (e *OverQuotaError) Error() string {
	return fmt.Sprintf("%v: the log holds %d of %d bytes and the message would add about %d", ErrOverQuota, e.Usage, e.Limit, e.Size)
}

// Is makes errors.Is(err, ErrOverQuota) true.
func (e *OverQuotaError) Is(target error) bool { return target == ErrOverQuota }

// addsMail is about the bytes the spool would store for the messages cmds
// add to the log (an Append's sealed entry, its header and fields left
// out): zero when they add none.
func addsMail(cmds []*command.Command) int64 {
	var n int64
	for _, c := range cmds {
		if c.Kind == command.Append {
			n += int64(entry.SealedLen(entry.PaddedLen(c.Kind, len(c.Body))))
		}
	}
	return n
}

// keptQuota is a usage and quota as the Store keeps them (QuotaKept);
// limit 0: none.
type keptQuota struct{ usage, limit int64 }

// loadQuota reads the quota the Store kept from the last run, if it keeps
// one.
func (s *Syncer) loadQuota(ctx context.Context) error {
	k, ok := s.cfg.Store.(QuotaKept)
	if !ok {
		return nil
	}
	u, l, err := k.StatedQuota(ctx)
	if err != nil {
		return err
	}
	s.quotaKept.Store(&keptQuota{usage: u, limit: l})
	return nil
}

// statedQuota is the usage and quota the spool last stated: on the last
// read's answer once one answered in this run, and before that as the
// Store kept them from the last run. ok is false when none is stated.
func (s *Syncer) statedQuota() (usage, limit int64, ok bool) {
	if s.quotaHeard.Load() {
		q, ok := s.cfg.Source.(QuotaStated)
		if !ok {
			return 0, 0, false
		}
		return q.Quota()
	}
	k := s.quotaKept.Load()
	if k == nil || k.limit <= 0 {
		return 0, 0, false
	}
	return k.usage, k.limit, true
}

// learnQuota notes, after a read answered, the usage and quota the answer
// stated (or that it stated none), and has the Store keep them when they
// differ from what it keeps: a write at a change, not at every read. A
// failure is logged and tried again at the next read.
func (s *Syncer) learnQuota(ctx context.Context) {
	q, ok := s.cfg.Source.(QuotaStated)
	if !ok {
		return
	}
	s.quotaHeard.Store(true)
	var now keptQuota
	if u, l, ok := q.Quota(); ok && l > 0 {
		now = keptQuota{usage: u, limit: l}
	}
	if k := s.quotaKept.Load(); k != nil && *k == now {
		return
	}
	k, ok := s.cfg.Store.(QuotaKept)
	if !ok {
		return
	}
	if err := k.SetStatedQuota(ctx, now.usage, now.limit); err != nil {
		s.log.Warn("recording the quota the spool stated failed", "err", err)
		return
	}
	s.quotaKept.Store(&now)
}

// checkQuota refuses cmds when they add mail and the spool last stated a
// usage that the mail would take past the quota (statedQuota), with the
// mail of the changes queued on this device (offline, not in the stated
// usage yet). Without a stated quota (none on the spool, a server of an
// earlier release, none kept from an earlier run and no read answered
// since the daemon started) nothing is refused here.
func (s *Syncer) checkQuota(ctx context.Context, cmds []*command.Command) error {
	size := addsMail(cmds)
	if size == 0 {
		return nil
	}
	u, l, ok := s.statedQuota()
	if !ok || l <= 0 {
		return nil
	}
	if s.Status().Queued > 0 {
		queued, err := s.cfg.Store.Queue(ctx)
		if err != nil {
			return &storeError{fmt.Errorf("reading the queue of changes: %w", err)}
		}
		for _, e := range queued {
			u += addsMail([]*command.Command{e.Cmd})
		}
	}
	if u+size <= l {
		return nil
	}
	s.quotaRefused.Store(true)
	return &OverQuotaError{Usage: u, Limit: l, Size: size}
}
