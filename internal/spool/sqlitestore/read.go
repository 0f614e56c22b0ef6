package sqlitestore

import (
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
// data of those entries only.
func (s *Store) Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]spool.Entry, error) {
	if err := spool.CheckRead(user, maxCount, maxBytes); err != nil {
		return nil, err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if after >= 1<<63 {
		return nil, nil // beyond any position SQLite can hold
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, s.dbErr("reading log", err)
	}
	defer tx.Rollback()
	var id int64
	err = tx.StmtContext(ctx, s.stmts.userID).QueryRowContext(ctx, []byte(user)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, s.dbErr("reading log", err)
	}
	last, n, err := s.pick(ctx, tx, id, after, maxCount, maxBytes)
	if err != nil || n == 0 {
		return nil, err
	}
	rows, err := tx.StmtContext(ctx, s.stmts.data).QueryContext(ctx, id, after, last)
	if err != nil {
		return nil, s.dbErr("reading log", err)
	}
	defer rows.Close()
	es := make([]spool.Entry, 0, n)
	for rows.Next() {
		var e spool.Entry
		if err := rows.Scan(&e.Pos, &e.Data); err != nil {
			return nil, s.dbErr("reading log", err)
		}
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.dbErr("reading log", err)
	}
	if len(es) != n {
		return nil, fmt.Errorf("reading log: %d entries in a snapshot that had %d", len(es), n)
	}
	return es, nil
}

// pick returns the last position and the number of entries after `after`
// that fit maxCount and maxBytes (at least one if any exists).
func (s *Store) pick(ctx context.Context, tx *sql.Tx, id int64, after uint64, maxCount int, maxBytes int64) (last uint64, n int, err error) {
	rows, err := tx.StmtContext(ctx, s.stmts.pick).QueryContext(ctx, id, after, maxCount)
	if err != nil {
		return 0, 0, s.dbErr("reading log", err)
	}
	defer rows.Close()
	var total int64
	for rows.Next() {
		var pos uint64
		var size int64
		if err := rows.Scan(&pos, &size); err != nil {
			return 0, 0, s.dbErr("reading log", err)
		}
		if n > 0 && total+size > maxBytes {
			break
		}
		total += size
		last, n = pos, n+1
	}
	if err := rows.Err(); err != nil {
		return 0, 0, s.dbErr("reading log", err)
	}
	return last, n, nil
}
