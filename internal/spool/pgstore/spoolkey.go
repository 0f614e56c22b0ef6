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

// RecordSpoolKeySuccession implements spool.KeyChain.
func (s *Store) RecordSpoolKeySuccession(ctx context.Context, pub, previous, sig []byte) error {
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.pool.Exec(cctx, `UPDATE cspool_spool_key_replaced SET sig = $3
		WHERE seq = (SELECT max(seq) FROM cspool_spool_key_replaced WHERE replaced_by = $1) AND key = $2 AND sig IS NULL`, pub, previous, sig)
	if err != nil {
		return callErr(ctx, "recording the spool key's statement", err)
	}
	return nil
}

// SpoolKeyChain implements spool.KeyChain.
func (s *Store) SpoolKeyChain(ctx context.Context, pub []byte) ([]spool.KeyLink, error) {
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.pool.Query(cctx, "SELECT seq, replaced_by, key, sig FROM cspool_spool_key_replaced")
	if err != nil {
		return nil, callErr(ctx, "reading the spool keys replaced", err)
	}
	links, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (spool.KeyLink, error) {
		var l spool.KeyLink
		err := r.Scan(&l.Seq, &l.Key, &l.Previous, &l.Sig)
		return l, err
	})
	if err != nil {
		return nil, callErr(ctx, "reading the spool keys replaced", err)
	}
	return spool.ChainOf(links, pub), nil
}
