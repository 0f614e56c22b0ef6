package sqlitestore

import (
	"context"
	"database/sql"
	"time"

	"cspool/internal/spool"
)

// NoteReader implements spool.ReaderFormats on the writer goroutine: a
// statement that changes nothing when the time is already as it says,
// which is every call but a device's first after a change.
func (s *Store) NoteReader(ctx context.Context, user string, v3 bool, now time.Time) error {
	if err := spool.CheckUser(user); err != nil {
		return err
	}
	q, args := "UPDATE users SET reads3_since = NULL WHERE name = ? AND reads3_since IS NOT NULL", []any{[]byte(user)}
	if v3 {
		q, args = "UPDATE users SET reads3_since = ? WHERE name = ? AND reads3_since IS NULL", []any{now.Unix(), []byte(user)}
	}
	var err error
	if werr := s.onWriter(ctx, func(db *sql.DB) { _, err = db.ExecContext(ctx, q, args...) }); werr != nil {
		return werr
	}
	if err != nil {
		return s.dbErr("recording a device's entry formats", err)
	}
	return nil
}

// Version3Since implements spool.ReaderFormats.
func (s *Store) Version3Since(ctx context.Context, user string) (time.Time, error) {
	if err := spool.CheckUser(user); err != nil {
		return time.Time{}, err
	}
	if err := s.check(); err != nil {
		return time.Time{}, err
	}
	var since sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, "SELECT reads3_since FROM users WHERE name = ?", []byte(user)).Scan(&since)
	switch {
	case err == sql.ErrNoRows || (err == nil && !since.Valid):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, s.dbErr("reading the devices' entry formats", err)
	}
	return time.Unix(since.Int64, 0), nil
}
