package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

var _ spool.SizedReader = (*Store)(nil)

// Read returns user's entries after position after: at most maxCount
// entries and maxBytes of data, but at least one if any exists. It first
// chooses positions from the (pos, size) columns with a LIMIT, without
// touching the data, then streams exactly the chosen entries (ReadSized).
func (s *Store) Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]spool.Entry, error) {
	es, _, err := s.ReadSized(ctx, user, after, maxCount, maxBytes, nil, nil)
	return es, err
}

// ReadSized implements spool.SizedReader: Read, room told the total of
// the size column over the entries picked before their data is loaded
// (room nil: none told), the entries' bytes copied into buf, or into one
// buffer of that total if buf is too small, each entry's Data a capped
// slice of it. The load reads the positions picked and no further, so an
// entry appended meanwhile is neither loaded nor told; a compaction
// meanwhile can only leave out some of those told.
func (s *Store) ReadSized(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte, room func(int64) error) ([]spool.Entry, []byte, error) {
	if err := spool.CheckRead(user, maxCount, maxBytes); err != nil {
		return nil, buf, err
	}
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return nil, buf, err
	}
	defer cancel()
	op := fmt.Sprintf("reading %q after %d", user, after)
	if after > 1<<63-1 {
		return nil, buf, nil
	}
	var logID int64
	err = s.pool.QueryRow(cctx, "SELECT id FROM cspool_logs WHERE name = $1", []byte(user)).Scan(&logID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, buf, nil
	}
	if err != nil {
		return nil, buf, callErr(ctx, op, err)
	}
	rows, err := s.pool.Query(cctx, `SELECT pos, size FROM cspool_entries
		WHERE log_id = $1 AND pos > $2 ORDER BY pos LIMIT $3`, logID, int64(after), maxCount)
	if err != nil {
		return nil, buf, callErr(ctx, op, err)
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
			return nil, buf, callErr(ctx, op, err)
		}
		if n > 0 && total+size > maxBytes {
			break
		}
		n, last, total = n+1, pos, total+size
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, buf, callErr(ctx, op, err)
	}
	if n == 0 {
		return nil, buf, nil
	}
	if room != nil {
		if err := room(total); err != nil {
			return nil, buf, err
		}
	}
	rows, err = s.pool.Query(cctx, `SELECT pos, data FROM cspool_entries
		WHERE log_id = $1 AND pos > $2 AND pos <= $3 ORDER BY pos`, logID, int64(after), last)
	if err != nil {
		return nil, buf, callErr(ctx, op, err)
	}
	defer rows.Close()
	if int64(cap(buf)) < total {
		buf = make([]byte, 0, total)
	}
	buf = buf[:0]
	out := make([]spool.Entry, 0, n)
	// The scan's destinations are declared once: each escapes to the heap.
	var (
		pos int64
		raw pgtype.DriverBytes // the driver's, valid until the next row
	)
	for rows.Next() {
		if err := rows.Scan(&pos, &raw); err != nil {
			return nil, buf, callErr(ctx, op, err)
		}
		e := spool.Entry{Pos: uint64(pos)}
		switch {
		case len(raw) == 0:
			e.Data = []byte{}
		case len(raw) > cap(buf)-len(buf):
			// More than the size column said (no store writes
			// that): an allocation of its own, not a grown buffer
			// the entries before would no longer share.
			e.Data = bytes.Clone(raw)
		default:
			start := len(buf)
			buf = append(buf, raw...)
			e.Data = buf[start:len(buf):len(buf)]
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, buf, callErr(ctx, op, err)
	}
	return out, buf, nil
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
