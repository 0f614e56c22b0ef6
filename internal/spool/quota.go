package spool

import (
	"context"
	"errors"
	"fmt"
)

// Quotas is the optional capability of a Store to keep how many bytes each
// log holds and to append deliveries only within a limit (docs/STORE.md,
// "Quotas"). Both stores implement it.
//
// Invariants: Usage(user) is the sum of the sizes of the user's entries
// that compaction has not deleted, plus the size of the user's checkpoint,
// on every handle on the same storage once the Append or Compact that
// changed it has returned; it is kept in the transaction that changes it,
// so it is exact after a crash. AppendWithin compares and appends in one
// step: concurrent appends within a limit never take a log past it.
// Only AppendWithin refuses anything: Append, AppendAt and Compact count
// their bytes but are never refused for them (a user over the limit must be
// able to delete mail and compact, which is how usage goes down).
type Quotas interface {
	// AppendWithin is Append, done only if the user's usage plus the
	// batch's bytes is at most limit; otherwise nothing is appended, no
	// log is created, and the error is an *OverQuotaError (errors.Is
	// ErrOverQuota). limit <= 0 is no limit.
	AppendWithin(ctx context.Context, user string, limit int64, batch [][]byte) (first uint64, err error)
	// Usage returns the bytes user's log holds (0 for an unknown user).
	Usage(ctx context.Context, user string) (int64, error)
	// UsageSummary describes the usage of every log against limit, for
	// monitoring; it names no user.
	UsageSummary(ctx context.Context, limit int64) (UsageSummary, error)
}

// UsageSummary is the usage of all logs of a store, without names.
type UsageSummary struct {
	Logs    int   // logs that exist
	Bytes   int64 // bytes all logs hold together
	Largest int64 // bytes the largest log holds
	// Near and Over count the logs at or above 90% and 100% of the limit
	// (0 when there is no limit).
	Near, Over int
}

// ErrOverQuota: a delivery would take the user's log past its quota. It is
// temporary for the sender (LMTP 452 4.2.2, HTTP 507): the user can make
// room, and the MTA keeps the message meanwhile. Nothing was appended.
var ErrOverQuota = errors.New("spool: over quota")

// OverQuotaError is an AppendWithin refused for the limit.
type OverQuotaError struct {
	Usage, Size, Limit int64 // the log's bytes, the batch's, and the limit
}

func (e *OverQuotaError) Error() string {
	return fmt.Sprintf("the log holds %d bytes; %d more would pass its quota of %d: nothing appended", e.Usage, e.Size, e.Limit)
}

// Unwrap makes errors.Is(err, ErrOverQuota) hold.
func (e *OverQuotaError) Unwrap() error { return ErrOverQuota }

// Near is the fill of a log, as a fraction of the limit, counted in
// UsageSummary.Near.
const Near = 0.9

// WithinQuota returns an appender whose Append is q's AppendWithin with
// limit: deliveries (LMTP, cspool deliver) go through it.
func WithinQuota(q Quotas, limit int64) interface {
	Append(ctx context.Context, user string, batch [][]byte) (uint64, error)
} {
	return withinQuota{q, limit}
}

type withinQuota struct {
	q     Quotas
	limit int64
}

func (w withinQuota) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return w.q.AppendWithin(ctx, user, w.limit, batch)
}
