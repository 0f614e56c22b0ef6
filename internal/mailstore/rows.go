package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cspool/internal/command"
)

// queryer is what *sql.DB, *sql.Conn and *sql.Tx share.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// execQueryer runs statements in a transaction: the *sql.Tx itself, or
// the applier working in it, whose statements are prepared once on the
// writer.
type execQueryer interface {
	queryer
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// mailboxRow is a mailboxes row.
type mailboxRow struct {
	mid         int64
	id          command.ID
	name        string
	specialUse  string
	uidValidity int64
	uidNext     int64
	modSeq      int64
}

const mailboxColumns = "mid, id, name, special_use, uidvalidity, uidnext, highest_modseq"

type scanner interface{ Scan(dest ...any) error }

func scanMailbox(r scanner) (*mailboxRow, error) {
	var m mailboxRow
	var id []byte
	if err := r.Scan(&m.mid, &id, &m.name, &m.specialUse, &m.uidValidity, &m.uidNext, &m.modSeq); err != nil {
		return nil, err
	}
	copy(m.id[:], id)
	return &m, nil
}

// mailboxWhere returns the one mailbox matching where, or nil.
func mailboxWhere(ctx context.Context, q queryer, where string, arg any) (*mailboxRow, error) {
	m, err := scanMailbox(q.QueryRowContext(ctx, "SELECT "+mailboxColumns+" FROM mailboxes WHERE "+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading mailbox: %w", err)
	}
	return m, nil
}

func mailboxByID(ctx context.Context, q queryer, id command.ID) (*mailboxRow, error) {
	return mailboxWhere(ctx, q, "id = ?", id[:])
}

func mailboxByName(ctx context.Context, q queryer, name string) (*mailboxRow, error) {
	return mailboxWhere(ctx, q, "name = ?", NormalizeName(name))
}

func allMailboxes(ctx context.Context, q queryer) ([]*mailboxRow, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+mailboxColumns+" FROM mailboxes ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("listing mailboxes: %w", err)
	}
	defer rows.Close()
	var out []*mailboxRow
	for rows.Next() {
		m, err := scanMailbox(rows)
		if err != nil {
			return nil, fmt.Errorf("listing mailboxes: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing mailboxes: %w", err)
	}
	return out, nil
}

// messageRow is a messages row with its mailbox's id.
type messageRow struct {
	rid       int64
	id        command.ID
	mailbox   int64
	mailboxID command.ID
	uid       int64
	body      int64
	date      int64
	size      int64
	flags     flagSet
	modSeq    int64
}

const messageColumns = "m.rid, m.id, m.mailbox, mb.id, m.uid, m.body, m.date, m.size, m.flags, m.keywords, m.modseq"
const messageFrom = " FROM messages m JOIN mailboxes mb ON mb.mid = m.mailbox "

func scanMessage(r scanner) (*messageRow, error) {
	var m messageRow
	var id, mbid []byte
	var kw string
	if err := r.Scan(&m.rid, &id, &m.mailbox, &mbid, &m.uid, &m.body, &m.date, &m.size, &m.flags.bits, &kw, &m.modSeq); err != nil {
		return nil, err
	}
	copy(m.id[:], id)
	copy(m.mailboxID[:], mbid)
	m.flags.keywords = decodeKeywords(kw)
	return &m, nil
}

// messageByID returns the message with id, or nil.
func messageByID(ctx context.Context, q queryer, id command.ID) (*messageRow, error) {
	m, err := scanMessage(q.QueryRowContext(ctx, "SELECT "+messageColumns+messageFrom+"WHERE m.id = ?", id[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading message %s: %w", id, err)
	}
	return m, nil
}

// txStmts is a read transaction that prepares each query once: a scan
// reads every message's body (and its stored texts) with the same few
// queries, and preparing them again for each message was a seventh of a
// SEARCH BODY over bodies the index does not hold yet. The statements
// end with the transaction.
type txStmts struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

func (t *txStmts) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := t.stmts[query]; ok {
		return st, nil
	}
	st, err := t.tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if t.stmts == nil {
		t.stmts = make(map[string]*sql.Stmt)
	}
	t.stmts[query] = st
	return st, nil
}

func (t *txStmts) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (t *txStmts) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := t.stmt(ctx, query)
	if err != nil {
		// A Row carrying the error: preparing again on the transaction
		// reports it through Scan.
		return t.tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}
