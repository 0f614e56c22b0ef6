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
	dir := t.TempDir()
	db := rawDB(t, dir)
	steps := []string{"PRAGMA journal_mode = WAL", fmt.Sprintf("PRAGMA application_id = %d", applicationID)}
	steps = append(steps, migrations[:5]...)
	steps = append(steps, "PRAGMA user_version = 5")
	for _, q := range steps {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("building a version 5 spool: %.60s: %v", q, err)
		}
	}
	db.Close()
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
