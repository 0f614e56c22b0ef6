package pgstore

import (
	"context"
	"errors"
	"fmt"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
)

// Compact stores cp as user's newest checkpoint and deletes every entry at a
// position <= cp.Pos except those in keep, in one transaction. It does not
// lock the user's log row: head never decreases, so a checkpoint position
// valid once stays valid, and appends only insert beyond the head. Two
// Compacts of one user serialise on the checkpoint row.
func (s *Store) Compact(ctx context.Context, user string, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	var st spool.CompactStats
	if err := spool.CheckUser(user); err != nil {
		return st, err
	}
	if cp.Pos == 0 || cp.Pos > 1<<63-1 {
		return st, fmt.Errorf("compacting %q at position %d: %w", user, cp.Pos, spool.ErrInvalidArgument)
	}
	keepPos := make([]int64, 0, len(keep))
	for _, k := range keep {
		if k > cp.Pos {
			return st, fmt.Errorf("compacting %q at %d, keeping position %d beyond it: %w", user, cp.Pos, k, spool.ErrInvalidArgument)
		}
		keepPos = append(keepPos, int64(k))
	}
	if cp.Data == nil {
		cp.Data = []byte{}
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return st, err
	}
	defer cancel()
	op := fmt.Sprintf("compacting %q at position %d", user, cp.Pos)
	err = pgx.BeginFunc(cctx, s.pool, func(tx pgx.Tx) error {
		var logID, head int64
		err := tx.QueryRow(cctx, "SELECT l.id, t.tip_head FROM cspool_logs l, cspool_tip(l.id) t WHERE l.name = $1",
			[]byte(user)).Scan(&logID, &head)
		if errors.Is(err, pgx.ErrNoRows) {
			head = 0
		} else if err != nil {
			return callErr(ctx, op, err)
		}
		if int64(cp.Pos) > head {
			return fmt.Errorf("%s beyond the head %d: %w", op, head, spool.ErrInvalidArgument)
		}
		// Compactions of one log take turns, so the old checkpoint's size
		// read here is the one replaced: the usage stays exact.
		if _, err := tx.Exec(cctx, "SELECT pg_advisory_xact_lock($1, $2)", compactLockClass, int32(logID)); err != nil {
			return callErr(ctx, op, err)
		}
		var oldLen int64
		err = tx.QueryRow(cctx, "SELECT length(data) FROM cspool_checkpoints WHERE log_id = $1", logID).Scan(&oldLen)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return callErr(ctx, op, err)
		}
		var stored bool
		err = tx.QueryRow(cctx, `INSERT INTO cspool_checkpoints AS c (log_id, pos, data) VALUES ($1, $2, $3)
			ON CONFLICT (log_id) DO UPDATE SET pos = EXCLUDED.pos, data = EXCLUDED.data
			WHERE c.pos < EXCLUDED.pos RETURNING true`, logID, int64(cp.Pos), cp.Data).Scan(&stored)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%s: %w", op, spool.ErrStaleCheckpoint)
		}
		if err != nil {
			return callErr(ctx, op, err)
		}
		err = tx.QueryRow(cctx, `WITH d AS (
				DELETE FROM cspool_entries WHERE log_id = $1 AND pos <= $2 AND pos <> ALL ($3::bigint[])
				RETURNING size)
			SELECT count(*), coalesce(sum(size), 0)::bigint FROM d`, logID, int64(cp.Pos), keepPos).Scan(&st.Deleted, &st.Bytes)
		if err != nil {
			return callErr(ctx, op, err)
		}
		err = tx.QueryRow(cctx, `SELECT count(*) FROM cspool_entries
			WHERE log_id = $1 AND pos = ANY ($2::bigint[])`, logID, keepPos).Scan(&st.Kept)
		if err != nil {
			return callErr(ctx, op, err)
		}
		// Last, so the log's row lock (appends to it wait) is held only to
		// the commit. The deleted entries' hashes went to cspool_chain
		// (trigger, schema/0005.sql).
		_, err = tx.Exec(cctx, "UPDATE cspool_logs SET bytes = bytes - $2 - $3 + $4 WHERE id = $1",
			logID, st.Bytes, oldLen, int64(len(cp.Data)))
		if err != nil {
			return callErr(ctx, op, err)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return spool.CompactStats{}, ctx.Err()
		}
		if errors.Is(err, spool.ErrInvalidArgument) || errors.Is(err, spool.ErrStaleCheckpoint) || errors.Is(err, spool.ErrUnavailable) {
			return spool.CompactStats{}, err
		}
		return spool.CompactStats{}, fmt.Errorf("%s: %w", op, classify(err))
	}
	return st, nil
}

// compactLockClass is the first key of the transaction advisory lock a
// compaction holds on its log ("cSp2"); the second is the log's id.
const compactLockClass int32 = 0x63537032

// LatestCheckpoint returns user's newest checkpoint, or an error wrapping
// spool.ErrNoCheckpoint.
func (s *Store) LatestCheckpoint(ctx context.Context, user string) (spool.Checkpoint, error) {
	var cp spool.Checkpoint
	if err := spool.CheckUser(user); err != nil {
		return cp, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return cp, err
	}
	defer cancel()
	var pos int64
	err = s.pool.QueryRow(cctx, `SELECT c.pos, c.data FROM cspool_checkpoints c
		JOIN cspool_logs l ON l.id = c.log_id WHERE l.name = $1`, []byte(user)).Scan(&pos, &cp.Data)
	if errors.Is(err, pgx.ErrNoRows) {
		return cp, fmt.Errorf("checkpoint of %q: %w", user, spool.ErrNoCheckpoint)
	}
	if err != nil {
		return cp, callErr(ctx, fmt.Sprintf("reading the checkpoint of %q", user), err)
	}
	cp.Pos = uint64(pos)
	if cp.Data == nil {
		cp.Data = []byte{}
	}
	return cp, nil
}

// FirstOfFormat implements spool.FormatFinder.
func (s *Store) FirstOfFormat(ctx context.Context, user string, upTo uint64, v byte) (uint64, error) {
	// The version byte follows the 4-byte magic; data is stored
	// uncompressed (EXTERNAL), so the slice is read alone.
	pos, err := s.logNumber(ctx, user, fmt.Sprintf("the first entry of format %d", v), `SELECT e.pos FROM cspool_entries e
		JOIN cspool_logs l ON l.id = e.log_id
		WHERE l.name = $1 AND e.pos <= $2 AND substring(e.data FROM 5 FOR 1) = $3 ORDER BY e.pos LIMIT 1`,
		int64(min(upTo, 1<<63-1)), []byte{v})
	return uint64(pos), err
}

// CheckpointSize implements spool.CheckpointSizer. octet_length of a
// bytea stored out of line reads its size from the TOAST pointer, not the
// value.
func (s *Store) CheckpointSize(ctx context.Context, user string) (int64, error) {
	return s.logNumber(ctx, user, "the checkpoint size", `SELECT octet_length(c.data) FROM cspool_checkpoints c
		JOIN cspool_logs l ON l.id = c.log_id WHERE l.name = $1`)
}

// CheckpointPos implements spool.CheckpointPositioner: the position of
// user's newest checkpoint, 0 if there is none. The data column is stored
// out of line (schema/0001.sql), so the query never reads it.
func (s *Store) CheckpointPos(ctx context.Context, user string) (uint64, error) {
	pos, err := s.logNumber(ctx, user, "the checkpoint position", `SELECT c.pos FROM cspool_checkpoints c
		JOIN cspool_logs l ON l.id = c.log_id WHERE l.name = $1`)
	return uint64(pos), err
}
