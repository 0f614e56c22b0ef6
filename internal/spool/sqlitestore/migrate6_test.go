package sqlitestore

import (
	"fmt"
	"testing"
	"time"

	"cspool/internal/spool"
)

// TestMigrateFromVersion5: a spool left at schema version 5 with a log
// upgrades to version 6: the log carries on and a request appended once
// is recorded.
func TestMigrateFromVersion5(t *testing.T) {
	dir := spoolAtVersion(t, 5)
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Append(ctxT(t), "amy", [][]byte{[]byte("amy-1")}); err != nil {
		t.Fatal(err)
	}
	if v := pragmaInt(t, s, "user_version"); v != int64(SchemaVersion) || SchemaVersion < 6 {
		t.Fatalf("user_version %d after Open, want %d", v, SchemaVersion)
	}
	once := spool.Once{ID: [32]byte{1}, Digest: [32]byte{2}, Expires: time.Now().Add(time.Minute)}
	for i, want := range []bool{false, true} {
		first, repeat, err := s.AppendOnce(ctxT(t), "amy", once, 0, [][]byte{[]byte("amy-2")})
		if err != nil || first != 2 || repeat != want {
			t.Fatalf("AppendOnce %d after the upgrade: at %d, repeat %v, %v; want at 2, repeat %v", i+1, first, repeat, err, want)
		}
	}
}

// spoolAtVersion makes a spool directory whose database is at schema
// version v, as a release of that version left it, with extra statements
// run after the migrations (rows of that version).
func spoolAtVersion(t *testing.T, v int, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	db := rawDB(t, dir)
	steps := []string{"PRAGMA journal_mode = WAL", fmt.Sprintf("PRAGMA application_id = %d", applicationID)}
	steps = append(steps, migrations[:v]...)
	steps = append(steps, fmt.Sprintf("PRAGMA user_version = %d", v))
	for _, q := range append(steps, extra...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("building a version %d spool: %.60s: %v", v, q, err)
		}
	}
	db.Close()
	return dir
}
