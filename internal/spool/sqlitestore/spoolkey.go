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
	_, err = s.keep(ctx, pub, nil, l, false)
	return err
}

// HoldSpoolKey implements spool.KeyHolder: KeepSpoolKey's transaction,
// which then takes HoldLockName shared on a file of the Store's own, kept
// open until Close. Where flock(2) is missing it is KeepSpoolKey.
func (s *Store) HoldSpoolKey(ctx context.Context, pub []byte) error {
	if _, err := spool.KeepKey(nil, pub, false); err != nil {
		return err
	}
	_, err := s.hold(ctx, pub, nil)
	return err
}

// ReplaceSpoolKey implements spool.KeyReplacer: HoldSpoolKey's
// transaction, with spool.ReplaceKey's rule for its record. Recording pub
// over previous takes HoldLockName exclusively first, as recording any
// other key does, so it is refused while any Store holds a key.
func (s *Store) ReplaceSpoolKey(ctx context.Context, previous, pub []byte) (bool, error) {
	if _, err := spool.ReplaceKey(previous, previous, pub); err != nil {
		return false, err
	}
	return s.hold(ctx, pub, previous)
}

// hold is HoldSpoolKey's and ReplaceSpoolKey's work (previous nil: no
// replacement); replaced: pub was recorded over previous.
func (s *Store) hold(ctx context.Context, pub, previous []byte) (bool, error) {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if err := s.check(); err != nil {
		return false, err
	}
	if s.keyLock != nil {
		return false, errors.New("sqlitestore: the store holds a spool key already")
	}
	l, err := openKeyLock(filepath.Join(s.dir, HoldLockName), filepath.Join(s.dir, DBName))
	if errors.Is(err, errNoFlock) {
		return s.keep(ctx, pub, previous, nil, false)
	}
	if err != nil {
		return false, s.dbErr("holding the spool key", err)
	}
	replaced, err := s.keep(ctx, pub, previous, l, true)
	if err != nil {
		l.close()
		return false, err
	}
	s.keyLock = l
	return replaced, nil
}

// keep runs keepSpoolKey on the writer and binds the Store's appends to
// pub on success; replaced: pub was recorded over previous (not nil).
func (s *Store) keep(ctx context.Context, pub, previous []byte, l *keyLock, hold bool) (replaced bool, err error) {
	var recorded bool
	if werr := s.onWriter(ctx, func(db *sql.DB) { recorded, err = keepSpoolKey(ctx, db, pub, previous, l, hold) }); werr != nil {
		return false, werr
	}
	if err != nil && !errors.As(err, new(*spool.OtherKeyError)) && !errors.As(err, new(*spool.LiveKeyError)) &&
		!errors.As(err, new(*spool.NotPreviousKeyError)) && !errors.As(err, new(*spool.ReplacedBeforeError)) {
		return false, s.dbErr("recording the spool key", err)
	}
	if err != nil {
		return false, err
	}
	k := bytes.Clone(pub)
	s.spoolKey.Store(&k)
	return recorded && previous != nil, nil
}

