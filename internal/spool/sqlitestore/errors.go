package sqlitestore

import (
	"errors"
	"fmt"

	"cspool/internal/spool"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrNewerSchema means the database was written by a newer cspool: this
// version cannot know what its schema means, so it refuses to touch it.
var ErrNewerSchema = errors.New("sqlitestore: database schema is newer than this program")

// ErrNotSpool means the database file belongs to another application.
var ErrNotSpool = errors.New("sqlitestore: not a cspool spool database")

// ErrCompactedLog means a log lost entries to compaction before this
// version kept chain hashes: its chain cannot be computed, so the migration
// that introduces the chain refuses to run (docs/STORE.md, schema 3).
var ErrCompactedLog = errors.New("sqlitestore: a log compacted before schema version 3 cannot be chained")

// classify wraps err with spool.ErrUnavailable when it is temporary (a lock
// held too long, a full disk, an I/O error, memory) and with spool.ErrTooLarge
// when SQLite refused a value's size.
func classify(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %w: %w", spool.ErrUnavailable, spool.ErrFull, err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
		sqlite3.SQLITE_IOERR, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_PROTOCOL,
		sqlite3.SQLITE_CANTOPEN:
		return fmt.Errorf("%w: %w", spool.ErrUnavailable, err)
	case sqlite3.SQLITE_TOOBIG:
		return fmt.Errorf("%w: %w", spool.ErrTooLarge, err)
	}
	return err
}
