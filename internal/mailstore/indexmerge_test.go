package mailstore

import (
	"context"
	"maps"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// TestSchema20MergeSettings: a database of version 19 gets automerge 16
// and crisismerge 32 in both FTS5 indexes' configuration when it is
// migrated; an index built in many transactions, many segments, is one
// segment after MergeIndex has merged it step by step, and searches find
// the same bodies before and after.
func TestSchema20MergeSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	s = reopenedFrom(t, s, path, 19)
	for _, tbl := range []string{"fts", "ftsw"} {
		got := map[string]int{}
		rows, err := s.rdb.QueryContext(ctx, "SELECT k, v FROM "+tbl+"_config WHERE k IN ('automerge', 'crisismerge')")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			var v int
			if err := rows.Scan(&k, &v); err != nil {
				t.Fatal(err)
			}
			got[k] = v
		}
		rows.Close()
		if got["automerge"] != 16 || got["crisismerge"] != 32 {
			t.Fatalf("%s's merge settings after the migration: %v", tbl, got)
		}
	}
	var l testLog
	for i := range 60 {
		mustApply(t, s, l.spool(&command.Command{Kind: command.Deliver, Date: int64(1700000000000 + i), Body: searchBenchMessage(i, 512)}))
		if _, _, err := s.IndexPending(ctx, 0); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.IndexPending(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	segments := func() int {
		var n int
		if err := s.rdb.QueryRowContext(ctx, "SELECT count(DISTINCT segid) FROM fts_idx").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	search := func() (out []map[UID]bool) {
		for _, needle := range []string{"sender7@", "bench-2-42@", "quarterly"} {
			a, err := s.TextSearch(ctx, InboxID(), SearchText, needle)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, a.Match)
		}
		return out
	}
	before, segs := search(), segments()
	if segs < 16 {
		t.Fatalf("60 transactions left %d segments, want 16 or more (automerge 16)", segs)
	}
	steps := 0
	for ; steps < 1000; steps++ {
		merged, err := s.MergeIndex(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if !merged {
			break
		}
	}
	if n := segments(); n != 1 || steps < 2 {
		t.Fatalf("after %d steps of merging: %d segments, want 1", steps, n)
	}
	after := search()
	for i := range before {
		if !maps.Equal(before[i], after[i]) || len(before[i]) == 0 {
			t.Fatalf("search %d before the merge %v, after %v", i, before[i], after[i])
		}
	}
	if merged, err := s.MergeIndex(ctx, 2); err != nil || merged {
		t.Fatalf("merging a merged index: %v, %v", merged, err)
	}
}
