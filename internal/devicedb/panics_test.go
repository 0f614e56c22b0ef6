package devicedb

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/testproc"
)

// TestOutOfMemoryFailsTheTransaction: SQLite runs out of memory in the
// middle of a write transaction (its heap limited to 8 MB, rows of 1, 2,
// 4 MiB and more inserted until one does not fit). The statement fails with
// sqlite3.NOMEM instead of the driver's panic, the deferred Rollback
// returns, nothing of the transaction is in the file, and the next
// transaction, on a new connection, commits. (The driver's panic left
// database/sql's hold on the connection taken, and the Rollback waited
// for ever.)
func TestOutOfMemoryFailsTheTransaction(t *testing.T) {
	for _, k := range []*Key{nil, &key1} {
		t.Run(fmt.Sprintf("encrypted=%v", k != nil), func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(filepath.Join(t.TempDir(), "db"), Options{Key: k, Params: walParams})
			if err != nil {
				t.Fatal(err)
			}
			// One connection, as a store's writer has.
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE t (x BLOB)")
			mustExec(t, db, "INSERT INTO t VALUES (x'00')")
			mustExec(t, db, "PRAGMA hard_heap_limit = 8000000")
			inserted := 0
			err = testproc.Finish(t, "a transaction that ran out of memory", func() error {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer tx.Rollback()
				// A prepared statement, as a store's writer runs them:
				// database/sql gives its connection back after the
				// driver's call, not in a deferred call.
				st, err := tx.PrepareContext(ctx, "INSERT INTO t VALUES (randomblob(?))")
				if err != nil {
					return err
				}
				for size := 1 << 20; size <= 64<<20; size *= 2 {
					if _, err := st.ExecContext(ctx, size); err != nil {
						return err
					}
					inserted++
				}
				return tx.Commit()
			})
			if !errors.Is(err, sqlite3.NOMEM) {
				t.Fatalf("rows of 1 MiB and up inserted with an 8 MB heap: %v after %d rows, want sqlite3.NOMEM", err, inserted)
			}
			t.Logf("%d rows inserted, then: %v", inserted, err)
			var n int
			if err := testproc.Finish(t, "a count after it", func() error { return db.QueryRow("SELECT count(*) FROM t").Scan(&n) }); err != nil || n != 1 {
				t.Fatalf("rows after the failed transaction: %d, %v; want the 1 from before", n, err)
			}
			err = testproc.Finish(t, "a transaction after it", func() error {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					return err
				}
				defer tx.Rollback()
				for range 3 {
					if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (randomblob(1048576))"); err != nil {
						return err
					}
				}
				return tx.Commit()
			})
			if err != nil {
				t.Fatalf("a transaction on a new connection: %v", err)
			}
			if err := db.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 4 {
				t.Fatalf("rows at the end: %d, %v; want 4", n, err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
