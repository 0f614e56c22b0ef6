package devicedb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// procIO reads a counter of /proc/self/io ("syscr: ", "syscw: ").
func procIO(t *testing.T, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			var n int64
			fmt.Sscan(v, &n)
			return n
		}
	}
	t.Skipf("no %q in /proc/self/io", field)
	return 0
}

// openOneConn opens the encrypted database at path with one connection
// (a writer that never checkpoints on its own when table is set, and
// then it makes table t).
func openOneConn(t *testing.T, path string, table bool) *sql.DB {
	t.Helper()
	db, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	if table {
		mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
		mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
	}
	return db
}

// TestCheckpointReadsInWindows: a checkpoint on a read connection (the
// copy beside the writer) of a transaction of 1 MiB reads the WAL's 258
// blocks in a few calls, not one call or more a block (and a lock and an
// unlock around each) as through the adiantum VFS; the database it
// leaves, read back by the adiantum VFS alone, holds what was written.
func TestCheckpointReadsInWindows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	db := openOneConn(t, path, true)
	mustExec(t, db, "INSERT INTO t VALUES (0, ?)", row(0))
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	mustExec(t, db, "INSERT INTO t VALUES (1, ?)", big)

	rdb := openOneConn(t, path, false)
	var n int
	if err := rdb.QueryRow("SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("count: %d, %v", n, err)
	}
	before := procIO(t, "syscr: ")
	var busy, frames, copied int
	if err := rdb.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
		t.Fatal(err)
	}
	reads := procIO(t, "syscr: ") - before
	if busy != 0 || copied != frames || frames < 256 {
		t.Fatalf("checkpoint: busy %d, %d frames, %d copied; want every frame of the 1 MiB copied", busy, frames, copied)
	}
	t.Logf("a checkpoint of %d frames: %d read calls", frames, reads)
	if reads > 32 {
		t.Errorf("a checkpoint of %d frames made %d read calls, want 32 or fewer (windows of up to %d blocks)", frames, reads, walWindowMax)
	}
	// The frames are in the database file: read it alone.
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() != 0 {
		t.Fatalf("the WAL after a TRUNCATE checkpoint: %v, %v", fi, err)
	}
	var x string
	if err := rdb.QueryRow("SELECT x FROM t WHERE id = 1").Scan(&x); err != nil || x != big {
		t.Fatalf("the row read back: %d bytes, %v; want the 1 MiB written", len(x), err)
	}
	integrity(t, rdb)
}

// TestCheckpointBesideWriter: a writer commits transactions of every size
// (frames ending at every offset in a block) while another connection
// copies the WAL into the database again and again; then the WAL is
// checkpointed and cut, and the database file alone holds every row
// whole. The block that holds the end of the committed frames is rewritten
// by the writer at each commit while the copies read it.
func TestCheckpointBesideWriter(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	db := openOneConn(t, path, true)
	rdb := openOneConn(t, path, false)

	const commits = 120
	done := make(chan struct{})
	var wg sync.WaitGroup
	copies := 0
	var copyErr error
	wg.Go(func() {
		ctx := context.Background()
		for i := 0; i < 2000; i++ {
			select {
			case <-done:
				return
			default:
			}
			var busy, frames, copied int
			if err := rdb.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
				copyErr = err
				return
			}
			copies++
		}
	})
	n := 0
	for c := range commits {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for range 1 + c%7 {
			if _, err := tx.Exec("INSERT INTO t VALUES (?, ?)", n, row(n)); err != nil {
				t.Fatal(err)
			}
			n++
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	if copyErr != nil {
		t.Fatalf("a copy beside the writer: %v", copyErr)
	}
	if copies == 0 {
		t.Fatal("no copy ran beside the writer")
	}
	checkRows(t, rdb, n)
	var busy, frames, copied int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &copied); err != nil || busy != 0 {
		t.Fatalf("TRUNCATE checkpoint: busy %d, %v", busy, err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() != 0 {
		t.Fatalf("the WAL after a TRUNCATE checkpoint: %v, %v", fi, err)
	}
	fresh := openOneConn(t, path, false)
	checkRows(t, fresh, n)
	integrity(t, fresh)
}
