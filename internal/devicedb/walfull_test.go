package devicedb

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"

	"cspool/internal/testproc"
)

// fillDisk writes zeros at the end of path (made if missing) until its
// file system is full, then frees keep bytes of it.
func fillDisk(t *testing.T, path string, keep int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, size)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if err != nil {
				break
			}
		}
	}
	if err := f.Truncate(max(n-keep, 0)); err != nil {
		t.Fatal(err)
	}
}

// freeDisk frees n bytes at the end of the filler fillDisk wrote at
// path. The next fillDisk writes on from there: a test that fills the
// disk again and again writes about n bytes each time, not the disk.
func freeDisk(t *testing.T, path string, n int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, max(fi.Size()-n, 0)); err != nil {
		t.Fatal(err)
	}
}

// TestWALWriteOutFull: rows committed one at a time, each first on a
// full disk and then with one more 4 KiB of room at a time until it
// commits: every point where a commit's write-out can fail is reached,
// among them the rest of the padding frame SQLite writes after syncing a
// commit at a sector boundary, which the WAL index's next use wrote out,
// where a failure could not be reported (the frame was published without
// being in the file, and every later use of the WAL failed). A failed
// commit's error is returned, and the next try, with more room, on the
// same handle, commits. Nothing committed is lost or damaged. Plain
// databases have no buffer: their run checks the same outcome.
func TestWALWriteOutFull(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		name := "plain"
		if encrypted {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) {
			mnt := filepath.Join(t.TempDir(), "fs")
			testproc.MountTmpfs(t, mnt, "16m")
			o := Options{Params: walParams}
			if encrypted {
				o.Key = &key1
			}
			db, err := Open(filepath.Join(mnt, "mail.db"), o)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
			mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
			filler := filepath.Join(mnt, "filler")
			failed := 0
			const n = 300
			for i := range n {
				for keep := int64(0); ; keep += 4096 {
					if keep > 32*4096 {
						t.Fatalf("row %d: not committed with %d bytes free (%d failures before)", i, keep, failed)
					}
					fillDisk(t, filler, keep)
					_, err := db.Exec("INSERT INTO t VALUES (?, ?)", i, row(i))
					freeDisk(t, filler, 1<<20)
					if err == nil {
						break
					}
					failed++
				}
			}
			if failed == 0 {
				t.Fatal("no commit failed on the full disk")
			}
			checkRows(t, db, n)
			integrity(t, db)
		})
	}
}

// TestWALFailedConnReplaced: a connection whose WAL buffer failed to be
// written out where SQLite could not be told (walFile.err: the frames of
// a transaction that spilled, written out at the WAL index's next use) is
// closed when it is given back, and the next statement on the handle runs
// on a new one. The failure is set by hand here: TestWALWriteOutFull
// reaches the write-outs a full disk fails.
func TestWALFailedConnReplaced(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "mail.db"), Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
	mustExec(t, db, "INSERT INTO t VALUES (?, ?)", 0, row(0))
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Raw(func(dc any) error {
		f, err := dc.(interface{ Raw() *sqlite3.Conn }).Raw().FileControl("main", sqlite3.FCNTL_JOURNAL_POINTER)
		if err != nil {
			return err
		}
		w, ok := vfsutil.UnwrapFile[*walFile](f.(vfs.File))
		if !ok {
			return errors.New("no WAL buffer")
		}
		w.err = sqlite3.FULL
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExecContext(ctx, "INSERT INTO t VALUES (?, ?)", 1, row(1)); err == nil {
		t.Fatal("a write on the failed connection succeeded")
	}
	c.Close()
	mustExec(t, db, "INSERT INTO t VALUES (?, ?)", 1, row(1))
	checkRows(t, db, 2)
	integrity(t, db)
}
