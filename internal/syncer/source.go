package syncer

import (
	"context"
	"errors"
	"time"

	"cspool/internal/spool"
)

// StoreSource reads and appends a user's log straight from a spool.Store in
// the same process: for tests, and for tools that run beside the store.
type StoreSource struct {
	Store spool.Store
	User  string
}

var _ Source = StoreSource{}

// Read implements Source, waiting with Store.Wait when nothing is new.
func (s StoreSource) Read(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) ([]spool.Entry, uint64, error) {
	entries, err := s.Store.Read(ctx, s.User, after, maxCount, maxBytes)
	if err != nil {
		return nil, 0, err
	}
	if len(entries) == 0 && wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, wait)
		err := s.Store.Wait(wctx, s.User, after)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, 0, err
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if entries, err = s.Store.Read(ctx, s.User, after, maxCount, maxBytes); err != nil {
			return nil, 0, err
		}
	}
	head, err := s.Store.Head(ctx, s.User)
	if err != nil {
		return nil, 0, err
	}
	return entries, head, nil
}

// Append implements Source.
func (s StoreSource) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return s.Store.Append(ctx, user, batch)
}
