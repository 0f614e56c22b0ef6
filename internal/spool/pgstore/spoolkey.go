package pgstore

import (
	"bytes"
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool"
)

// KeepSpoolKey implements spool.KeyKeeper in one transaction that first
// takes SpoolKeyLockKey exclusively, then locks the key's table, so that
// servers starting at once on a new database agree on one key, and an
// append bound to the key recorded before commits either before this
// transaction looks for logs (it then finds one and refuses another key)
// or after it (its cspool_append_within then reads the new key and
// appends nothing). On success the Store's appends are bound to pub.
func (s *Store) KeepSpoolKey(ctx context.Context, pub []byte) error {
	if _, err := spool.KeepKey(nil, pub, false); err != nil {
		return err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	err = pgx.BeginFunc(cctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(cctx, "SELECT pg_advisory_xact_lock($1)", SpoolKeyLockKey); err != nil {
			return err
		}
		if _, err := tx.Exec(cctx, "LOCK TABLE cspool_spool_key IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return err
		}
		var recorded []byte
		var logs bool
		err := tx.QueryRow(cctx, "SELECT (SELECT key FROM cspool_spool_key), EXISTS (SELECT 1 FROM cspool_logs)").Scan(&recorded, &logs)
		if err != nil {
			return err
		}
		if record, err := spool.KeepKey(recorded, pub, logs); !record {
			return err
		}
		_, err = tx.Exec(cctx, `INSERT INTO cspool_spool_key (singleton, key) VALUES (true, $1)
			ON CONFLICT (singleton) DO UPDATE SET key = excluded.key`, pub)
		return err
	})
	if err != nil && !errors.As(err, new(*spool.OtherKeyError)) {
		return callErr(ctx, "recording the spool key", err)
	}
	if err == nil {
		k := bytes.Clone(pub)
		s.spoolKey.Store(&k)
	}
	return err
}
