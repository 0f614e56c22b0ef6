package sqlitestore

import (
	"testing"
	"time"
)

// TestMigrateFromVersion7: a log present before schema 8 keeps its format 3
// time and has no format 4 time until a read says it (reads before the
// migration were not recorded for it); a log made after has both from its
// start, the epoch.
func TestMigrateFromVersion7(t *testing.T) {
	dir := spoolAtVersion(t, 7, "INSERT INTO users (name, head, reads3_since) VALUES (CAST('old' AS BLOB), 0, 1700000000)")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := ctxT(t)
	if _, err := s.Append(ctx, "new", [][]byte{[]byte("new-1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "old", [][]byte{[]byte("old-1")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user   string
		f3, f4 time.Time
	}{
		{"old", time.Unix(1700000000, 0), time.Time{}},
		{"new", time.Unix(0, 0), time.Unix(0, 0)},
	} {
		got, err := s.ReadersSince(ctx, c.user)
		if err != nil || !got.Format3.Equal(c.f3) || !got.Format4.Equal(c.f4) {
			t.Errorf("ReadersSince(%q) after the migration = %v, %v; want %v and %v", c.user, got, err, c.f3, c.f4)
		}
	}
}
