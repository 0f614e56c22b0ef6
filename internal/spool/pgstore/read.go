package pgstore

import (
	"context"
	"errors"
	"fmt"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
)

// Read returns user's entries after position after: at most maxCount
// entries and maxBytes of data, but at least one if any exists. It first
// chooses positions from the (pos, size) columns with a LIMIT, without
// touching the data, then streams exactly the chosen entries.
func (s *Store) Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]spool.Entry, error) {
	if err := spool.CheckRead(user, maxCount, maxBytes); err != nil {
		return nil, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	op := fmt.Sprintf("reading %q after %d", user, after)
	if after > 1<<63-1 {
		return nil, nil
	}
	var logID int64
	err = s.pool.QueryRow(cctx, "SELECT id FROM cspool_logs WHERE name = $1", []byte(user)).Scan(&logID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, callErr(ctx, op, err)
	}
	rows, err := s.pool.Query(cctx, `SELECT pos, size FROM cspool_entries
		WHERE log_id = $1 AND pos > $2 ORDER BY pos LIMIT $3`, logID, int64(after), maxCount)
	if err != nil {
		return nil, callErr(ctx, op, err)
	}
	var (
		n     int
		last  int64
		total int64
	)
	for rows.Next() {
		var pos, size int64
		if err := rows.Scan(&pos, &size); err != nil {
			rows.Close()
			return nil, callErr(ctx, op, err)
		}
		if n > 0 && total+size > maxBytes {
			break
		}
		n, last, total = n+1, pos, total+size
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, callErr(ctx, op, err)
	}
	if n == 0 {
		return nil, nil
	}
	rows, err = s.pool.Query(cctx, `SELECT pos, data FROM cspool_entries
		WHERE log_id = $1 AND pos > $2 AND pos <= $3 ORDER BY pos`, logID, int64(after), last)
	if err != nil {
		return nil, callErr(ctx, op, err)
	}
	defer rows.Close()
	out := make([]spool.Entry, 0, n)
	for rows.Next() {
		var e spool.Entry
		var pos int64
		if err := rows.Scan(&pos, &e.Data); err != nil {
			return nil, callErr(ctx, op, err)
		}
		if e.Data == nil {
			e.Data = []byte{}
		}
		e.Pos = uint64(pos)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, callErr(ctx, op, err)
	}
	return out, nil
}

// Head returns the last position ever assigned in user's log, 0 for an
// unknown user (cspool_tip, schema/0005.sql).
func (s *Store) Head(ctx context.Context, user string) (uint64, error) {
	head, err := s.logNumber(ctx, user, "the head", "SELECT t.tip_head FROM cspool_logs l, cspool_tip(l.id) t WHERE l.name = $1")
	return uint64(head), err
}

// logNumber reads one number of user's log: query takes the log's name as
// $1 (args, if any, as $2 on) and returns one row of one integer, or none,
// which is 0 (an unknown user, a log without a checkpoint). what names the
// number in an error.
func (s *Store) logNumber(ctx context.Context, user, what, query string, args ...any) (int64, error) {
	if err := spool.CheckUser(user); err != nil {
		return 0, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var n int64
	err = s.pool.QueryRow(cctx, query, append([]any{[]byte(user)}, args...)...).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, callErr(ctx, fmt.Sprintf("reading %s of %q", what, user), err)
	}
	return n, nil
}
