package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"

	"cspool/internal/spool"
)

// HoldLockName is the spool key's lock file in the spool directory, empty,
// created with the database file's permission bits. Every
// Store holding its spool key (HoldSpoolKey) keeps a shared flock(2) on it
// while open; recording another key than the one recorded takes it
// exclusively, with a try that fails while any Store holds it. Both are
// done under the database's write lock, which orders them.
const HoldLockName = "spool-key.lock"

// errNoFlock: this system has no flock(2) (hold_other.go).
var errNoFlock = errors.New("holding the spool key needs flock(2), which this system lacks")

// KeepSpoolKey implements spool.KeyKeeper in one IMMEDIATE transaction on
// the writer. It records no other key while a Store holds one
// (HoldSpoolKey): a *spool.LiveKeyError. On success the Store's append
// groups are bound to pub (writeGroup), but the key is not held.
func (s *Store) KeepSpoolKey(ctx context.Context, pub []byte) error {
	if _, err := spool.KeepKey(nil, pub, false); err != nil {
		return err
	}
	l, err := openKeyLock(filepath.Join(s.dir, HoldLockName), filepath.Join(s.dir, DBName))
	switch {
	case errors.Is(err, errNoFlock):
		l = nil
	case err != nil:
		return s.dbErr("recording the spool key", err)
	default:
		defer l.close()
	}
	return s.keep(ctx, pub, l, false)
}

// HoldSpoolKey implements spool.KeyHolder: KeepSpoolKey's transaction,
// which then takes HoldLockName shared on a file of the Store's own, kept
// open until Close. Where flock(2) is missing it is KeepSpoolKey.
func (s *Store) HoldSpoolKey(ctx context.Context, pub []byte) error {
	if _, err := spool.KeepKey(nil, pub, false); err != nil {
		return err
	}
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if err := s.check(); err != nil {
		return err
	}
	if s.keyLock != nil {
		return errors.New("sqlitestore: the store holds a spool key already")
	}
	l, err := openKeyLock(filepath.Join(s.dir, HoldLockName), filepath.Join(s.dir, DBName))
	if errors.Is(err, errNoFlock) {
		return s.keep(ctx, pub, nil, false)
	}
	if err != nil {
		return s.dbErr("holding the spool key", err)
	}
	if err := s.keep(ctx, pub, l, true); err != nil {
		l.close()
		return err
	}
	s.keyLock = l
	return nil
}

// keep runs keepSpoolKey on the writer and binds the Store's appends to
// pub on success.
func (s *Store) keep(ctx context.Context, pub []byte, l *keyLock, hold bool) error {
	var err error
	if werr := s.onWriter(ctx, func(db *sql.DB) { err = keepSpoolKey(ctx, db, pub, l, hold) }); werr != nil {
		return werr
	}
	if err != nil && !errors.As(err, new(*spool.OtherKeyError)) && !errors.As(err, new(*spool.LiveKeyError)) {
		return s.dbErr("recording the spool key", err)
	}
	if err == nil {
		k := bytes.Clone(pub)
		s.spoolKey.Store(&k)
	}
	return err
}

// keepSpoolKey reads and records the key in one IMMEDIATE transaction,
// which holds the database's write lock: every process recording or
// holding a key, and every append group, is serialised by it. Recording
// another key takes l exclusively first, and fails while any other open
// file holds it (a *spool.LiveKeyError); with hold, l is then left shared.
// The exclusive lock is dropped before the commit, still under the write
// lock, so no holder ever meets it. l nil: no lock to check (no flock).
func keepSpoolKey(ctx context.Context, db *sql.DB, pub []byte, l *keyLock, hold bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var recorded []byte
	var logs bool
	err = tx.QueryRowContext(ctx, "SELECT (SELECT key FROM spool_key), EXISTS (SELECT 1 FROM users)").Scan(&recorded, &logs)
	if err != nil {
		return err
	}
	record, err := spool.KeepKey(recorded, pub, logs)
	if err != nil {
		return err
	}
	if record && l != nil {
		free, err := l.try(true)
		if err != nil {
			return err
		}
		if !free {
			return &spool.LiveKeyError{Live: recorded}
		}
	}
	if record {
		if _, err := tx.ExecContext(ctx, "INSERT INTO spool_key (k, key) VALUES (1, ?) ON CONFLICT (k) DO UPDATE SET key = excluded.key", pub); err != nil {
			return err
		}
	}
	if l != nil {
		// Exclusive to shared (or a first shared lock), or dropped: flock
		// converts by dropping first, and no other process can take the
		// lock exclusively meanwhile, since that needs the write lock.
		if hold {
			held, err := l.try(false)
			if err != nil {
				return err
			}
			if !held {
				return errors.New("the spool key's lock file is locked exclusively by a process not holding the database's write lock")
			}
		} else if record {
			if err := l.unlock(); err != nil {
				return err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return nil
}
