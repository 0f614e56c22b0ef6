package mailstore

import (
	"context"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/testproc"
)

// writerState is the writer's connection, its pages cached and its
// cache's size (PRAGMA cache_size, negative in KiB).
func writerState(t *testing.T, s *Store) (c *sqlite3.Conn, cached, size int64) {
	t.Helper()
	writerRaw(t, s, func(rc *sqlite3.Conn) {
		c = rc
		var err error
		if cached, _, err = rc.Status(sqlite3.DBSTATUS_CACHE_USED, false); err != nil {
			t.Fatal(err)
		}
		st, _, err := rc.Prepare("PRAGMA cache_size")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if !st.Step() {
			t.Fatalf("PRAGMA cache_size: %v", st.Err())
		}
		size = st.ColumnInt64(0)
	})
	return c, cached, size
}

// TestIndexGivesWriterBack: after a sync that stored more than the
// writer's cache holds, the search index's transactions run on a new
// connection of the writer (the old one closed, its SQLite memory given
// back) whose cache stays within indexCacheKiB however many bodies they
// read; the next apply has the whole cache again. A small apply, and a
// store opened with its own cache, keep the writer's connection.
func TestIndexGivesWriterBack(t *testing.T) {
	testproc.SkipUnderRace(t)
	t.Parallel()
	ctx := context.Background()
	const size = 10 << 10
	n := writeCacheKiB<<10/size + 200
	fill := func(t *testing.T, s *Store, l *testLog) {
		for i := 0; i < n; {
			var batch []Entry
			for ; i < n && len(batch) < 200; i++ {
				batch = append(batch, l.spool(deliverCmd(sizedMessage(i, size))))
			}
			mustApply(t, s, batch...)
		}
	}
	// Four transactions of 100 bodies read about 4 MB, twice the
	// index's cache.
	indexSome := func(t *testing.T, s *Store, rounds int, check func()) {
		for range rounds {
			done, left, err := s.IndexPending(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			check()
			if left == 0 || done == 0 {
				return
			}
		}
	}

	t.Run("after a long sync", func(t *testing.T) {
		t.Parallel()
		s := openTest(t)
		var l testLog
		fill(t, s, &l)
		synced, cached, _ := writerState(t, s)
		if cached <= 2*indexCacheKiB<<10 {
			t.Fatalf("after applying %d messages of %d bytes the writer caches %d KiB: the test needs more than twice %d KiB", n, size, cached>>10, indexCacheKiB)
		}
		indexSome(t, s, 4, func() {
			c, cached, cacheSize := writerState(t, s)
			if c == synced {
				t.Fatal("the index's transaction ran on the writer's connection of the sync; want a new one")
			}
			// The pages' headers beside the pages: a few percent.
			if cacheSize != -indexCacheKiB || cached > indexCacheKiB<<10*9/8 {
				t.Fatalf("while indexing the writer caches %d KiB with cache_size %d; want about %d KiB at most (cache_size -%d)", cached>>10, cacheSize, indexCacheKiB, indexCacheKiB)
			}
		})
		mustApply(t, s, l.spool(deliverCmd(sizedMessage(n, size))))
		if _, _, cacheSize := writerState(t, s); cacheSize != -writeCacheKiB {
			t.Errorf("after an apply the writer's cache_size is %d; want -%d", cacheSize, writeCacheKiB)
		}
		// A message more and its indexing: the same connection, its
		// cache held small again.
		before, _, _ := writerState(t, s)
		indexSome(t, s, 1, func() {})
		if c, _, cacheSize := writerState(t, s); c != before || cacheSize != -indexCacheKiB {
			t.Errorf("indexing one message closed the writer's connection (%v) or left its cache_size at %d; want the same connection, cache_size -%d", c != before, cacheSize, indexCacheKiB)
		}
	})

	t.Run("with its own cache", func(t *testing.T) {
		t.Parallel()
		s, err := OpenWith(emptyStoreFile(t), Options{Parser: openTest(t).parser, WriteCacheKiB: 4 * writeCacheKiB})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		var l testLog
		fill(t, s, &l)
		synced, _, _ := writerState(t, s)
		indexSome(t, s, 4, func() {
			if c, _, cacheSize := writerState(t, s); c != synced || cacheSize != -4*writeCacheKiB {
				t.Fatalf("a store opened with a writer's cache of %d KiB indexed on a new connection (%v) or with cache_size %d; want neither", 4*writeCacheKiB, c != synced, cacheSize)
			}
		})
	})
}
