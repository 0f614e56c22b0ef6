package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"

	"github.com/jackc/pgx/v5"
)

// buildV1 creates a schema at version 1 in the test database, as an earlier
// cspool left it, runs stmts in it and returns its DSN.
func buildV1(t *testing.T, o *opener, stmts ...string) string {
	t.Helper()
	dsn := pgtest.Schema(t, o.db)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	v1, err := schemaFS.ReadFile("schema/0001.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range append([]string{
		`CREATE TABLE cspool_schema (version integer NOT NULL CHECK (version >= 0),
			singleton boolean NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton))`,
		"INSERT INTO cspool_schema (version) VALUES (1)",
		string(v1),
	}, stmts...) {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("building a version 1 schema: %.60s: %v", q, err)
		}
	}
	return dsn
}

// wantChain checks ChainHash at every position 0..len(data)-1 against the
// chain recomputed over data (data[0] unused), and refusal after it.
func wantChain(t *testing.T, s *Store, user string, data [][]byte) {
	t.Helper()
	var h spool.Hash
	for p := range data {
		if p > 0 {
			h = spool.ChainNext(h, data[p])
		}
		got, err := s.ChainHash(context.Background(), user, uint64(p))
		if err != nil || got != h {
			t.Fatalf("%s: ChainHash(%d) = %x, %v; want %x", user, p, got[:4], err, h[:4])
		}
	}
	if _, err := s.ChainHash(context.Background(), user, uint64(len(data))); !errors.Is(err, spool.ErrInvalidArgument) {
		t.Errorf("%s: ChainHash beyond the head: %v, want ErrInvalidArgument", user, err)
	}
}

// TestChainMigrateFromVersion1: the migration computes, in SQL, the same
// chain as spool.ChainNext over the logs already there; appends continue it.
func TestChainMigrateFromVersion1(t *testing.T) {
	o := newOpener(t)
	dsn := buildV1(t, o,
		`INSERT INTO cspool_logs (name, head) VALUES ('old'::bytea, 3), ('two'::bytea, 1), ('none'::bytea, 0)`,
		`INSERT INTO cspool_entries (log_id, pos, size, data) VALUES
			(1, 1, 1, 'a'::bytea), (1, 2, 0, ''::bytea), (1, 3, 1, 'c'::bytea), (2, 1, 2, 'zz'::bytea)`,
		`INSERT INTO cspool_checkpoints (log_id, pos, data) VALUES (2, 1, 'cp'::bytea)`,
	)
	s := o.openDSN(t, dsn, Options{})
	old := [][]byte{nil, []byte("a"), {}, []byte("c")}
	wantChain(t, s, "old", old)
	wantChain(t, s, "two", [][]byte{nil, []byte("zz")})
	wantChain(t, s, "none", [][]byte{nil})
	if _, err := s.Append(context.Background(), "old", [][]byte{[]byte("d"), []byte("e")}); err != nil {
		t.Fatal(err)
	}
	wantChain(t, s, "old", append(old, []byte("d"), []byte("e")))
	// Schema 4 counted the usage of the logs already there.
	for user, want := range map[string]int64{"old": 4, "two": 4, "none": 0} {
		if got, err := s.Usage(context.Background(), user); err != nil || got != want {
			t.Errorf("usage of %s after the migration: %d, %v; want %d", user, got, err, want)
		}
	}
}

// TestChainMigrateRefusesCompacted: a log with holes cannot be chained; the
// migration fails and leaves the schema at version 1, untouched.
func TestChainMigrateRefusesCompacted(t *testing.T) {
	o := newOpener(t)
	dsn := buildV1(t, o,
		`INSERT INTO cspool_logs (name, head) VALUES ('fine'::bytea, 1), ('holes'::bytea, 3)`,
		`INSERT INTO cspool_entries (log_id, pos, size, data) VALUES (1, 1, 1, 'a'::bytea), (2, 3, 1, 'c'::bytea)`,
		`INSERT INTO cspool_checkpoints (log_id, pos, data) VALUES (2, 2, '\x00'::bytea)`,
	)
	ctx := context.Background()
	s, err := Open(ctx, dsn, Options{})
	if err == nil {
		s.Close()
		t.Fatal("Open migrated a compacted log, want ErrCompactedLog")
	}
	if !errors.Is(err, ErrCompactedLog) {
		t.Fatalf("Open: %v, want ErrCompactedLog", err)
	}
	t.Logf("refused: %v", err)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	var chain *string
	if err := c.QueryRow(ctx, "SELECT version, to_regclass('cspool_chain')::text FROM cspool_schema").Scan(&v, &chain); err != nil || v != 1 || chain != nil {
		t.Errorf("after the refused migration: version %d, cspool_chain %v (%v); want 1 and no table", v, chain, err)
	}
}

// TestChainAppendOnly: the schema refuses to change or delete a hash.
func TestChainAppendOnly(t *testing.T) {
	o := newOpener(t)
	s := o.fresh(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, "u", [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"UPDATE cspool_chain SET hash = decode(repeat('00', 32), 'hex')",
		"DELETE FROM cspool_chain",
		"TRUNCATE cspool_chain",
	} {
		if _, err := s.pool.Exec(ctx, q); err == nil {
			t.Errorf("%s: accepted", q)
		}
	}
	wantChain(t, s, "u", [][]byte{nil, []byte("x")})
}

// TestChainBytesPerEntry measures what the chain adds per entry: the size
// of cspool_chain with its primary key index, per row.
func TestChainBytesPerEntry(t *testing.T) {
	o := newOpener(t)
	s := o.fresh(t)
	ctx := context.Background()
	const n = 10_000
	for i := 0; i < n/100; i++ {
		batch := make([][]byte, 100)
		for j := range batch {
			batch[j] = make([]byte, 200)
		}
		if _, err := s.Append(ctx, fmt.Sprintf("user-%d", i%3), batch); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE cspool_chain"); err != nil {
		t.Fatal(err)
	}
	var total, heap, rows int64
	if err := s.pool.QueryRow(ctx, `SELECT pg_total_relation_size('cspool_chain'),
		pg_relation_size('cspool_chain'), (SELECT count(*) FROM cspool_chain)`).Scan(&total, &heap, &rows); err != nil {
		t.Fatal(err)
	}
	if rows != n {
		t.Fatalf("%d chain rows for %d entries", rows, n)
	}
	per := float64(total) / n
	t.Logf("cspool_chain: %d bytes (%d heap, %d index and the rest) for %d entries: %.1f bytes per entry",
		total, heap, total-heap, n, per)
	if per < 32 || per > 200 {
		t.Errorf("%.1f bytes per entry, want between 32 (the hash) and 200", per)
	}
}
