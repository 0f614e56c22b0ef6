package mailstore

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// limitHeap limits the SQLite heap of the store's writer connection (each
// connection has a SQLite of its own) to bytes: an allocation beyond it
// fails with SQLITE_NOMEM, as the 256 MB of a connection's memory run out.
func limitHeap(t *testing.T, s *Store, bytes int) {
	t.Helper()
	if _, err := s.wdb.ExecContext(context.Background(), fmt.Sprintf("PRAGMA hard_heap_limit = %d", bytes)); err != nil {
		t.Fatal(err)
	}
}

// TestOutOfMemoryInApply: SQLite runs out of memory in the middle of an
// Apply (the writer's heap limited to 2 MB, the sixth of eight deliveries
// 2.5 MiB). The Apply returns an error that says so and which entry (or run of
// deliveries) it was applying, nothing of the batch is in the store, and the same batch
// applies in full once the limit is gone (the connection that failed is
// closed; the next one has none), each entry once. Then the same for the
// search indexer's write transaction. Before, the driver's panic left
// database/sql's hold on the writer taken and the Apply's deferred
// Rollback waited for it for ever, with the store's write lock held.
func TestOutOfMemoryInApply(t *testing.T) {
	for _, key := range []*devicedb.Key{nil, {7}} {
		t.Run(fmt.Sprintf("encrypted=%v", key != nil), func(t *testing.T) {
			ctx := context.Background()
			s, err := OpenWith(emptyStoreFile(t), Options{Parser: mimeform.Parser{}, Key: key})
			if err != nil {
				t.Fatal(err)
			}
			var l testLog
			var batch []Entry
			for i := range 8 {
				body := simpleMessage(fmt.Sprint("m", i))
				if i == 5 {
					body += strings.Repeat("a line of a large message\r\n", 5<<19/27)
				}
				batch = append(batch, l.spool(deliverCmd(body)))
			}
			before := dump(t, s)
			limitHeap(t, s, 2_000_000)
			err = testproc.Finish(t, "an Apply that ran out of memory", func() error {
				_, err := s.Apply(ctx, batch, batch[len(batch)-1].Pos)
				return err
			})
			t.Cleanup(func() { s.Close() })
			// Deliveries in a run apply together: the error names the run's
			// positions (1 to 8), else the entry's (6).
			if !errors.Is(err, sqlite3.NOMEM) || !(strings.Contains(err.Error(), "applying entry at position 6") ||
				strings.Contains(err.Error(), "applying entries at positions 1 to 8")) {
				t.Fatalf("Apply with a 2 MB heap: %v; want sqlite3.NOMEM naming position 6 or the run 1 to 8", err)
			}
			t.Logf("Apply: %v", err)
			if after := dump(t, s); !reflect.DeepEqual(after, before) {
				t.Fatalf("the store changed in an Apply that failed:\nbefore %+v\nafter  %+v", before, after)
			}
			var res *Result
			if err := testproc.Finish(t, "the Apply after it", func() (err error) {
				res, err = s.Apply(ctx, batch, batch[len(batch)-1].Pos)
				return err
			}); err != nil {
				t.Fatalf("the same batch again, without the limit: %v", err)
			}
			for _, o := range res.Outcomes {
				if o.Status != Applied {
					t.Errorf("entry %d: %v %s %s, want applied", o.Pos, o.Status, o.Reason, o.Detail)
				}
			}
			if pos, err := s.Position(ctx); err != nil || pos != 8 {
				t.Errorf("position %d, %v; want 8", pos, err)
			}
			if uids := uidsOf(t, s, "INBOX"); !reflect.DeepEqual(uids, []UID{1, 2, 3, 4, 5, 6, 7, 8}) {
				t.Errorf("INBOX holds UIDs %v, want 1 to 8", uids)
			}

			// A new connection of the writer, as after an idle close: the
			// index's transaction would give back one whose cache holds
			// the large message (writer.go), and the limit with it. The
			// index reads the large message in pieces (blob.go), so its
			// limit is below what the connection needs to read the
			// schema and the index's pages.
			s.wdb.SetMaxIdleConns(0)
			s.wdb.SetMaxIdleConns(1)
			limitHeap(t, s, 200_000)
			err = testproc.Finish(t, "indexing that ran out of memory", func() error {
				_, _, err := s.IndexPending(ctx, 100)
				return err
			})
			if !errors.Is(err, sqlite3.NOMEM) {
				t.Fatalf("IndexPending with a heap of 200 KB: %v; want sqlite3.NOMEM", err)
			}
			t.Logf("IndexPending: %v", err)
			var done, left int
			if err := testproc.Finish(t, "indexing after it", func() (err error) {
				done, left, err = s.IndexPending(ctx, 100)
				return err
			}); err != nil || done != 8 || left != 0 {
				t.Fatalf("IndexPending again, without the limit: %d indexed, %d left, %v; want 8, 0", done, left, err)
			}
		})
	}
}

// TestWriteCacheBounded: a writer's cache that would fill a connection's
// SQLite memory (256 MiB, as seed spool --device once asked for, and ran
// out of memory in a batch) is refused when the store is opened; the
// largest allowed opens.
func TestWriteCacheBounded(t *testing.T) {
	_, err := OpenWith(emptyStoreFile(t), Options{Parser: mimeform.Parser{}, WriteCacheKiB: 256 << 10})
	if err == nil || !strings.Contains(err.Error(), "at most 131072 KiB") {
		t.Errorf("opening with a writer's cache of 256 MiB: %v, want it refused with the bound", err)
	}
	s, err := OpenWith(emptyStoreFile(t), Options{Parser: mimeform.Parser{}, WriteCacheKiB: maxWriteCacheKiB})
	if err != nil {
		t.Fatalf("opening with a writer's cache of %d KiB: %v", maxWriteCacheKiB, err)
	}
	s.Close()
}
