package devicedb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/testproc"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/driver"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// row is the content of row i: lengths that put frames and blocks at
// every alignment.
func row(i int) string {
	return fmt.Sprintf("%d:%s:", i, token) + strings.Repeat(string(rune('a'+i%26)), 100+(i*337)%9000)
}

// checkRows checks that db holds exactly rows 0..n-1 of table t, each
// with its content.
func checkRows(t *testing.T, db *sql.DB, n int) {
	t.Helper()
	rows, err := db.Query("SELECT id, x FROM t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var id int
		var x string
		if err := rows.Scan(&id, &x); err != nil {
			t.Fatal(err)
		}
		if id != got || x != row(id) {
			t.Fatalf("row %d (want %d): wrong content", id, got)
		}
		got++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("%d rows, want %d", got, n)
	}
}

func integrity(t *testing.T, db *sql.DB) {
	t.Helper()
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q, %v", ok, err)
	}
}

// TestWALBufferConcurrent: two writers and a reader on one encrypted
// database, each its own connection, the WAL never checkpointed until the
// end: every commit is visible to the others whole, and a transaction that
// spilled frames into the WAL and rolled back leaves nothing that later
// lands on the other writer's frames.
//
// Six rounds by default take every writer order, insert size (round%3)
// and other writer's insert size (round%5) once; with CSPOOL_HEAVY=1 (CI)
// twelve, as before. The reader checks every row after each step, so the
// time grows with the square of the rounds: 27 s for twelve under the
// race detector.
func TestWALBufferConcurrent(t *testing.T) {
	rounds := 6
	if testproc.Heavy() {
		rounds = 12
	}
	path := filepath.Join(t.TempDir(), "mail.db")
	open := func() (*sql.DB, *sql.Conn) {
		db, err := Open(path, Options{Key: &key1, Params: walParams})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		c, err := db.Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return db, c
	}
	ctx := context.Background()
	exec := func(c *sql.Conn, q string, args ...any) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	_, a := open()
	_, b := open()
	rdb, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	rdb.SetMaxOpenConns(1)
	for _, c := range []*sql.Conn{a, b} {
		exec(c, "PRAGMA wal_autocheckpoint = 0")
		// A small cache spills a large transaction's pages into the WAL
		// before it commits.
		exec(c, "PRAGMA cache_size = 20")
	}
	exec(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
	n := 0
	insert := func(c *sql.Conn, count int) {
		t.Helper()
		exec(c, "BEGIN IMMEDIATE")
		for i := range count {
			exec(c, "INSERT INTO t VALUES (?, ?)", n+i, row(n+i))
		}
		exec(c, "COMMIT")
		n += count
	}
	// spill inserts other rows into c until the pages it spilled into the
	// WAL end in a partial block still buffered, then rolls back.
	spill := func(c *sql.Conn) {
		t.Helper()
		exec(c, "BEGIN IMMEDIATE")
		for i := 0; buffered(t, c) == 0; i++ {
			if i == 2000 {
				t.Fatal("no spilled frames left in the buffer")
			}
			exec(c, "INSERT INTO t VALUES (?, ?)", 1e9+i, strings.Repeat("x", 3000))
		}
		exec(c, "ROLLBACK")
		if n := buffered(t, c); n != 0 {
			t.Fatalf("%d bytes still buffered after the rollback", n)
		}
	}
	for round := range rounds {
		w, other := a, b
		if round%2 == 1 {
			w, other = b, a
		}
		insert(w, 1+round%3)
		spill(w)
		insert(other, 1+round%5*30) // lands where the spilled frames were
		checkRows(t, rdb, n)
		insert(w, 200+round*50) // more than the buffer holds
		checkRows(t, rdb, n)
	}
	exec(a, "PRAGMA wal_checkpoint(TRUNCATE)")
	checkRows(t, rdb, n)
	integrity(t, rdb)
}

// TestWALBufferFormat: a database written through the buffer is the
// adiantum VFS's format: that VFS alone reads it, WAL included.
func TestWALBufferFormat(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.db")
	db, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
	const n = 300
	for i := range n {
		mustExec(t, db, "INSERT INTO t VALUES (?, ?)", i, row(i))
	}
	// Copy the database and its WAL while the connection is open (its
	// WAL not checkpointed), as a crash would leave them.
	copyDir := t.TempDir()
	for _, s := range []string{"", "-wal"} {
		copyFile(t, path+s, filepath.Join(copyDir, "mail.db"+s))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	plain, err := driver.Open("file:" + escapePath(filepath.Join(copyDir, "mail.db")) + "?vfs=adiantum&hexkey=" + fmt.Sprintf("%x", key1[:]))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	checkRows(t, plain, n)
	integrity(t, plain)
	if found := leaks(t, dir); len(found) != 0 {
		t.Fatalf("plaintext in %v", found)
	}
}

// buffered is how many bytes c's WAL buffer holds.
func buffered(t *testing.T, c *sql.Conn) int {
	t.Helper()
	return len(walBuf(t, c))
}

// walBuf is c's WAL buffer (nil before its WAL file is open).
func walBuf(t *testing.T, c *sql.Conn) []byte {
	t.Helper()
	var buf []byte
	err := c.Raw(func(dc any) error {
		f, err := dc.(interface{ Raw() *sqlite3.Conn }).Raw().FileControl("main", sqlite3.FCNTL_JOURNAL_POINTER)
		if err != nil {
			return err
		}
		if w, ok := vfsutil.UnwrapFile[*walFile](f.(vfs.File)); ok {
			buf = w.buf
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWALBufferWholeBlocks commits a row of 1 MiB through the buffer:
// its whole blocks reach the file with a few write calls (the process's
// write syscalls, /proc/self/io), not one per 4 KiB block as the adiantum
// VFS writes them, and the database is that VFS's format still, WAL
// included (read back by it alone).
func TestWALBufferWholeBlocks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.db")
	db, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	before := procIO(t, "syscw: ")
	mustExec(t, db, "INSERT INTO t VALUES (0, ?)", big)
	if n := procIO(t, "syscw: ") - before; n > 64 {
		t.Errorf("a commit of 1 MiB made %d write calls, want a few (the WAL's 256 blocks and more in 64 or fewer)", n)
	}
	copyDir := t.TempDir()
	for _, s := range []string{"", "-wal"} {
		copyFile(t, path+s, filepath.Join(copyDir, "mail.db"+s))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	plain, err := driver.Open("file:" + escapePath(filepath.Join(copyDir, "mail.db")) + "?vfs=adiantum&hexkey=" + fmt.Sprintf("%x", key1[:]))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var x string
	if err := plain.QueryRow("SELECT x FROM t WHERE id = 0").Scan(&x); err != nil || x != big {
		t.Fatalf("the row read back by the adiantum VFS: %d bytes, %v; want the 1 MiB written", len(x), err)
	}
	integrity(t, plain)
}

// TestWALBufferStaysSmall commits 4 MiB through the buffer, in one
// transaction and then in many: the buffer the connection keeps for its
// life is at most 256 KiB and a frame, not the 1.3 MB it grew to when it
// wrote out only at 1 MiB (a sixth of the daemon's live heap in a first
// sync; docs/BENCHMARKS.md, "The first sync's peak and a SEARCH's
// garbage").
func TestWALBufferStaysSmall(t *testing.T) {
	const most = 256<<10 + 2*blockSize
	db, err := Open(filepath.Join(t.TempDir(), "mail.db"), Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	kept := func() int {
		t.Helper()
		return cap(walBuf(t, c))
	}
	if _, err := c.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, x BLOB)"); err != nil {
		t.Fatal(err)
	}
	row := make([]byte, 64<<10)
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?, ?)", i, row); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := kept(); n == 0 || n > most {
		t.Errorf("after a commit of 4 MiB the WAL buffer keeps %d bytes, want some and at most %d", n, most)
	}
	for i := range 64 {
		if _, err := c.ExecContext(ctx, "UPDATE t SET x = ? WHERE id = ?", row, i); err != nil {
			t.Fatal(err)
		}
	}
	if n := kept(); n > most {
		t.Errorf("after 64 commits of 64 KiB the WAL buffer keeps %d bytes, want at most %d", n, most)
	}
}
