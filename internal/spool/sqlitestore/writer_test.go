package sqlitestore

import "testing"

// TestAppendRowsWritten: an append of one entry writes the entry, its
// chain hash and the user's head and usage: three rows, and one more,
// the user's, for a user's first. Before, every append also upserted the
// user's row to read it, writing it twice (and opening a statement
// journal for that).
func TestAppendRowsWritten(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	ctx := ctxT(t)
	changes := func() int64 {
		t.Helper()
		var n int64
		if err := s.wdb.QueryRowContext(ctx, "SELECT total_changes()").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, c := range []struct {
		user string
		want int64
	}{{"alice", 4}, {"alice", 3}, {"alice", 3}, {"bob", 4}, {"bob", 3}} {
		before := changes()
		if _, err := s.Append(ctx, c.user, [][]byte{[]byte("entry")}); err != nil {
			t.Fatal(err)
		}
		if got := changes() - before; got != c.want {
			t.Errorf("an append for %s changed %d rows, want %d", c.user, got, c.want)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		es, err := s.Read(ctx, u, 0, 10, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != map[string]int{"alice": 3, "bob": 2}[u] {
			t.Errorf("%s's log holds %d entries", u, len(es))
		}
	}
}
