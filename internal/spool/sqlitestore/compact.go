package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"cspool/internal/spool"
)

// reclaimStep is the most free pages one incremental vacuum job hands back
// to the file system (16 MiB at 4 KiB pages), so appends wait at most one
// step for the write connection.
const reclaimStep = 4096

// writeJob is work for the writer goroutine other than an append group.
type writeJob struct {
	run  func(db *sql.DB)
	done chan struct{} // closed by the writer after run returned
}

// onWriter runs fn on the writer goroutine with the write connection and
// waits for it. It returns ErrClosed or ctx.Err() if fn never started; once
// fn started it runs to its end (fn itself decides what ctx means to it).
func (s *Store) onWriter(ctx context.Context, fn func(db *sql.DB)) error {
	if err := s.check(); err != nil {
		return err
	}
	j := &writeJob{run: fn, done: make(chan struct{})}
	select {
	case s.jobs <- j:
	case <-s.quit:
		return spool.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	<-j.done
	return nil
}

// Compact implements spool.Compactor. In one IMMEDIATE transaction on the
// writer it checks cp against the head and the stored checkpoint, replaces
// the checkpoint, and deletes the entries at positions <= cp.Pos that keep
// does not list. Then it hands the freed pages back to the file system
// (databases with auto_vacuum=INCREMENTAL); that step's failure is only
// logged, since the compaction itself has committed.
func (s *Store) Compact(ctx context.Context, user string, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	if err := spool.CheckUser(user); err != nil {
		return spool.CompactStats{}, err
	}
	op := fmt.Sprintf("compacting log at position %d", cp.Pos)
	if cp.Pos == 0 || cp.Pos >= 1<<63 {
		return spool.CompactStats{}, fmt.Errorf("%s: %w", op, spool.ErrInvalidArgument)
	}
	keep = slices.Clone(keep)
	slices.Sort(keep)
	keep = slices.Compact(keep)
	if len(keep) > 0 && keep[len(keep)-1] > cp.Pos {
		return spool.CompactStats{}, fmt.Errorf("%s: keeping position %d beyond it: %w", op, keep[len(keep)-1], spool.ErrInvalidArgument)
	}
	if cp.Data == nil {
		cp.Data = []byte{} // NOT NULL: an empty checkpoint is a zero-length blob
	}
	var st spool.CompactStats
	var err error
	if werr := s.onWriter(ctx, func(db *sql.DB) { st, err = compactTx(ctx, db, user, cp, keep) }); werr != nil {
		return spool.CompactStats{}, werr
	}
	if err != nil {
		if ctx.Err() != nil {
			return spool.CompactStats{}, ctx.Err()
		}
		if errors.Is(err, spool.ErrStaleCheckpoint) || errors.Is(err, spool.ErrInvalidArgument) {
			return spool.CompactStats{}, fmt.Errorf("%s: %w", op, err)
		}
		return spool.CompactStats{}, s.dbErr(op, err)
	}
	if st.Deleted > 0 {
		if err := s.reclaim(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("spool: reclaiming space after compaction", "dir", s.dir, "err", err)
		}
	}
	return st, nil
}

// compactTx is Compact's transaction. keep is sorted, without duplicates,
// and holds no position beyond cp.Pos.
func compactTx(ctx context.Context, db *sql.DB, user string, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	var st spool.CompactStats
	tx, err := db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return st, fmt.Errorf("starting transaction: %w", err)
	}
	defer tx.Rollback()
	var id int64
	var head uint64
	err = tx.QueryRowContext(ctx, "SELECT id, head FROM users WHERE name = ?", []byte(user)).Scan(&id, &head)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("reading head: %w", err)
	}
	if cp.Pos > head {
		return st, fmt.Errorf("beyond the head %d: %w", head, spool.ErrInvalidArgument)
	}
	var old uint64
	var oldLen int64
	err = tx.QueryRowContext(ctx, "SELECT pos, length(data) FROM checkpoints WHERE user_id = ?", id).Scan(&old, &oldLen)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("reading checkpoint: %w", err)
	}
	if old >= cp.Pos {
		return st, fmt.Errorf("checkpoint at %d stored: %w", old, spool.ErrStaleCheckpoint)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoints (user_id, pos, data) VALUES (?, ?, ?)
		ON CONFLICT (user_id) DO UPDATE SET pos = excluded.pos, data = excluded.data`, id, cp.Pos, cp.Data); err != nil {
		return st, fmt.Errorf("storing checkpoint: %w", err)
	}
	del, err := tx.PrepareContext(ctx, "DELETE FROM entries WHERE user_id = ? AND pos > ? AND pos < ? RETURNING size")
	if err != nil {
		return st, fmt.Errorf("preparing delete: %w", err)
	}
	defer del.Close()
	// Delete the gaps between kept positions: (0, k1), (k1, k2), ...,
	// (kn, cp.Pos+1). Adjacent kept positions leave no gap to visit.
	prev := uint64(0)
	for i := 0; i <= len(keep); i++ {
		next := cp.Pos + 1
		if i < len(keep) {
			next = keep[i]
		}
		if next > prev+1 {
			if err := deleteGap(ctx, del, id, prev, next, &st); err != nil {
				return st, err
			}
		}
		prev = next
	}
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM entries WHERE user_id = ? AND pos <= ?", id, cp.Pos).Scan(&st.Kept); err != nil {
		return st, fmt.Errorf("counting kept entries: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE users SET bytes = bytes - ? - ? + ? WHERE id = ?", st.Bytes, oldLen, len(cp.Data), id); err != nil {
		return st, fmt.Errorf("updating usage: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return st, fmt.Errorf("committing: %w", err)
	}
	return st, nil
}

// deleteGap deletes the entries strictly between lo and hi and adds them to
// st.
func deleteGap(ctx context.Context, del *sql.Stmt, id int64, lo, hi uint64, st *spool.CompactStats) error {
	rows, err := del.QueryContext(ctx, id, lo, hi)
	if err != nil {
		return fmt.Errorf("deleting entries %d..%d: %w", lo+1, hi-1, err)
	}
	defer rows.Close()
	for rows.Next() {
		var size int64
		if err := rows.Scan(&size); err != nil {
			return fmt.Errorf("deleting entries %d..%d: %w", lo+1, hi-1, err)
		}
		st.Deleted++
		st.Bytes += size
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("deleting entries %d..%d: %w", lo+1, hi-1, err)
	}
	return nil
}

// reclaim hands free pages back to the file system, reclaimStep pages per
// writer job so that appends interleave. It does nothing on a database
// without auto_vacuum=INCREMENTAL (its free pages are reused by appends).
// The loop is bounded: each step frees up to reclaimStep pages, and the
// free list only grows by deletions.
func (s *Store) reclaim(ctx context.Context) error {
	var mode, free int64
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil {
		return fmt.Errorf("reading auto_vacuum: %w", err)
	}
	if mode != 2 {
		return nil
	}
	for i := 0; i < 1<<20; i++ {
		var err error
		if werr := s.onWriter(ctx, func(db *sql.DB) {
			if _, err = db.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", reclaimStep)); err != nil {
				return
			}
			err = db.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free)
		}); werr != nil {
			return werr
		}
		if err != nil {
			return fmt.Errorf("incremental vacuum: %w", classify(err))
		}
		if free == 0 {
			return nil
		}
	}
	return nil
}

// LatestCheckpoint implements spool.Compactor.
func (s *Store) LatestCheckpoint(ctx context.Context, user string) (spool.Checkpoint, error) {
	var cp spool.Checkpoint
	if err := spool.CheckUser(user); err != nil {
		return cp, err
	}
	if err := s.check(); err != nil {
		return cp, err
	}
	err := s.rdb.QueryRowContext(ctx, `SELECT c.pos, c.data FROM checkpoints c
		JOIN users u ON u.id = c.user_id WHERE u.name = ?`, []byte(user)).Scan(&cp.Pos, &cp.Data)
	if errors.Is(err, sql.ErrNoRows) {
		return spool.Checkpoint{}, fmt.Errorf("reading checkpoint: %w", spool.ErrNoCheckpoint)
	}
	if err != nil {
		return spool.Checkpoint{}, s.dbErr("reading checkpoint", err)
	}
	if cp.Data == nil {
		cp.Data = []byte{}
	}
	return cp, nil
}

// CheckpointSize implements spool.CheckpointSizer. SQLite's length() of a
// blob reads its size from the row's header, not its pages.
func (s *Store) CheckpointSize(ctx context.Context, user string) (int64, error) {
	if err := spool.CheckUser(user); err != nil {
		return 0, err
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int64
	err := s.rdb.QueryRowContext(ctx, `SELECT length(c.data) FROM checkpoints c
		JOIN users u ON u.id = c.user_id WHERE u.name = ?`, []byte(user)).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.dbErr("reading checkpoint size", err)
	}
	return n, nil
}

// FirstOfFormat implements spool.FormatFinder.
func (s *Store) FirstOfFormat(ctx context.Context, user string, upTo uint64, v byte) (uint64, error) {
	if err := spool.CheckUser(user); err != nil {
		return 0, err
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	var pos uint64
	// The version byte follows the 4-byte magic: substr counts from 1.
	err := s.rdb.QueryRowContext(ctx, `SELECT e.pos FROM entries e JOIN users u ON u.id = e.user_id
		WHERE u.name = ? AND e.pos <= ? AND substr(e.data, 5, 1) = ? ORDER BY e.pos LIMIT 1`,
		[]byte(user), min(upTo, 1<<63-1), []byte{v}).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.dbErr("finding entries of a format", err)
	}
	return pos, nil
}

// CheckpointPos implements spool.CheckpointPositioner: the position of
// user's newest checkpoint, 0 if there is none, without loading the
// checkpoint's data (pos comes before data in the row).
func (s *Store) CheckpointPos(ctx context.Context, user string) (uint64, error) {
	if err := spool.CheckUser(user); err != nil {
		return 0, err
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	var pos uint64
	err := s.stmts.cpPos.QueryRowContext(ctx, []byte(user)).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.dbErr("reading checkpoint position", err)
	}
	return pos, nil
}