// keepSpoolKey reads and records the key in one IMMEDIATE transaction,
// which holds the database's write lock: every process recording or
// holding a key, and every append group, is serialised by it. Recording
// another key takes l exclusively first, and fails while any other open
// file holds it (a *spool.LiveKeyError); with hold, l is then left shared.
// The exclusive lock is dropped before the commit, still under the write
// lock, so no holder ever meets it. l nil: no lock to check (no flock).
// previous not nil: the rule is spool.ReplaceKey's, not spool.KeepKey's.
// record: pub was recorded.
func keepSpoolKey(ctx context.Context, db *sql.DB, pub, previous []byte, l *keyLock, hold bool) (record bool, err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var recorded []byte
	var logs bool
	err = tx.QueryRowContext(ctx, "SELECT (SELECT key FROM spool_key), EXISTS (SELECT 1 FROM users)").Scan(&recorded, &logs)
	if err != nil {
		return false, err
	}
	if previous != nil {
		record, err = spool.ReplaceKey(recorded, previous, pub)
	} else {
		record, err = spool.KeepKey(recorded, pub, logs)
	}
	if err != nil {
		return false, err
	}
	if previous != nil && record {
		// Not back to a key a replacement took out (spool.ReplacedBeforeError).
		var by []byte
		switch err := tx.QueryRowContext(ctx, "SELECT replaced_by FROM spool_key_replaced WHERE key = ? ORDER BY seq DESC LIMIT 1", pub).Scan(&by); {
		case err == nil:
			return false, &spool.ReplacedBeforeError{Key: bytes.Clone(pub), ReplacedBy: by}
		case !errors.Is(err, sql.ErrNoRows):
			return false, err
		}
	}
	if previous != nil && recorded != nil {
		// The replacement, or its record when the store's was made
		// before the store kept the keys replaced (spool.KeyHistory).
		if _, err := tx.ExecContext(ctx, `INSERT INTO spool_key_replaced (key, replaced_by)
			SELECT ?1, ?2 WHERE ?3 OR NOT EXISTS (SELECT 1 FROM spool_key_replaced WHERE replaced_by = ?2)`, previous, pub, record); err != nil {
			return false, err
		}
	}
	if record && l != nil {
		free, err := l.try(true)
		if err != nil {
			return false, err
		}
		if !free {
			return false, &spool.LiveKeyError{Live: recorded}
		}
	}
	if record {
		if _, err := tx.ExecContext(ctx, "INSERT INTO spool_key (k, key) VALUES (1, ?) ON CONFLICT (k) DO UPDATE SET key = excluded.key", pub); err != nil {
			return false, err
		}
	}
	if l != nil {
		// Exclusive to shared (or a first shared lock), or dropped: flock
		// converts by dropping first, and no other process can take the
		// lock exclusively meanwhile, since that needs the write lock.
		if hold {
			held, err := l.try(false)
			if err != nil {
				return false, err
			}
			if !held {
				return false, errors.New("the spool key's lock file is locked exclusively by a process not holding the database's write lock")
			}
		} else if record {
			if err := l.unlock(); err != nil {
				return false, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return record, nil
}

// PreviousSpoolKey implements spool.KeyHistory.
func (s *Store) PreviousSpoolKey(ctx context.Context, pub []byte) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var prev []byte
	err := s.rdb.QueryRowContext(ctx, "SELECT key FROM spool_key_replaced WHERE replaced_by = ? ORDER BY seq DESC LIMIT 1", pub).Scan(&prev)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, s.dbErr("reading the spool keys replaced", err)
	}
	return prev, nil
}

// RecordSpoolKeySuccession implements spool.KeyChain.
func (s *Store) RecordSpoolKeySuccession(ctx context.Context, pub, previous, sig []byte) error {
	var err error
	if werr := s.onWriter(ctx, func(db *sql.DB) {
		_, err = db.ExecContext(ctx, `UPDATE spool_key_replaced SET sig = ?3
			WHERE seq = (SELECT max(seq) FROM spool_key_replaced WHERE replaced_by = ?1) AND key = ?2 AND sig IS NULL`, pub, previous, sig)
	}); werr != nil {
		return werr
	}
	if err != nil {
		return s.dbErr("recording the spool key's statement", err)
	}
	return nil
}

// SpoolKeyChain implements spool.KeyChain.
func (s *Store) SpoolKeyChain(ctx context.Context, pub []byte) ([]spool.KeyLink, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT seq, replaced_by, key, sig FROM spool_key_replaced")
	if err != nil {
		return nil, s.dbErr("reading the spool keys replaced", err)
	}
	defer rows.Close()
	var links []spool.KeyLink
	for rows.Next() {
		var l spool.KeyLink
		if err := rows.Scan(&l.Seq, &l.Key, &l.Previous, &l.Sig); err != nil {
			return nil, s.dbErr("reading the spool keys replaced", err)
		}
		links = append(links, l)
	}
	if err := rows.Err(); err != nil {
		return nil, s.dbErr("reading the spool keys replaced", err)
	}
	return spool.ChainOf(links, pub), nil
}
