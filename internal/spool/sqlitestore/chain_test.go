package sqlitestore

import (
	"errors"
	"fmt"
	"testing"

	"cspool/internal/spool"
)

// buildV2 creates a spool at schema version 2 in dir, as an earlier cspool
// left it, running stmts after the schema.
func buildV2(t *testing.T, dir string, stmts ...string) {
	t.Helper()
	db := rawDB(t, dir)
	for _, q := range append([]string{
		"PRAGMA journal_mode = WAL",
		fmt.Sprintf("PRAGMA application_id = %d", applicationID),
		migrations[0],
		migrations[1],
		"PRAGMA user_version = 2",
	}, stmts...) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("building a version 2 spool: %s: %v", q, err)
		}
	}
	db.Close()
}

// wantChain checks ChainHash at every position 0..len(data)-1 against the
// chain recomputed over data (data[0] unused).
func wantChain(t *testing.T, s *Store, user string, data [][]byte) {
	t.Helper()
	var h spool.Hash
	for p := range data {
		if p > 0 {
			h = spool.ChainNext(h, data[p])
		}
		got, err := s.ChainHash(ctxT(t), user, uint64(p))
		if err != nil || got != h {
			t.Fatalf("%s: ChainHash(%d) = %x, %v; want %x", user, p, got[:4], err, h[:4])
		}
	}
	if _, err := s.ChainHash(ctxT(t), user, uint64(len(data))); !errors.Is(err, spool.ErrInvalidArgument) {
		t.Errorf("%s: ChainHash beyond the head: %v, want ErrInvalidArgument", user, err)
	}
}

// TestChainMigrateFromVersion2: the migration computes the chain of the
// logs already there, and appends continue it.
func TestChainMigrateFromVersion2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	buildV2(t, dir,
		"INSERT INTO users (name, head) VALUES (CAST('old' AS BLOB), 3), (CAST('two' AS BLOB), 1), (CAST('none' AS BLOB), 0)",
		"INSERT INTO entries (user_id, pos, size, data) VALUES (1, 1, 1, x'61'), (1, 2, 0, x''), (1, 3, 1, x'63'), (2, 1, 2, x'7a7a')",
		"INSERT INTO checkpoints (user_id, pos, data) VALUES (2, 1, x'6370')",
	)
	s := openT(t, dir, Options{})
	if v := pragmaInt(t, s, "user_version"); v != int64(SchemaVersion) {
		t.Fatalf("user_version %d after Open, want %d", v, SchemaVersion)
	}
	old := [][]byte{nil, []byte("a"), {}, []byte("c")}
	wantChain(t, s, "old", old)
	wantChain(t, s, "two", [][]byte{nil, []byte("zz")})
	wantChain(t, s, "none", [][]byte{nil})
	if _, err := s.Append(ctxT(t), "old", [][]byte{[]byte("d"), []byte("e")}); err != nil {
		t.Fatal(err)
	}
	wantChain(t, s, "old", append(old, []byte("d"), []byte("e")))
	// Schema 4 counted the usage of the logs already there.
	for user, want := range map[string]int64{"old": 4, "two": 4, "none": 0} {
		if got, err := s.Usage(ctxT(t), user); err != nil || got != want {
			t.Errorf("usage of %s after the migration: %d, %v; want %d", user, got, err, want)
		}
	}
}

// TestChainMigrateRefusesCompacted: a log with holes cannot be chained; the
// migration fails, names the log, and leaves the database at version 2.
func TestChainMigrateRefusesCompacted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	buildV2(t, dir,
		"INSERT INTO users (name, head) VALUES (CAST('fine' AS BLOB), 1), (CAST('holes' AS BLOB), 3)",
		"INSERT INTO entries (user_id, pos, size, data) VALUES (1, 1, 1, x'61'), (2, 3, 1, x'63')",
		"INSERT INTO checkpoints (user_id, pos, data) VALUES (2, 2, x'00')",
	)
	s, err := Open(dir, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open migrated a compacted log, want ErrCompactedLog")
	}
	if !errors.Is(err, ErrCompactedLog) {
		t.Fatalf("Open: %v, want ErrCompactedLog", err)
	}
	t.Logf("refused: %v", err)
	var v int
	if err := rawDB(t, dir).QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != 2 {
		t.Errorf("user_version %d (%v) after the refused migration, want 2", v, err)
	}
}

// TestChainAppendOnly: the schema refuses to change or delete a hash,
// whatever the code above it does.
func TestChainAppendOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	if _, err := s.Append(ctxT(t), "u", [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, dir)
	for _, q := range []string{
		"UPDATE chain SET hash = zeroblob(32)",
		"DELETE FROM chain",
		"INSERT INTO chain (user_id, pos, hash) VALUES (1, 2, x'00')",
	} {
		if _, err := db.Exec(q); err == nil {
			t.Errorf("%s: accepted", q)
		}
	}
}

// TestChainBytesPerEntry measures what the chain adds to the database per
// entry (dbstat page accounting of the chain table). The chain table's
// rows are (user_id, pos, 32-byte hash).
func TestChainBytesPerEntry(t *testing.T) {
	t.Parallel()
	s := openT(t, t.TempDir(), Options{})
	const n = 10_000
	for i := 0; i < n/100; i++ {
		batch := make([][]byte, 100)
		for j := range batch {
			batch[j] = make([]byte, 200)
		}
		if _, err := s.Append(ctxT(t), fmt.Sprintf("user-%d", i%3), batch); err != nil {
			t.Fatal(err)
		}
	}
	var pages, bytes, payload int64
	if err := s.rdb.QueryRowContext(ctxT(t),
		"SELECT count(*), sum(pgsize), sum(payload) FROM dbstat WHERE name = 'chain'").Scan(&pages, &bytes, &payload); err != nil {
		t.Fatalf("dbstat: %v", err)
	}
	per := float64(bytes) / n
	t.Logf("chain table: %d pages, %d bytes on disk, %d bytes of payload: %.1f bytes per entry on disk (%.1f payload), plus 32 bytes per user",
		pages, bytes, payload, per, float64(payload)/n)
	if per < 32 || per > 80 {
		t.Errorf("%.1f bytes per entry, want between 32 (the hash) and 80", per)
	}
}
