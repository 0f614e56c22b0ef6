package pgstore

import (
	"context"
	"errors"
	"fmt"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
)

// ChainHash implements spool.Chainer: the zero Hash for pos 0, the stored
// hash of pos for 1 <= pos <= head (on its cspool_entries row, or in
// cspool_chain for positions compaction deleted and those appended before
// schema version 5), and spool.ErrInvalidArgument beyond the head. Head
// and hash come from one statement, hence one snapshot.
func (s *Store) ChainHash(ctx context.Context, user string, pos uint64) (spool.Hash, error) {
	var h spool.Hash
	if err := spool.CheckUser(user); err != nil {
		return h, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return h, err
	}
	defer cancel()
	if pos == 0 {
		return h, nil
	}
	if pos > 1<<63-1 {
		return h, fmt.Errorf("chain hash of %q at %d: beyond the head: %w", user, pos, spool.ErrInvalidArgument)
	}
	var head int64
	var hash []byte
	err = s.pool.QueryRow(cctx, `SELECT t.tip_head, coalesce(
			(SELECT e.hash FROM cspool_entries e WHERE e.log_id = l.id AND e.pos = $2),
			(SELECT c.hash FROM cspool_chain c WHERE c.log_id = l.id AND c.pos = $2))
		FROM cspool_logs l, cspool_tip(l.id) t WHERE l.name = $1`,
		[]byte(user), int64(pos)).Scan(&head, &hash)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return h, callErr(ctx, fmt.Sprintf("reading the chain hash of %q at %d", user, pos), err)
	}
	if int64(pos) > head {
		return h, fmt.Errorf("chain hash of %q at %d: beyond the head %d: %w", user, pos, head, spool.ErrInvalidArgument)
	}
	if len(hash) != len(h) {
		return h, fmt.Errorf("chain hash of %q at %d (head %d): missing from the database", user, pos, head)
	}
	copy(h[:], hash)
	return h, nil
}

// Tip implements spool.TipReader: the head and the chain hash at it
// (cspool_tip, schema/0005.sql) and the checkpoint's position, in one
// statement.
func (s *Store) Tip(ctx context.Context, user string) (spool.Tip, error) {
	var t spool.Tip
	if err := spool.CheckUser(user); err != nil {
		return t, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return t, err
	}
	defer cancel()
	var head, cp int64
	var hash []byte
	err = s.pool.QueryRow(cctx, `SELECT t.tip_head, t.tip_hash,
			coalesce((SELECT c.pos FROM cspool_checkpoints c WHERE c.log_id = l.id), 0)
		FROM cspool_logs l, cspool_tip(l.id) t WHERE l.name = $1`, []byte(user)).Scan(&head, &hash, &cp)
	if errors.Is(err, pgx.ErrNoRows) {
		return spool.Tip{}, nil
	}
	if err != nil {
		return spool.Tip{}, callErr(ctx, fmt.Sprintf("reading the tip of %q", user), err)
	}
	if len(hash) != len(t.HeadHash) {
		return spool.Tip{}, fmt.Errorf("reading the tip of %q: chain hash of %d bytes", user, len(hash))
	}
	t.Head, t.Checkpoint = uint64(head), uint64(cp)
	copy(t.HeadHash[:], hash)
	return t, nil
}
