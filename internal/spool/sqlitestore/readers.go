package sqlitestore

import (
	"context"
	"database/sql"
	"time"

	"cspool/internal/spool"
)

// noteReaderSQL sets each format's time the read says (?1: the formats it
// reads up to) unless one is set, and clears each it does not say; the
// WHERE makes it change nothing, and write nothing, when the times are
// already as it says, which is every call but a device's first after a
// change.
const noteReaderSQL = `UPDATE users SET
	reads3_since = CASE WHEN ?1 >= 3 THEN coalesce(reads3_since, ?2) END,
	reads4_since = CASE WHEN ?1 >= 4 THEN coalesce(reads4_since, ?2) END
WHERE name = ?3 AND ((?1 >= 3) = (reads3_since IS NULL) OR (?1 >= 4) = (reads4_since IS NULL))`

// NoteReader implements spool.ReaderFormats on the writer goroutine. A
// statement that changed nothing is followed by a read of whether the log
// exists.
func (s *Store) NoteReader(ctx context.Context, user string, reads int, now time.Time) (bool, error) {
	if err := spool.CheckUser(user); err != nil {
		return false, err
	}
	var err error
	var n int64
	if werr := s.onWriter(ctx, func(db *sql.DB) {
		var res sql.Result
		if res, err = db.ExecContext(ctx, noteReaderSQL, reads, now.Unix(), []byte(user)); err == nil {
			n, err = res.RowsAffected()
		}
	}); werr != nil {
		return false, werr
	}
	if err != nil {
		return false, s.dbErr("recording a device's entry formats", err)
	}
	if n > 0 {
		return true, nil
	}
	var one int
	switch err := s.rdb.QueryRowContext(ctx, "SELECT 1 FROM users WHERE name = ?", []byte(user)).Scan(&one); {
	case err == sql.ErrNoRows:
		return false, nil
	case err != nil:
		return false, s.dbErr("recording a device's entry formats", err)
	}
	return true, nil
}

// ReadersSince implements spool.ReaderFormats.
func (s *Store) ReadersSince(ctx context.Context, user string) (spool.Readers, error) {
	if err := spool.CheckUser(user); err != nil {
		return spool.Readers{}, err
	}
	if err := s.check(); err != nil {
		return spool.Readers{}, err
	}
	var v3, v4 sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, "SELECT reads3_since, reads4_since FROM users WHERE name = ?", []byte(user)).Scan(&v3, &v4)
	switch {
	case err == sql.ErrNoRows:
		// As the log its first append makes (upsertUserSQL).
		return spool.Readers{Format3: time.Unix(0, 0), Format4: time.Unix(0, 0)}, nil
	case err != nil:
		return spool.Readers{}, s.dbErr("reading the devices' entry formats", err)
	}
	return spool.Readers{Format3: sinceTime(v3), Format4: sinceTime(v4)}, nil
}

// sinceTime is a time column's value: the zero time for NULL.
func sinceTime(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(v.Int64, 0)
}
