package devicedb

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"

	"cspool/internal/testproc"
)

// mainOf is c's database file.
func mainOf(t *testing.T, c *sql.Conn) *mainFile {
	t.Helper()
	var m *mainFile
	err := c.Raw(func(dc any) error {
		f, err := dc.(interface{ Raw() *sqlite3.Conn }).Raw().FileControl("main", sqlite3.FCNTL_FILE_POINTER)
		if err != nil {
			return err
		}
		m, _ = vfsutil.UnwrapFile[*mainFile](f.(vfs.File))
		return nil
	})
	if err != nil || m == nil {
		t.Fatalf("the connection's database file: %v", err)
	}
	return m
}

// failingFile fails every write; the file's descriptor stays reachable
// (mainFile.reserve).
type failingFile struct{ vfs.File }

var errDiskBroken = errors.New("the disk is broken")

func (failingFile) WriteAt([]byte, int64) (int, error) { return 0, errDiskBroken }

func (f failingFile) SyscallConn() (syscall.RawConn, error) {
	return f.File.(interface {
		SyscallConn() (syscall.RawConn, error)
	}).SyscallConn()
}

// checkpointPassive runs a PASSIVE checkpoint on c.
func checkpointPassive(c *sql.Conn) (busy, frames, copied int, err error) {
	err = c.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
	return
}

// grownDB makes the encrypted database at path with row 0 in the file
// and a row 1 of size bytes in the WAL alone: its frames grow the file
// when copied. It returns the writer and row 1's text.
func grownDB(t *testing.T, path string, size int) (*sql.DB, string) {
	t.Helper()
	db := openOneConn(t, path, true)
	mustExec(t, db, "INSERT INTO t VALUES (0, ?)", row(0))
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	big := strings.Repeat("0123456789abcdef", size/16)
	mustExec(t, db, "INSERT INTO t VALUES (1, ?)", big)
	return db, big
}

// readConn opens another connection to path, which has read from it.
func readConn(t *testing.T, path string) *sql.Conn {
	t.Helper()
	c, err := openOneConn(t, path, false).Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.QueryRowContext(context.Background(), "SELECT count(*) FROM t").Scan(new(int)); err != nil {
		t.Fatal(err)
	}
	return c
}

// catchLostWrite has lostWrite record its calls instead of stopping the
// process, for the test.
func catchLostWrite(t *testing.T) *bool {
	stopped := false
	f := lostWrite
	t.Cleanup(func() { lostWrite = f })
	lostWrite = func(string, error) { stopped = true }
	return &stopped
}

// TestCheckpointWritesGathered: a checkpoint of a transaction that grew
// the database by 1 MiB writes the new pages in a few calls, not one a
// page; the database file, read back by the adiantum VFS, holds them
// (the blocks are encrypted as it encrypts each, at their own offsets).
func TestCheckpointWritesGathered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	db, big := grownDB(t, path, 1<<20)
	c := readConn(t, path)
	before := procIO(t, "syscw: ")
	busy, frames, copied, err := checkpointPassive(c)
	writes := procIO(t, "syscw: ") - before
	if err != nil || busy != 0 || copied != frames || frames < 256 {
		t.Fatalf("checkpoint: busy %d, %d frames, %d copied, %v; want every frame of the 1 MiB copied", busy, frames, copied, err)
	}
	t.Logf("a checkpoint of %d frames: %d write calls", frames, writes)
	if writes > 16 {
		t.Errorf("a checkpoint of %d frames made %d write calls, want 16 or fewer (%d KiB a call)", frames, writes, ckptWriteMax>>10)
	}
	if m := mainOf(t, c); m.ckpt != nil {
		t.Errorf("the checkpoint's pages are still held after it: %+v", m.ckpt)
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() != 0 {
		t.Fatalf("the WAL after a TRUNCATE checkpoint: %v, %v", fi, err)
	}
	fresh := openOneConn(t, path, false)
	var x string
	if err := fresh.QueryRow("SELECT x FROM t WHERE id = 1").Scan(&x); err != nil || x != big {
		t.Fatalf("the row read back: %d bytes, %v; want the 1 MiB written", len(x), err)
	}
	integrity(t, fresh)
	if raw, err := os.ReadFile(path); err != nil || bytes.Contains(raw, []byte("0123456789abcdef")) {
		t.Fatalf("the database file holds the row in plaintext (%v)", err)
	}
}

