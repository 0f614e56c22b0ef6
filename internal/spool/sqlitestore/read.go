package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cspool/internal/spool"
)

// The statements of the read path. They are prepared once on the read
// pool (database/sql prepares each on a connection the first time it runs
// there and keeps it), so that the queries of a long-poll, which every
// waiting device renews every few tens of seconds, are not parsed again
// each time.
//
// pickSQL's limit is +? rather than ?: SQLite (3.47 on) reads a bare
// parameter's bound value when it plans a LIMIT and marks the statement
// to be compiled again whenever that parameter is bound anew, which the
// read path does at every Read (the count left of a response changes from
// chunk to chunk); the unary plus keeps the plan free of the value, so the
// statement is compiled once per connection, as the others are.
const (
	headSQL   = "SELECT head FROM users WHERE name = ?"
	userIDSQL = "SELECT id FROM users WHERE name = ?"
	pickSQL   = "SELECT pos, size FROM entries WHERE user_id = ? AND pos > ? ORDER BY pos LIMIT +?"
	dataSQL   = "SELECT pos, data FROM entries WHERE user_id = ? AND pos > ? AND pos <= ? ORDER BY pos"
	chainSQL  = `SELECT u.head, c.hash FROM users u
		LEFT JOIN chain c ON c.user_id = u.id AND c.pos = ? WHERE u.name = ?`
	cpPosSQL = `SELECT c.pos FROM checkpoints c
		JOIN users u ON u.id = c.user_id WHERE u.name = ?`
	tipSQL = `SELECT u.head, u.chain, coalesce((SELECT c.pos FROM checkpoints c WHERE c.user_id = u.id), 0)
		FROM users u WHERE u.name = ?`
)

var (
	_ spool.IntoReader  = (*Store)(nil)
	_ spool.SizedReader = (*Store)(nil)
)

// readStmts are the prepared statements of the read path.
type readStmts struct {
	head, userID, pick, data, chain, cpPos, tip *sql.Stmt
}

func (s *Store) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&s.stmts.head, headSQL}, {&s.stmts.userID, userIDSQL}, {&s.stmts.pick, pickSQL},
		{&s.stmts.data, dataSQL}, {&s.stmts.chain, chainSQL}, {&s.stmts.cpPos, cpPosSQL},
		{&s.stmts.tip, tipSQL},
	} {
		st, err := s.rdb.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("preparing %q: %w", p.sql, classify(err))
		}
		*p.stmt = st
	}
	return nil
}

func (st *readStmts) close() error {
	var errs []error
	for _, s := range []*sql.Stmt{st.head, st.userID, st.pick, st.data, st.chain, st.cpPos, st.tip} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

// Head implements spool.Store.
func (s *Store) Head(ctx context.Context, user string) (uint64, error) {
	if err := spool.CheckUser(user); err != nil {
		return 0, err
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	return s.head(ctx, user)
}

func (s *Store) head(ctx context.Context, user string) (uint64, error) {
	var head uint64
	err := s.stmts.head.QueryRowContext(ctx, []byte(user)).Scan(&head)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.dbErr("reading head", err)
	}
	return head, nil
}

// Read implements spool.Store. In one read transaction it first picks the
// positions that fit the limits from the (pos, size) columns, then loads the
// data of those entries only, into one buffer of the size the pick added
// up (ReadInto).
func (s *Store) Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]spool.Entry, error) {
	es, _, err := s.ReadInto(ctx, user, after, maxCount, maxBytes, nil)
	return es, err
}

// ReadInto implements spool.IntoReader: Read, the entries' bytes copied
// from the driver's row into buf, or into one buffer of the size the pick
// added up if buf is too small, each entry's Data a capped slice of it.
func (s *Store) ReadInto(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte) ([]spool.Entry, []byte, error) {
	return s.ReadSized(ctx, user, after, maxCount, maxBytes, buf, nil)
}

// ReadSized implements spool.SizedReader: ReadInto, room told the total
// the pick added up before the data is loaded (room nil: none told).
func (s *Store) ReadSized(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte, room func(int64) error) ([]spool.Entry, []byte, error) {
	if err := spool.CheckRead(user, maxCount, maxBytes); err != nil {
		return nil, buf, err
	}
	if err := s.check(); err != nil {
		return nil, buf, err
	}
	if after >= 1<<63 {
		return nil, buf, nil // beyond any position SQLite can hold
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, buf, s.dbErr("reading log", err)
	}
	defer tx.Rollback()
	var id int64
	err = tx.StmtContext(ctx, s.stmts.userID).QueryRowContext(ctx, []byte(user)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, buf, nil
	}
	if err != nil {
		return nil, buf, s.dbErr("reading log", err)
	}
	last, n, total, err := s.pick(ctx, tx, id, after, maxCount, maxBytes)
	if err != nil || n == 0 {
		return nil, buf, err
	}
	if room != nil {
		if err := room(total); err != nil {
			return nil, buf, err
		}
	}
	rows, err := tx.StmtContext(ctx, s.stmts.data).QueryContext(ctx, id, after, last)
	if err != nil {
		return nil, buf, s.dbErr("reading log", err)
	}
	defer rows.Close()
	if int64(cap(buf)) < total {
		buf = make([]byte, 0, total)
	}
	buf = buf[:0]
	es := make([]spool.Entry, 0, n)
	// The scan's destinations are declared once: each escapes to the
	// heap, so declared in the loop each would be an allocation a row.
	var (
		pos uint64
		raw sql.RawBytes // the driver's, valid until the next row
	)
	for rows.Next() {
		if err := rows.Scan(&pos, &raw); err != nil {
			return nil, buf, s.dbErr("reading log", err)
		}
		e := spool.Entry{Pos: pos}
		switch {
		case len(raw) == 0:
			// nil, as a scan into a []byte gives it
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
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, buf, s.dbErr("reading log", err)
	}
	if len(es) != n {
		return nil, buf, fmt.Errorf("reading log: %d entries in a snapshot that had %d", len(es), n)
	}
	return es, buf, nil
}

// pick returns the last position, the number of entries after `after`
// that fit maxCount and maxBytes (at least one if any exists), and their
// size in bytes.
func (s *Store) pick(ctx context.Context, tx *sql.Tx, id int64, after uint64, maxCount int, maxBytes int64) (last uint64, n int, total int64, err error) {
	rows, err := tx.StmtContext(ctx, s.stmts.pick).QueryContext(ctx, id, after, maxCount)
	if err != nil {
		return 0, 0, 0, s.dbErr("reading log", err)
	}
	defer rows.Close()
	var (
		pos  uint64
		size int64
	)
	for rows.Next() {
		if err := rows.Scan(&pos, &size); err != nil {
			return 0, 0, 0, s.dbErr("reading log", err)
		}
		if n > 0 && total+size > maxBytes {
			break
		}
		total += size
		last, n = pos, n+1
	}
	if err := rows.Err(); err != nil {
		return 0, 0, 0, s.dbErr("reading log", err)
	}
	return last, n, total, nil
}
