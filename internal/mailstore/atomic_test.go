package mailstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/command"
)

// TestApplyIsAllOrNothing fails an Apply midway with real failures: the
// database full at a given entry (SQLite's max_page_count on the store's
// writer connection: what a full disk does), or the context cancelled,
// wherever that strikes. A failed Apply changes nothing and records no
// rejection, and the same batch applies cleanly afterwards.
func TestApplyIsAllOrNothing(t *testing.T) {
	t.Parallel()
	t.Run("database full at entry 5", func(t *testing.T) { testApplyFull(t, 5) })
	t.Run("database full at the last entry", func(t *testing.T) { testApplyFull(t, 9) })
	t.Run("context cancelled anywhere", testApplyCancelled)
}

// allOrNothing is a store with a first batch applied, and a second batch
// of ten entries to fail: deliveries, moves of the first batch's messages,
// and rejected expunges by the spool, with a delivery of a body of about
// 1 MiB at index big (none if big < 0).
type allOrNothing struct {
	s      *Store
	before *State
	batch  []Entry
	big    int
}

func newAllOrNothing(t *testing.T, big int) *allOrNothing {
	s := openTest(t)
	var l testLog
	var first []Entry
	for i := range 5 {
		first = append(first, l.spool(deliverCmd(simpleMessage(fmt.Sprint("first", i)))))
	}
	mustApply(t, s, first...)
	var batch []Entry
	for i := range 10 {
		switch {
		case i == big:
			// Random bytes, so that no page of it is shared or
			// compressed away.
			body := make([]byte, 1<<20)
			rand.NewChaCha8([32]byte{byte(i)}).Read(body)
			batch = append(batch, l.spool(deliverCmd(simpleMessage("big")+base64.StdEncoding.EncodeToString(body))))
		case i%3 == 0:
			batch = append(batch, l.spool(deliverCmd(simpleMessage(fmt.Sprint("second", i)))))
		case i%3 == 1:
			batch = append(batch, l.user(&command.Command{Kind: command.Move, Mailbox: "Archive", IDs: []command.ID{first[i/3].ID}}))
		default:
			batch = append(batch, l.spool(&command.Command{Kind: command.Expunge, IDs: []command.ID{first[0].ID}})) // rejected
		}
	}
	return &allOrNothing{s: s, before: dump(t, s), batch: batch, big: big}
}

// unchanged fails the test if a failed Apply left anything behind.
func (x *allOrNothing) unchanged(t *testing.T) {
	t.Helper()
	if d := Diff(x.before, dump(t, x.s), 10); d != nil {
		t.Fatalf("state changed by a failed Apply: %v", d)
	}
	if n, err := x.s.RejectedCount(context.Background()); err != nil || n != 0 {
		t.Fatalf("rejections recorded by a failed Apply: expected 0, got %d, %v", n, err)
	}
}

// applied checks the result of the batch applied in full.
func (x *allOrNothing) applied(t *testing.T, res *Result) {
	t.Helper()
	for i, o := range res.Outcomes {
		want := Applied
		if i%3 == 2 && i != x.big {
			want = Rejected
		}
		if o.Status != want {
			t.Errorf("retry, entry %d: expected %s, got %s (%s)", i, want, o.Status, o.Detail)
		}
	}
	last := x.batch[len(x.batch)-1].Pos
	if pos, _ := x.s.Position(context.Background()); pos != last {
		t.Errorf("position after retry: expected %d, got %d", last, pos)
	}
}

// testApplyFull fills the database at the batch's entry big: the writer
// connection may grow the file by 64 pages (256 KiB), enough for the small
// entries before it but not for its body.
func testApplyFull(t *testing.T, big int) {
	x := newAllOrNothing(t, big)
	ctx := context.Background()
	var pages, maxPages int64
	if err := x.s.wdb.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if err := x.s.wdb.QueryRowContext(ctx, "PRAGMA max_page_count").Scan(&maxPages); err != nil {
		t.Fatal(err)
	}
	setMax := func(n int64) {
		t.Helper()
		// The writer is one connection, kept open: the limit holds for
		// every Apply until it is set back.
		if _, err := x.s.wdb.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", n)); err != nil {
			t.Fatal(err)
		}
	}
	setMax(pages + 64)
	_, err := x.s.Apply(ctx, x.batch, x.batch[len(x.batch)-1].Pos)
	pos := x.batch[big].Pos
	if !errors.Is(err, sqlite3.FULL) || !namesPosition(err, pos) {
		t.Fatalf("Apply with the database full at entry %d: expected SQLITE_FULL naming position %d, got %v", big, pos, err)
	}
	x.unchanged(t)
	setMax(maxPages)
	res, err := x.s.Apply(ctx, x.batch, x.batch[len(x.batch)-1].Pos)
	if err != nil {
		t.Fatalf("Apply again with room: %v", err)
	}
	x.applied(t, res)
}