// TestCheckpointFullDiskGoesOn: a checkpoint that would grow the
// database on a full disk fails, as a checkpoint of pages written one at a
// time did, and does not stop the process (nothing gathers where no room
// was reserved); with room again the next one copies every frame, and
// nothing is lost.
func TestCheckpointFullDiskGoesOn(t *testing.T) {
	mnt := filepath.Join(t.TempDir(), "fs")
	testproc.MountTmpfs(t, mnt, "8m")
	path := filepath.Join(mnt, "mail.db")
	db, big := grownDB(t, path, 1<<20)
	stopped := catchLostWrite(t)
	c := readConn(t, path)
	// Room for a quarter of the growth: some pages are written, then
	// the disk is full.
	fill := filepath.Join(mnt, "fill")
	fillDisk(t, fill, 256<<10)
	busy, frames, copied, err := checkpointPassive(c)
	t.Logf("on a full disk: busy %d, %d frames, %d copied, %v", busy, frames, copied, err)
	if err == nil && copied == frames {
		t.Fatal("a checkpoint that grows the database copied every frame on a full disk")
	}
	if *stopped {
		t.Fatal("a full disk stopped the process")
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	if busy, frames, copied, err = checkpointPassive(c); err != nil || copied != frames {
		t.Fatalf("with room again: busy %d, %d frames, %d copied, %v", busy, frames, copied, err)
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	fresh := openOneConn(t, path, false)
	var x string
	if err := fresh.QueryRow("SELECT x FROM t WHERE id = 0").Scan(&x); err != nil || x != row(0) {
		t.Fatalf("row 0 read back: %q, %v", x, err)
	}
	if err := fresh.QueryRow("SELECT x FROM t WHERE id = 1").Scan(&x); err != nil || x != big {
		t.Fatalf("the row read back: %d bytes, %v", len(x), err)
	}
	integrity(t, fresh)
}

// TestCheckpointWriteFailsInside: a write-out of gathered pages that
// fails while the copy goes on fails the checkpoint, as a failed write of
// one page does; the process goes on and a later checkpoint copies it all.
func TestCheckpointWriteFailsInside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	db, big := grownDB(t, path, 1<<20) // 1 MiB: four write-outs
	stopped := catchLostWrite(t)
	c := readConn(t, path)
	if _, _, _, err := checkpointPassive(c); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db, "INSERT INTO t VALUES (2, ?)", big)
	m := mainOf(t, c)
	raw := m.raw
	m.raw = failingFile{raw}
	busy, frames, copied, err := checkpointPassive(c)
	m.raw = raw
	if err == nil || !strings.Contains(err.Error(), "I/O") {
		t.Fatalf("a checkpoint whose write-out failed: busy %d, %d frames, %d copied, %v; want an I/O error", busy, frames, copied, err)
	}
	if *stopped {
		t.Fatal("a write-out that failed inside the copy stopped the process")
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	fresh := openOneConn(t, path, false)
	var n int
	if err := fresh.QueryRow("SELECT count(*) FROM t WHERE x = ?", big).Scan(&n); err != nil || n != 2 {
		t.Fatalf("the large rows read back: %d, %v", n, err)
	}
	integrity(t, fresh)
}

// lostWriteEnv names the database the helper process below checkpoints
// with a disk that fails its writes.
const lostWriteEnv = "CSPOOL_TEST_LOST_WRITE_DB"

// TestCheckpointLostWriteStops: when the last write-out of a checkpoint,
// at its end, fails (where SQLite would take the copy as done without
// hearing of it), the process stops with EX_IOERR and says why, before
// the copy counts; the WAL keeps every frame, and the next checkpoint,
// from another process, copies them: nothing is lost.
func TestCheckpointLostWriteStops(t *testing.T) {
	if path := os.Getenv(lostWriteEnv); path != "" {
		c := readConn(t, path)
		m := mainOf(t, c)
		m.raw = failingFile{m.raw}
		busy, frames, copied, err := checkpointPassive(c)
		t.Fatalf("the checkpoint returned (busy %d, %d frames, %d copied, %v); want the process stopped", busy, frames, copied, err)
	}
	path := filepath.Join(t.TempDir(), "mail.db")
	db, mid := grownDB(t, path, 64<<10) // one write-out, at the end

	cmd := exec.Command(os.Args[0], "-test.run=^TestCheckpointLostWriteStops$")
	cmd.Env = append(os.Environ(), lostWriteEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 74 {
		t.Fatalf("the process: %v; want exit status 74\n%s", err, out)
	}
	if !strings.Contains(string(out), path) || !strings.Contains(string(out), errDiskBroken.Error()) {
		t.Errorf("the process said %q; want the database and the error named", out)
	}
	var busy, frames, copied int
	if err := db.QueryRow("PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &frames, &copied); err != nil || busy != 0 || copied != frames {
		t.Fatalf("the checkpoint after: busy %d, %d frames, %d copied, %v", busy, frames, copied, err)
	}
	fresh := openOneConn(t, path, false)
	var x string
	if err := fresh.QueryRow("SELECT x FROM t WHERE id = 1").Scan(&x); err != nil || x != mid {
		t.Fatalf("the row read back: %d bytes, %v", len(x), err)
	}
	integrity(t, fresh)
}

// BenchmarkCheckpointGrowth: the copy beside the writer of a transaction
// that grew the database by 4 MiB (a first sync's batches), per MiB.
func BenchmarkCheckpointGrowth(b *testing.B) {
	path := filepath.Join(b.TempDir(), "mail.db")
	db, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	rdb, err := Open(path, Options{Key: &key1, Params: walParams})
	if err != nil {
		b.Fatal(err)
	}
	defer rdb.Close()
	for _, q := range []string{"PRAGMA wal_autocheckpoint = 0", "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)"} {
		if _, err := db.Exec(q); err != nil {
			b.Fatal(err)
		}
	}
	big := strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB
	b.SetBytes(4 << 20)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		if _, err := db.Exec("INSERT INTO t VALUES (?, ?)", i, big); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var busy, frames, copied int
		if err := rdb.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil || copied != frames {
			b.Fatalf("checkpoint: %d of %d copied, %v", copied, frames, err)
		}
	}
}
