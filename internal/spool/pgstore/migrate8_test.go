package pgstore

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"cspool/internal/spool"
)

// TestMigrateFromVersion7: a database left by schema version 7, with a
// log, upgrades to version 8: the log carries on, a request appended
// once is recorded, and the seven-argument function of a server of
// version 7 still running appends as before, recording nothing.
func TestMigrateFromVersion7(t *testing.T) {
	o := newOpener(t)
	dsn := buildAt(t, o, 7, v4Append("amy", 1, 2))
	s := o.openDSN(t, dsn, Options{})
	ctx := context.Background()
	var v int
	if err := s.pool.QueryRow(ctx, "SELECT version FROM cspool_schema").Scan(&v); err != nil || v != LatestVersion() || v < 8 {
		t.Fatalf("schema version %d (%v), want %d", v, err, LatestVersion())
	}
	once := spool.Once{ID: [32]byte{1}, Digest: [32]byte{2}, Expires: time.Now().Add(time.Minute)}
	for i, want := range []bool{false, true} {
		first, repeat, err := s.AppendOnce(ctx, "amy", once, 0, [][]byte{[]byte("amy-3")})
		if err != nil || first != 3 || repeat != want {
			t.Fatalf("AppendOnce %d after the upgrade: at %d, repeat %v, %v; want at 3, repeat %v", i+1, first, repeat, err, want)
		}
	}
	leaf := sha256.Sum256([]byte("amy-4"))
	var first int64
	if err := s.pool.QueryRow(ctx, `SELECT cspool_append_within($1, NULL, NULL, $2::bytea[], $3::bytea[], '', NULL::bytea)`,
		[]byte("amy"), [][]byte{[]byte("amy-4")}, [][]byte{leaf[:]}).Scan(&first); err != nil || first != 4 {
		t.Fatalf("an append as a server of version 7 makes it: at %d, %v; want 4", first, err)
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM cspool_once").Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d records (%v), want 1: the version 7 append records nothing", n, err)
	}
	wantChain(t, s, "amy", entryData("amy", 4))
}
