package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool"
)

// noteReaderSQL is sqlitestore's: each format's time set where the read
// says it ($1: the formats it reads up to) and none is set, cleared where
// it does not; nothing changes, and nothing is written, when the times are
// already as it says.
const noteReaderSQL = `UPDATE cspool_logs SET
	reads3_since = CASE WHEN $1 >= 3 THEN coalesce(reads3_since, $2) END,
	reads4_since = CASE WHEN $1 >= 4 THEN coalesce(reads4_since, $2) END
WHERE name = $3 AND (($1 >= 3) = (reads3_since IS NULL) OR ($1 >= 4) = (reads4_since IS NULL))`

// NoteReader implements spool.ReaderFormats. A statement that changed
// nothing is followed by a read of whether the log exists.
func (s *Store) NoteReader(ctx context.Context, user string, reads int, now time.Time) (bool, error) {
	if err := spool.CheckUser(user); err != nil {
		return false, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return false, err
	}
	defer cancel()
	tag, err := s.pool.Exec(cctx, noteReaderSQL, int64(reads), now.Unix(), []byte(user))
	if err != nil {
		return false, callErr(ctx, fmt.Sprintf("recording the entry formats of a device of %q", user), err)
	}
	if tag.RowsAffected() > 0 {
		return true, nil
	}
	var one int
	err = s.pool.QueryRow(cctx, "SELECT 1 FROM cspool_logs WHERE name = $1", []byte(user)).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, callErr(ctx, fmt.Sprintf("recording the entry formats of a device of %q", user), err)
	}
	return true, nil
}

// ReadersSince implements spool.ReaderFormats.
func (s *Store) ReadersSince(ctx context.Context, user string) (spool.Readers, error) {
	if err := spool.CheckUser(user); err != nil {
		return spool.Readers{}, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return spool.Readers{}, err
	}
	defer cancel()
	var v3, v4 *int64
	err = s.pool.QueryRow(cctx, "SELECT reads3_since, reads4_since FROM cspool_logs WHERE name = $1", []byte(user)).Scan(&v3, &v4)
	if errors.Is(err, pgx.ErrNoRows) {
		return spool.Readers{}, nil // as the log its first append makes
	}
	if err != nil {
		return spool.Readers{}, callErr(ctx, fmt.Sprintf("reading the devices' entry formats of %q", user), err)
	}
	return spool.Readers{Format3: sinceTime(v3), Format4: sinceTime(v4)}, nil
}

// sinceTime is a time column's value: the zero time for NULL.
func sinceTime(v *int64) time.Time {
	if v == nil {
		return time.Time{}
	}
	return time.Unix(*v, 0)
}
