package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cspool/internal/spool"
)

// KeepSpoolKey implements spool.KeyKeeper in one IMMEDIATE transaction on
// the writer.
func (s *Store) KeepSpoolKey(ctx context.Context, pub []byte) error {
	if len(pub) != 64 {
		return fmt.Errorf("spool: a spool key of %d bytes, want 64", len(pub))
	}
	var err error
	if werr := s.onWriter(ctx, func(db *sql.DB) { err = keepSpoolKey(ctx, db, pub) }); werr != nil {
		return werr
	}
	if err != nil && !errors.As(err, new(*spool.OtherKeyError)) {
		return s.dbErr("recording the spool key", err)
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
	switch {
	case bytes.Equal(recorded, pub):
		return nil
	case recorded != nil && logs:
		return &spool.OtherKeyError{Recorded: recorded}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO spool_key (k, key) VALUES (1, ?) ON CONFLICT (k) DO UPDATE SET key = excluded.key", pub); err != nil {
		return err
	}
	return tx.Commit()
}
