package pgstore

import (
	"context"
	"fmt"
	"time"

	"cspool/internal/spool"
)

// NoteReader implements spool.ReaderFormats: a statement that changes
// nothing when the time is already as it says.
func (s *Store) NoteReader(ctx context.Context, user string, v3 bool, now time.Time) error {
	if err := spool.CheckUser(user); err != nil {
		return err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	q, args := "UPDATE cspool_logs SET reads3_since = NULL WHERE name = $1 AND reads3_since IS NOT NULL", []any{[]byte(user)}
	if v3 {
		q, args = "UPDATE cspool_logs SET reads3_since = $2 WHERE name = $1 AND reads3_since IS NULL", []any{[]byte(user), now.Unix()}
	}
	if _, err := s.pool.Exec(cctx, q, args...); err != nil {
		return callErr(ctx, fmt.Sprintf("recording the entry formats of a device of %q", user), err)
	}
	return nil
}

// Version3Since implements spool.ReaderFormats.
func (s *Store) Version3Since(ctx context.Context, user string) (time.Time, error) {
	n, err := s.logNumber(ctx, user, "the devices' entry formats",
		"SELECT reads3_since FROM cspool_logs WHERE name = $1 AND reads3_since IS NOT NULL")
	if err != nil || n == 0 {
		return time.Time{}, err
	}
	return time.Unix(n, 0), nil
}
