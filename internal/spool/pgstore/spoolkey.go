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
// appends nothing). It records no other key while a process holds one
// (HoldSpoolKey): a *spool.LiveKeyError. On success the Store's appends are
// bound to pub, but the key is not held.
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
		_, err := keepKey(cctx, tx, pub, nil, false)
		return err
	})
	if err != nil && !errors.As(err, new(*spool.OtherKeyError)) && !errors.As(err, new(*spool.LiveKeyError)) {
		return callErr(ctx, "recording the spool key", err)
	}
	if err == nil {
		k := bytes.Clone(pub)
		s.spoolKey.Store(&k)
	}
	return err
}

// PreviousSpoolKey implements spool.KeyHistory.
func (s *Store) PreviousSpoolKey(ctx context.Context, pub []byte) ([]byte, error) {
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	var prev []byte
	err = s.pool.QueryRow(cctx, "SELECT key FROM cspool_spool_key_replaced WHERE replaced_by = $1 ORDER BY seq DESC LIMIT 1", pub).Scan(&prev)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, callErr(ctx, "reading the spool keys replaced", err)
	}
	return prev, nil
}
