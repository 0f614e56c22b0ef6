package mailstore

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/mimeform"
)

// countBodies counts the bodies the slow way, for the tests.
func countBodies(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow("SELECT count(*) FROM bodies").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func checkLiveBodies(t *testing.T, what string, s *Store) {
	t.Helper()
	got, err := s.LiveBodies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := countBodies(t, s); got != want {
		t.Fatalf("%s: LiveBodies %d, want %d (count of bodies)", what, got, want)
	}
}

// TestLiveBodiesCounted: LiveBodies gives the number of bodies after
// applies (shared bodies, expunges, deleted mailboxes), an undo of queued
// changes and a restore, and reads it without reading the bodies or an
// index of them: the sync loop asks after every batch, and a count over
// the bodies grew with the mailbox.
func TestLiveBodiesCounted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	plan := queryPlan(t, s.rdb, "EXPLAIN QUERY PLAN "+liveBodiesQuery)
	if p := strings.Join(plan, "; "); strings.Contains(p, "bodies ") || strings.Contains(p, "INDEX") {
		t.Errorf("LiveBodies's plan reads the bodies: %s", p)
	}

	log := generateLog(5, 400)
	for i := 0; i < 200; i += 25 {
		mustApply(t, s, log[i:i+25]...)
		checkLiveBodies(t, "after an apply", s)
	}
	if n := countBodies(t, s); n == 0 {
		t.Fatal("the generated log stored no body")
	}
	for _, e := range log[200:] {
		if e.Author != AuthorUser {
			continue
		}
		if _, err := s.Enqueue(ctx, e.ID, e.Cmd); err != nil {
			t.Fatal(err)
		}
	}
	checkLiveBodies(t, "after queued changes", s)
	takeBackQueue(t, s)
	checkLiveBodies(t, "after undoing the queue", s)

	full := openTest(t)
	applyInBatches(t, full, log, 50)
	checkLiveBodies(t, "after the whole log", full)
	sn, err := full.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := bodiesOf(log)
	for _, st := range []*Store{openTest(t), s} {
		if _, err := st.Restore(ctx, sn, fetchFrom(all, new(int))); err != nil {
			t.Fatal(err)
		}
		checkLiveBodies(t, "after a restore", st)
	}
}

// TestWriterHoldsBatchDirtyPages: a write transaction that dirties more
// pages than the writer's cache holds (8 MiB, 2,048 pages) but fewer than
// writeSpillPages keeps them in memory to its commit instead of writing
// some to the WAL in its middle: a page written out so and changed again
// is written twice, and the commit then reads the WAL back to recompute
// its checksums (a fifth of the daemon's CPU in a first sync past 200,000
// messages; docs/BENCHMARKS.md).
func TestWriterHoldsBatchDirtyPages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	c, err := s.wdb.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "CREATE TABLE scratch (x BLOB)"); err != nil {
		t.Fatal(err)
	}
	pages := (writeCacheKiB/4 + writeSpillPages) / 2 // 2,560
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `WITH RECURSIVE i(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM i WHERE n < ?)
		INSERT INTO scratch (x) SELECT randomblob(3900) FROM i`, pages); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	err = c.Raw(func(dc any) error {
		rc, ok := dc.(interface{ Raw() *sqlite3.Conn })
		if !ok {
			t.Fatalf("the driver's connection %T has no Raw", dc)
		}
		spills, _, err := rc.Raw().Status(sqlite3.DBSTATUS_CACHE_SPILL, false)
		if err != nil {
			return err
		}
		if spills != 0 {
			t.Errorf("a transaction of %d pages spilled %d pages to the WAL before its commit; want none under %d", pages, spills, writeSpillPages)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSchema18CountsBodies: a database of schema version 17 gets the
// number of the bodies it holds in body_count when it is migrated, and the
// triggers keep it from then on.
func TestSchema18CountsBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	log := generateLog(7, 120)
	mustApply(t, s, log[:60]...)
	err = s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		if err := downgrade29(ctx, tx); err != nil {
			return err
		}
		for _, q := range append(append(append(append(append(append(append(append(append(append(append(append([]string{to32}, to31...), to28...), to27...), to26, to25), to24...), to23...), to22...), to21, to20), to19...), to18...), to17...), "PRAGMA user_version = 17") {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if countBodies(t, s) == 0 {
		t.Fatal("the generated log stored no body")
	}
	checkLiveBodies(t, "after the migration", s)
	mustApply(t, s, log[60:]...)
	checkLiveBodies(t, "after applying more", s)
}
