package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"cspool/internal/spool"
)

func appendN(t *testing.T, s *Store, user string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := s.Append(context.Background(), user, [][]byte{fmt.Appendf(nil, "%s-%d", user, i+1)}); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
}

func positions(t *testing.T, s *Store, user string) []uint64 {
	t.Helper()
	es, err := s.Read(context.Background(), user, 0, 10000, 1<<30)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	var ps []uint64
	for _, e := range es {
		if want := fmt.Sprintf("%s-%d", user, e.Pos); string(e.Data) != want {
			t.Errorf("entry %d holds %q, want %q", e.Pos, e.Data, want)
		}
		ps = append(ps, e.Pos)
	}
	return ps
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	s := newOpener(t).fresh(t)
	appendN(t, s, "amy", 10)
	appendN(t, s, "ben", 3)

	if _, err := s.LatestCheckpoint(ctx, "amy"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Fatalf("LatestCheckpoint before any: %v, want ErrNoCheckpoint", err)
	}
	for _, tc := range []struct {
		name string
		pos  uint64
		keep []uint64
		want error
	}{
		{"zero position", 0, nil, spool.ErrInvalidArgument},
		{"beyond head", 11, nil, spool.ErrInvalidArgument},
		{"keep beyond checkpoint", 5, []uint64{6}, spool.ErrInvalidArgument},
	} {
		if _, err := s.Compact(ctx, "amy", spool.Checkpoint{Pos: tc.pos, Data: []byte("x")}, tc.keep); !errors.Is(err, tc.want) {
			t.Errorf("%s: Compact: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := s.Compact(ctx, "nobody", spool.Checkpoint{Pos: 1}, nil); !errors.Is(err, spool.ErrInvalidArgument) {
		t.Errorf("Compact of an unknown user: %v, want ErrInvalidArgument", err)
	}

	st, err := s.Compact(ctx, "amy", spool.Checkpoint{Pos: 6, Data: []byte("cp6")}, []uint64{2, 5, 5})
	if err != nil {
		t.Fatalf("Compact at 6: %v", err)
	}
	if st.Deleted != 4 || st.Kept != 2 || st.Bytes != int64(len("amy-1")*4) {
		t.Errorf("Compact at 6: %+v, want 4 deleted (20 bytes), 2 kept", st)
	}
	if got := fmt.Sprint(positions(t, s, "amy")); got != "[2 5 7 8 9 10]" {
		t.Errorf("positions after compaction: %s, want [2 5 7 8 9 10]", got)
	}
	if got := fmt.Sprint(positions(t, s, "ben")); got != "[1 2 3]" {
		t.Errorf("another user's log changed: %s", got)
	}
	cp, err := s.LatestCheckpoint(ctx, "amy")
	if err != nil || cp.Pos != 6 || string(cp.Data) != "cp6" {
		t.Errorf("LatestCheckpoint: %d %q %v, want 6 \"cp6\"", cp.Pos, cp.Data, err)
	}
	for _, pos := range []uint64{6, 3} {
		if _, err := s.Compact(ctx, "amy", spool.Checkpoint{Pos: pos, Data: []byte("old")}, nil); !errors.Is(err, spool.ErrStaleCheckpoint) {
			t.Errorf("Compact at %d after 6: %v, want ErrStaleCheckpoint", pos, err)
		}
	}

	// Compacting the whole log (keeping a hole and the last entry) never
	// lowers the head; the next append continues after it.
	st, err = s.Compact(ctx, "amy", spool.Checkpoint{Pos: 10, Data: []byte("cp10")}, []uint64{3, 10})
	if err != nil {
		t.Fatalf("Compact at 10: %v", err)
	}
	if st.Deleted != 5 || st.Kept != 1 {
		t.Errorf("Compact at 10: %+v, want 5 deleted, 1 kept (3 is a hole)", st)
	}
	if _, err := s.Compact(ctx, "amy", spool.Checkpoint{Pos: 10}, nil); !errors.Is(err, spool.ErrStaleCheckpoint) {
		t.Errorf("second Compact at 10: %v, want ErrStaleCheckpoint", err)
	}
	if h, err := s.Head(ctx, "amy"); h != 10 || err != nil {
		t.Errorf("head after compaction: %d, %v; want 10", h, err)
	}
	first, err := s.Append(ctx, "amy", [][]byte{[]byte("amy-11")})
	if first != 11 || err != nil {
		t.Errorf("append after compaction: %d, %v; want 11", first, err)
	}
	if got := fmt.Sprint(positions(t, s, "amy")); got != "[10 11]" {
		t.Errorf("positions: %s, want [10 11]", got)
	}
	// The database itself refuses to lower a head: the rows it is read
	// from (schema 5) neither move nor go.
	for _, q := range []string{
		"UPDATE cspool_entries SET pos = 1 WHERE pos = 11",
		"DELETE FROM cspool_chain",
		"UPDATE cspool_logs SET base_head = -1",
	} {
		if _, err := s.pool.Exec(ctx, q); err == nil {
			t.Errorf("lowering a head in SQL (%s) succeeded", q)
		}
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM cspool_entries WHERE pos = 11"); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx, "amy"); h != 11 || err != nil {
		t.Errorf("head after its entry was deleted in SQL: %d, %v; want 11", h, err)
	}
}

// A checkpoint and its deletions are one transaction: when the transaction
// fails after the checkpoint was stored (here: the delete waits for a row
// another transaction holds until the statement timeout), nothing changes.
func TestCompactAtomic(t *testing.T) {
	ctx := context.Background()
	o := newOpener(t)
	s := o.fresh(t)
	appendN(t, s, "cy", 5)
	if _, err := s.Compact(ctx, "cy", spool.Checkpoint{Pos: 1, Data: []byte("a")}, nil); err != nil {
		t.Fatal(err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SELECT * FROM cspool_entries WHERE pos = 3 FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	short := o.openDSN(t, o.dsns[s], Options{StatementTimeout: 300_000_000}) // 300 ms
	_, err = short.Compact(ctx, "cy", spool.Checkpoint{Pos: 4, Data: []byte("b")}, nil)
	if !errors.Is(err, spool.ErrUnavailable) {
		t.Fatalf("Compact blocked past the statement timeout: %v, want ErrUnavailable", err)
	}
	tx.Rollback(ctx)
	if got := fmt.Sprint(positions(t, s, "cy")); got != "[2 3 4 5]" {
		t.Errorf("positions after a failed compaction: %s, want [2 3 4 5]", got)
	}
	if cp, err := s.LatestCheckpoint(ctx, "cy"); err != nil || cp.Pos != 1 {
		t.Errorf("checkpoint after a failed compaction: %d, %v; want 1", cp.Pos, err)
	}
}
