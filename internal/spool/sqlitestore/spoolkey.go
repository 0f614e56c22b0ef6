package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"

	"cspool/internal/spool"
)

// KeepSpoolKey implements spool.KeyKeeper in one IMMEDIATE transaction on
// the writer. On success the Store's append groups are bound to pub
// (writeGroup).
func (s *Store) KeepSpoolKey(ctx context.Context, pub []byte) error {
	if _, err := spool.KeepKey(nil, pub, false); err != nil {
		return err
	}
	var err error
	if werr := s.onWriter(ctx, func(db *sql.DB) { err = keepSpoolKey(ctx, db, pub) }); werr != nil {
		return werr
	}
	if err != nil && !errors.As(err, new(*spool.OtherKeyError)) {
		return s.dbErr("recording the spool key", err)
	}
	if err == nil {
		k := bytes.Clone(pub)
		s.spoolKey.Store(&k)
	}
	return err
}

func keepSpoolKey(ctx context.Context, db *sql.DB, pub []byte) error {
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
	if record, err := spool.KeepKey(recorded, pub, logs); !record {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO spool_key (k, key) VALUES (1, ?) ON CONFLICT (k) DO UPDATE SET key = excluded.key", pub); err != nil {
		return err
	}
	return tx.Commit()
}