// testApplyCancelled cancels the context of an Apply at the 1st, 2nd,
// 3rd, 4th, 6th... time it is asked whether it is done (a quarter further
// each time), until an Apply ends before the cancellation: every one that
// failed changed nothing, and some failed inside an entry.
func testApplyCancelled(t *testing.T) {
	x := newAllOrNothing(t, -1)
	last := x.batch[len(x.batch)-1].Pos
	insideEntry := false
	tries := 0
	for n := int64(1); ; n += n/4 + 1 {
		if n > 1<<24 {
			t.Fatal("Apply still cancelled after 2^24 questions to its context")
		}
		ctx := newCancelAt(n)
		res, err := x.s.Apply(ctx, x.batch, last)
		ctx.cancel()
		if err == nil {
			t.Logf("the Apply asked its context %d times; cancelled at %d points before, it failed and changed nothing", ctx.asked.Load(), tries)
			x.applied(t, res)
			break
		}
		if ctx.asked.Load() < n {
			t.Fatalf("Apply failed before its context was cancelled (question %d of %d): %v", ctx.asked.Load(), n, err)
		}
		if strings.Contains(err.Error(), "applying entry at position") {
			insideEntry = true
		}
		x.unchanged(t)
		tries++
	}
	if !insideEntry {
		t.Error("no cancellation struck inside an entry")
	}
}

// cancelAt is a context that cancels itself the n-th time it is asked
// whether it is done: database/sql asks before each statement, SQLite's
// progress handler while one runs. So the test chooses where in an Apply
// the cancellation strikes, and the store needs no hook for it.
type cancelAt struct {
	context.Context
	cancel context.CancelFunc
	n      int64
	asked  atomic.Int64
}

func newCancelAt(n int64) *cancelAt {
	ctx, cancel := context.WithCancel(context.Background())
	return &cancelAt{Context: ctx, cancel: cancel, n: n}
}

func (c *cancelAt) ask() {
	if c.asked.Add(1) == c.n {
		c.cancel()
	}
}

func (c *cancelAt) Done() <-chan struct{} { c.ask(); return c.Context.Done() }
func (c *cancelAt) Err() error            { c.ask(); return c.Context.Err() }

func TestApplyPositions(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	e1, e2 := l.spool(deliverCmd("a")), l.spool(deliverCmd("b"))
	tests := []struct {
		name    string
		entries []Entry
		newPos  uint64
		wantErr error
	}{
		{"not increasing", []Entry{e2, e1}, 2, ErrPosition},
		{"new position before last entry", []Entry{e1, e2}, 1, ErrPosition},
		{"applies", []Entry{e1}, 1, nil},
		{"entry at the applied position", []Entry{e1}, 1, ErrPosition},
		{"skipping positions", nil, 5, nil},
		{"entry inside the skipped range", []Entry{e2}, 5, ErrPosition},
	}
	for _, tc := range tests {
		_, err := s.Apply(ctx, tc.entries, tc.newPos)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: expected %v, got %v", tc.name, tc.wantErr, err)
		}
	}
	if pos, err := s.Position(ctx); err != nil || pos != 5 {
		t.Errorf("Position: expected 5, got %d, %v", pos, err)
	}
}

