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

// checkQuota refuses cmds when they add mail and the spool last stated a
// usage that the mail would take past the quota, with the mail of the
// changes queued on this device (offline, not in the stated usage yet).
// Without a stated quota (none on the spool, a server of an earlier
// release, no read answered since the daemon started) nothing is refused
// here.
func (s *Syncer) checkQuota(ctx context.Context, cmds []*command.Command) error {
	size := addsMail(cmds)
	if size == 0 {
		return nil
	}
	q, ok := s.cfg.Source.(QuotaStated)
	if !ok {
		return nil
	}
	u, l, ok := q.Quota()
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
