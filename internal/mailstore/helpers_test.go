package mailstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// openTest opens a new store in a folder of the test's. It starts as a
// copy of an empty store made once per test process (emptyStore):
// creating the schema takes most of a second under the race detector, and
// most tests open several stores.
func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(emptyStoreFile(t), mimeform.Parser{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// emptyStoreFile writes the file of a new, empty store (emptyStore) into
// a folder of the test's and returns its path: what Open makes of a path
// where nothing is, without creating the schema again.
func emptyStoreFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mail.db")
	b, err := emptyStore()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// empty is the file of a new store, made once.
var empty struct {
	once sync.Once
	b    []byte
	err  error
}

// emptyStore returns the file of a new, empty store: Open makes it in a
// folder of its own, which is removed once it is read.
func emptyStore() ([]byte, error) {
	empty.once.Do(func() {
		dir, err := os.MkdirTemp("", "cspool-mailstore-test-")
		if err != nil {
			empty.err = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "empty.db")
		s, err := Open(path, mimeform.Parser{})
		if err != nil {
			empty.err = err
			return
		}
		if empty.err = s.Close(); empty.err != nil {
			return
		}
		// Closed, the store is its one file: the WAL was checkpointed.
		if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > 0 {
			empty.err = fmt.Errorf("the empty store kept a WAL of %d bytes after closing", fi.Size())
			return
		}
		empty.b, empty.err = os.ReadFile(path)
	})
	return empty.b, empty.err
}

// testLog hands out positions and entry ids in order.
type testLog struct {
	pos uint64
}

func entryID(pos uint64) command.ID {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], pos)
	sum := sha256.Sum256(append([]byte("test entry "), b[:]...))
	var id command.ID
	copy(id[:], sum[:])
	return id
}

func (l *testLog) user(c *command.Command) Entry  { return l.by(AuthorUser, c) }
func (l *testLog) spool(c *command.Command) Entry { return l.by(AuthorSpool, c) }

func (l *testLog) by(a Author, c *command.Command) Entry {
	l.pos++
	return Entry{Pos: l.pos, ID: entryID(l.pos), Author: a, Cmd: c}
}

func mustApply(t testing.TB, s *Store, entries ...Entry) *Result {
	t.Helper()
	if len(entries) == 0 {
		t.Fatal("mustApply without entries")
	}
	res, err := s.Apply(context.Background(), entries, entries[len(entries)-1].Pos)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func deliverCmd(body string) *command.Command {
	return &command.Command{Kind: command.Deliver, Date: 1700000000000, Body: []byte(body)}
}

func simpleMessage(subject string) string {
	return fmt.Sprintf("From: a@example.org\r\nTo: b@example.org\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nHello %s.\r\n", subject, subject, subject)
}

func mailboxID(t testing.TB, s *Store, name string) command.ID {
	t.Helper()
	mb, err := s.MailboxByName(context.Background(), name)
	if err != nil {
		t.Fatalf("MailboxByName(%q): %v", name, err)
	}
	return mb.ID
}

func uidsOf(t testing.TB, s *Store, name string) []UID {
	t.Helper()
	uids, err := s.UIDs(context.Background(), mailboxID(t, s, name))
	if err != nil {
		t.Fatalf("UIDs(%q): %v", name, err)
	}
	return uids
}

func dump(t testing.TB, s *Store) *State {
	t.Helper()
	st, err := s.Dump(context.Background())
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return st
}

// queryPlan returns the detail column of query's rows, an EXPLAIN QUERY
// PLAN run on db with args.
func queryPlan(t testing.TB, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.QueryContext(t.Context(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// deliverMany applies n deliveries of small messages, subjects prefix0,
// prefix1, ..., in one Apply and returns their ids.
func deliverMany(t testing.TB, s *Store, l *testLog, n int, prefix string) []command.ID {
	t.Helper()
	ids := make([]command.ID, 0, n)
	var delivered []Entry
	for i := range n {
		e := l.spool(deliverCmd(simpleMessage(fmt.Sprint(prefix, i))))
		delivered = append(delivered, e)
		ids = append(ids, e.ID)
	}
	mustApply(t, s, delivered...)
	return ids
}

// stmtTrace keeps the statements an apply on a store's writer runs
// (Store.traceStmt), from traceStatements or the last reset on.
type stmtTrace struct{ stmts []string }

func traceStatements(s *Store) *stmtTrace {
	tr := &stmtTrace{}
	s.traceStmt = func(q string) { tr.stmts = append(tr.stmts, q) }
	return tr
}

func (tr *stmtTrace) reset() { tr.stmts = nil }

// count returns how many statements kept start with prefix.
func (tr *stmtTrace) count(prefix string) int {
	n := 0
	for _, q := range tr.stmts {
		if strings.HasPrefix(strings.TrimSpace(q), prefix) {
			n++
		}
	}
	return n
}