func TestRejections(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	e1 := l.spool(deliverCmd(simpleMessage("one")))
	mustApply(t, s, e1)
	replay := Entry{Pos: 2, ID: e1.ID, Author: AuthorSpool, Cmd: e1.Cmd}
	forbidden := Entry{Pos: 4, ID: entryID(4), Author: AuthorSpool, Cmd: &command.Command{Kind: command.Expunge, IDs: []command.ID{e1.ID}}}
	unknown := Entry{Pos: 5, ID: entryID(5), Author: Author(9), Cmd: deliverCmd("x")}
	invalid := Entry{Pos: 6, ID: entryID(6), Author: AuthorUser, Cmd: &command.Command{Kind: command.Expunge}}
	if err := s.RecordRejected(ctx, 3, "bad signature"); err != nil {
		t.Fatalf("RecordRejected: %v", err)
	}
	if err := s.RecordRejected(ctx, 3, "bad signature again"); err != nil {
		t.Fatalf("RecordRejected twice: %v", err)
	}
	res, err := s.Apply(ctx, []Entry{replay, forbidden, unknown, invalid}, 6)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantReasons := []Reason{ReasonReplay, ReasonForbidden, ReasonForbidden, ReasonInvalid}
	for i, o := range res.Outcomes {
		if o.Status != Rejected || o.Reason != wantReasons[i] {
			t.Errorf("entry %d: expected rejected (%s), got %s (%s: %s)", i, wantReasons[i], o.Status, o.Reason, o.Detail)
		}
	}
	if res.Rejections() != 4 || len(res.Changes) != 0 {
		t.Errorf("expected 4 rejections and no changes, got %d and %d", res.Rejections(), len(res.Changes))
	}
	list, err := s.Rejected(ctx, 0)
	if err != nil {
		t.Fatalf("Rejected: %v", err)
	}
	var got []string
	for _, r := range list {
		got = append(got, fmt.Sprintf("%d:%s", r.Pos, r.Reason))
	}
	want := []string{"6:invalid", "5:forbidden", "4:forbidden", "3:bad signature", "2:replay"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Rejected: expected %v, got %v", want, got)
	}
	if list[3].Entry != nil || list[4].Entry == nil || *list[4].Entry != e1.ID {
		t.Errorf("Rejected entry ids: expected none for position 3 and %s for 2, got %v and %v", e1.ID, list[3].Entry, list[4].Entry)
	}
	if n, _ := s.RejectedCount(ctx); n != 5 {
		t.Errorf("RejectedCount: expected 5, got %d", n)
	}
	// By the position EntriesSeen gives: e1 was applied at its first
	// position (its replay at 2 is not its outcome), the invalid entry
	// rejected at its own.
	seen, err := s.EntriesSeen(ctx, [][16]byte{e1.ID, invalid.ID})
	if err != nil || seen[e1.ID] != 1 || seen[invalid.ID] != 6 {
		t.Fatalf("EntriesSeen: expected positions 1 and 6, got %v (%v)", seen, err)
	}
	if r, err := s.RejectionOf(ctx, e1.ID, seen[e1.ID]); r != nil || err != nil {
		t.Errorf("RejectionOf the applied entry: expected none, got %+v (%v)", r, err)
	}
	if r, err := s.RejectionOf(ctx, invalid.ID, seen[invalid.ID]); err != nil || r == nil || r.Reason != ReasonInvalid || r.Pos != 6 || *r.Entry != invalid.ID {
		t.Errorf("RejectionOf the invalid entry: expected %s at 6, got %+v (%v)", ReasonInvalid, r, err)
	}
	if r, err := s.RejectionOf(ctx, invalid.ID, 5); r != nil || err != nil {
		t.Errorf("RejectionOf at another entry's position: expected none, got %+v (%v)", r, err)
	}
	if uids := uidsOf(t, s, "INBOX"); len(uids) != 1 {
		t.Errorf("INBOX after rejections: expected 1 message, got %v", uids)
	}
	if l, _ := s.Rejected(ctx, 2); len(l) != 2 {
		t.Errorf("Rejected(limit 2): expected 2, got %d", len(l))
	}
}

// namesPosition reports whether err is an Apply's failure that names the
// entry at pos: "applying entry at position POS:", or the run of
// deliveries it is in, "applying entries at positions A to B:"
// (apply_deliver.go), with A <= POS <= B.
func namesPosition(err error, pos uint64) bool {
	if err == nil {
		return false
	}
	if strings.Contains(err.Error(), fmt.Sprintf("applying entry at position %d:", pos)) {
		return true
	}
	_, run, ok := strings.Cut(err.Error(), "applying entries at positions ")
	var from, to uint64
	if _, serr := fmt.Sscanf(run, "%d to %d:", &from, &to); ok && serr == nil {
		return from <= pos && pos <= to
	}
	return false
}
