package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cspool/internal/spool"
)

// ChainHash implements spool.Chainer: the zero Hash for pos 0, the stored
// hash of pos for 1 <= pos <= head (also for positions compaction deleted),
// and spool.ErrInvalidArgument beyond the head. Head and hash come from one
// statement, hence one snapshot.
func (s *Store) ChainHash(ctx context.Context, user string, pos uint64) (spool.Hash, error) {
	var h spool.Hash
	if err := spool.CheckUser(user); err != nil {
		return h, err
	}
	if err := s.check(); err != nil {
		return h, err
	}
	if pos == 0 {
		return h, nil
	}
	if pos >= 1<<63 {
		return h, fmt.Errorf("chain hash at %d: beyond the head: %w", pos, spool.ErrInvalidArgument)
	}
	var head uint64
	var hash []byte
	err := s.stmts.chain.QueryRowContext(ctx, pos, []byte(user)).Scan(&head, &hash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return h, s.dbErr(fmt.Sprintf("reading chain hash at %d", pos), err)
	}
	if pos > head {
		return h, fmt.Errorf("chain hash at %d: beyond the head %d: %w", pos, head, spool.ErrInvalidArgument)
	}
	if len(hash) != len(h) {
		return h, fmt.Errorf("chain hash at %d (head %d): missing from the database", pos, head)
	}
	copy(h[:], hash)
	return h, nil
}

// chainRows inserts the hashes of a batch appended after prev at first..,
// and returns the hash at the batch's last position.
func chainRows(ctx context.Context, ins *sql.Stmt, id int64, first uint64, prev spool.Hash, batch [][]byte) (spool.Hash, error) {
	h := prev
	for i, d := range batch {
		h = spool.ChainNext(h, d)
		if _, err := ins.ExecContext(ctx, id, first+uint64(i), h[:]); err != nil {
			return h, fmt.Errorf("storing chain hash %d: %w", first+uint64(i), err)
		}
	}
	return h, nil
}

// backfillChain computes the chain of every log present when the schema
// reaches version 3, inside the migration's transaction. A log that lacks
// some of its entries (compacted by an earlier version) cannot be chained:
// the migration fails with ErrCompactedLog and changes nothing.
func backfillChain(ctx context.Context, tx *sql.Tx) error {
	type log struct {
		id          int64
		name        []byte
		head, count uint64
	}
	rows, err := tx.QueryContext(ctx, `SELECT u.id, u.name, u.head,
		(SELECT count(*) FROM entries e WHERE e.user_id = u.id) FROM users u ORDER BY u.id`)
	if err != nil {
		return fmt.Errorf("listing logs: %w", classify(err))
	}
	var logs []log
	for rows.Next() {
		var l log
		if err := rows.Scan(&l.id, &l.name, &l.head, &l.count); err != nil {
			rows.Close()
			return fmt.Errorf("listing logs: %w", classify(err))
		}
		logs = append(logs, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing logs: %w", classify(err))
	}
	for _, l := range logs {
		if l.count != l.head {
			return fmt.Errorf("log %q holds %d of its %d entries: %w", l.name, l.count, l.head, ErrCompactedLog)
		}
	}
	ins, err := tx.PrepareContext(ctx, "INSERT INTO chain (user_id, pos, hash) VALUES (?, ?, ?)")
	if err != nil {
		return fmt.Errorf("preparing chain insert: %w", classify(err))
	}
	defer ins.Close()
	for _, l := range logs {
		h, err := chainLog(ctx, tx, ins, l.id, l.head)
		if err != nil {
			return fmt.Errorf("chaining log %q: %w", l.name, err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE users SET chain = ? WHERE id = ?", h[:], l.id); err != nil {
			return fmt.Errorf("chaining log %q: %w", l.name, classify(err))
		}
	}
	return nil
}

// chainLog hashes the dense entries 1..head of one log, step
// entries at a time (so one entry's data is in memory at a time while
// reading), storing every hash.
func chainLog(ctx context.Context, tx *sql.Tx, ins *sql.Stmt, id int64, head uint64) (spool.Hash, error) {
	var h spool.Hash
	const step = 512
	pos := uint64(0)
	for pos < head {
		hashes := make([]spool.Hash, 0, step)
		rows, err := tx.QueryContext(ctx,
			"SELECT pos, data FROM entries WHERE user_id = ? AND pos > ? ORDER BY pos LIMIT ?", id, pos, step)
		if err != nil {
			return h, classify(err)
		}
		for rows.Next() {
			var p uint64
			var data []byte
			if err := rows.Scan(&p, &data); err != nil {
				rows.Close()
				return h, classify(err)
			}
			if p != pos+uint64(len(hashes))+1 {
				rows.Close()
				return h, fmt.Errorf("entry %d follows %d: %w", p, pos+uint64(len(hashes)), ErrCompactedLog)
			}
			h = spool.ChainNext(h, data)
			hashes = append(hashes, h)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return h, classify(err)
		}
		if len(hashes) == 0 {
			return h, fmt.Errorf("no entry after %d of %d: %w", pos, head, ErrCompactedLog)
		}
		for i, hh := range hashes {
			if _, err := ins.ExecContext(ctx, id, pos+uint64(i)+1, hh[:]); err != nil {
				return h, fmt.Errorf("storing chain hash %d: %w", pos+uint64(i)+1, classify(err))
			}
		}
		pos += uint64(len(hashes))
	}
	return h, nil
}

// Tip implements spool.TipReader: the head, the chain hash kept on the
// user's row (the hash at the head) and the checkpoint's position, in one
// statement.
func (s *Store) Tip(ctx context.Context, user string) (spool.Tip, error) {
	var t spool.Tip
	if err := spool.CheckUser(user); err != nil {
		return t, err
	}
	if err := s.check(); err != nil {
		return t, err
	}
	var hash []byte
	err := s.stmts.tip.QueryRowContext(ctx, []byte(user)).Scan(&t.Head, &hash, &t.Checkpoint)
	if errors.Is(err, sql.ErrNoRows) {
		return spool.Tip{}, nil
	}
	if err != nil {
		return spool.Tip{}, s.dbErr("reading the log's tip", err)
	}
	if len(hash) != len(t.HeadHash) {
		return spool.Tip{}, fmt.Errorf("reading the log's tip: chain hash of %d bytes", len(hash))
	}
	copy(t.HeadHash[:], hash)
	return t, nil
}
