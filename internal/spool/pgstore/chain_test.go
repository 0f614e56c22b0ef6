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
	return buildAt(t, o, 1, stmts...)
}

// buildAt creates a schema at version v in the test database, by the
// embedded files 1 to v, as an earlier cspool left it, runs stmts in it
// and returns its DSN.
func buildAt(t *testing.T, o *opener, v int, stmts ...string) string {
	t.Helper()
	dsn := pgtest.Schema(t, o.db)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	steps := []string{
		`CREATE TABLE cspool_schema (version integer NOT NULL CHECK (version >= 0),
			singleton boolean NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton))`,
		fmt.Sprintf("INSERT INTO cspool_schema (version) VALUES (%d)", v),
	}
	for i := 1; i <= v; i++ {
		sql, err := schemaFS.ReadFile(fmt.Sprintf("schema/%04d.sql", i))
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, string(sql))
	}
	for _, q := range append(steps, stmts...) {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("building a version %d schema: %.60s: %v", v, q, err)
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

// TestChainAppendOnly: the schema refuses to change or delete a hash, on
// an entry's row or in cspool_chain, where deleting entries moves theirs.
func TestChainAppendOnly(t *testing.T) {
	o := newOpener(t)
	s := o.fresh(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, "u", [][]byte{[]byte("x"), []byte("y")}); err != nil {
		t.Fatal(err)
	}
	refused := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := s.pool.Exec(ctx, q); err == nil {
				t.Errorf("%s: accepted", q)
			}
		}
	}
	refused(
		"DELETE FROM cspool_logs",
		"TRUNCATE cspool_logs CASCADE",
		"UPDATE cspool_entries SET hash = decode(repeat('00', 32), 'hex')",
		"UPDATE cspool_entries SET pos = pos + 10",
		"TRUNCATE cspool_entries",
	)
	// Only data may change (nothing does): the row stays an entry.
	if _, err := s.pool.Exec(ctx, "UPDATE cspool_entries SET size = size WHERE pos = 1"); err != nil {
		t.Errorf("an update leaving hash and position alone: %v", err)
	}
	// Deleting entries in SQL, as compaction does, keeps their hashes.
	if _, err := s.pool.Exec(ctx, "DELETE FROM cspool_entries"); err != nil {
		t.Fatal(err)
	}
	refused(
		"UPDATE cspool_chain SET hash = decode(repeat('00', 32), 'hex')",
		"DELETE FROM cspool_chain",
		"TRUNCATE cspool_chain",
	)
	wantChain(t, s, "u", [][]byte{nil, []byte("x"), []byte("y")})
	if first, err := s.Append(ctx, "u", [][]byte{[]byte("z")}); first != 3 || err != nil {
		t.Fatalf("append after every entry was deleted: %d, %v; want 3", first, err)
	}
	wantChain(t, s, "u", [][]byte{nil, []byte("x"), []byte("y"), []byte("z")})
}

// TestAppendWritesLogRowOnce: an append to an existing log inserts no
// cspool_chain row and updates its cspool_logs row once, for the usage, on
// the row's page (HOT: no index of cspool_logs changes); head and hash are
// not kept there (schema 5).
func TestAppendWritesLogRowOnce(t *testing.T) {
	o := newOpener(t)
	s := o.fresh(t)
	ctx := context.Background()
	if _, err := s.Append(ctx, "u", [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	// The row's page, its versions since (xmin), the head kept on it.
	row := func() (page, xmin, rest string) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT (ctid::text::point)[0]::text, xmin::text, base_head::text || ' ' || encode(base_chain, 'hex')
			FROM cspool_logs WHERE name = 'u'::bytea`).Scan(&page, &xmin, &rest); err != nil {
			t.Fatal(err)
		}
		return page, xmin, rest
	}
	p0, x0, r0 := row()
	for i := 0; i < 3; i++ {
		if _, err := s.AppendWithin(ctx, "u", 1000, [][]byte{[]byte("y"), []byte("z")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AppendAt(ctx, "u", 7, [][]byte{[]byte("w")}); err != nil {
		t.Fatal(err)
	}
	p1, x1, r1 := row()
	if x1 == x0 {
		t.Errorf("the log's row is the version of the first append (%s): the usage was not updated", x0)
	}
	if p1 != p0 || r1 != r0 {
		t.Errorf("the log's row went from page %s (%s) to page %s (%s): want the same page, head and hash not kept there",
			p0, r0, p1, r1)
	}
	var n int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM cspool_chain").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d cspool_chain rows (%v) after appends alone, want 0", n, err)
	}
	var fk int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_constraint
		WHERE conrelid = 'cspool_entries'::regclass AND contype = 'f'`).Scan(&fk); err != nil || fk != 0 {
		t.Errorf("%d foreign keys (%v) on cspool_entries, want 0: the check locks the log's row", fk, err)
	}
	data := [][]byte{nil, []byte("x")}
	for i := 0; i < 3; i++ {
		data = append(data, []byte("y"), []byte("z"))
	}
	wantChain(t, s, "u", append(data, []byte("w")))
	if u, err := s.Usage(ctx, "u"); u != 8 || err != nil {
		t.Errorf("usage %d, %v; want 8", u, err)
	}
}

// TestChainBytesPerEntry measures what the chain adds per entry: its hash
// on the entry's row, and what cspool_chain holds (nothing until a
// compaction).
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
	var cols, chain, rows int64
	if err := s.pool.QueryRow(ctx, `SELECT
		(SELECT sum(pg_column_size(hash)) FROM cspool_entries),
		pg_relation_size('cspool_chain'), (SELECT count(*) FROM cspool_entries)`).Scan(&cols, &chain, &rows); err != nil {
		t.Fatal(err)
	}
	if rows != n {
		t.Fatalf("%d entries, want %d", rows, n)
	}
	per := float64(cols+chain) / n
	t.Logf("hashes: %d bytes on %d entries' rows, cspool_chain %d bytes: %.1f bytes per entry",
		cols, n, chain, per)
	if per < 32 || per > 200 {
		t.Errorf("%.1f bytes per entry, want between 32 (the hash) and 200", per)
	}
}
