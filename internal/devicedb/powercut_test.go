package devicedb

import (
	"bytes"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
	"github.com/ncruces/go-sqlite3/vfs/adiantum"
)

// A power cut, as the disk is left by it.
//
// powerDisk sits below the adiantum VFS, at the files themselves: it
// passes every change through and records it (a write, a truncation, a
// sync, a removal) in order, with a mark the test adds each time a commit
// has returned. From the record, image builds what the disk would hold
// after a power cut in any write: each file as of its last sync before the
// cut; of its changes after that sync, which the disk had not been asked
// to keep, either all those before the cut or none of them; and the write
// the cut fell in torn: its first blocks written, the next one written in
// its first sector only (512 bytes; the rest of that block as it was,
// which makes the whole block decrypt to garbage), the rest not. The
// names of the files are taken as they were: creating the WAL syncs its
// directory at its first sync.

// sectorSize is the unit a disk writes whole: a write torn inside a block
// leaves its first sectors new and the rest as they were.
const sectorSize = 512

type diskOp int

const (
	opWrite diskOp = iota
	opTruncate
	opSync
	opRemove
	opMark
)

// diskEvent is a change to a file, or a mark.
type diskEvent struct {
	op   diskOp
	file string // the file's base name
	// off is a write's offset, a truncation's size, a mark's rows
	// committed.
	off  int64
	data []byte
}

// powerDisk is the record of the changes made to a database's files.
type powerDisk struct {
	mu     sync.Mutex
	events []diskEvent
}

func (d *powerDisk) record(e diskEvent) {
	d.mu.Lock()
	d.events = append(d.events, e)
	d.mu.Unlock()
}

// mark records that n rows are committed: a commit returned.
func (d *powerDisk) mark(n int) { d.record(diskEvent{op: opMark, off: int64(n)}) }

// diskVFS records the changes made through it on d.
type diskVFS struct {
	vfs.VFS
	disk *powerDisk
}

func (v diskVFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	f, flags, err := vfsutil.WrapOpenFilename(v.VFS, name, flags)
	if err != nil || name == nil || name.String() == "" {
		return f, flags, err
	}
	return &diskFile{File: f, name: filepath.Base(name.String()), disk: v.disk}, flags, nil
}

func (v diskVFS) Delete(name string, syncDir bool) error {
	v.disk.record(diskEvent{op: opRemove, file: filepath.Base(name)})
	return v.VFS.Delete(name, syncDir)
}

// diskFile is a file whose changes are recorded.
type diskFile struct {
	vfs.File
	name string
	disk *powerDisk
}

func (f *diskFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	f.disk.record(diskEvent{op: opWrite, file: f.name, off: off, data: bytes.Clone(p[:n])})
	return n, err
}

func (f *diskFile) Truncate(size int64) error {
	err := f.File.Truncate(size)
	if err == nil {
		f.disk.record(diskEvent{op: opTruncate, file: f.name, off: size})
	}
	return err
}

func (f *diskFile) Sync(flags vfs.SyncFlag) error {
	err := f.File.Sync(flags)
	if err == nil {
		f.disk.record(diskEvent{op: opSync, file: f.name})
	}
	return err
}

func (f *diskFile) SharedMemory() vfs.SharedMemory  { return vfsutil.WrapSharedMemory(f.File) }
func (f *diskFile) LockState() vfs.LockLevel        { return vfsutil.WrapLockState(f.File) }
func (f *diskFile) SizeHint(size int64) error       { return vfsutil.WrapSizeHint(f.File, size) }
func (f *diskFile) ChunkSize(size int)              { vfsutil.WrapChunkSize(f.File, size) }
func (f *diskFile) HasMoved() (bool, error)         { return vfsutil.WrapHasMoved(f.File) }
func (f *diskFile) PersistentWAL() bool             { return vfsutil.WrapPersistWAL(f.File) }
func (f *diskFile) SetPersistentWAL(keep bool)      { vfsutil.WrapSetPersistWAL(f.File, keep) }
func (f *diskFile) BusyHandler(handler func() bool) { vfsutil.WrapBusyHandler(f.File, handler) }

// SyscallConn lets the checkpoint reserve room with fallocate and gather
// its pages (ckptwrite.go), as on the files themselves.
func (f *diskFile) SyscallConn() (syscall.RawConn, error) {
	sc, ok := f.File.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// crash is a power cut: in the write at events[at], torn inside its
// block torn; keep says whether the changes no sync covered before it
// reached the disk.
type crash struct {
	at, torn int
	keep     bool
}

func (c crash) String() string {
	keep := "kept"
	if !c.keep {
		keep = "lost"
	}
	return fmt.Sprintf("write %d torn in its block %d, earlier unsynced writes %s", c.at, c.torn, keep)
}

// image writes into dir the files the disk holds after the crash c.
func (d *powerDisk) image(dir string, c crash) error {
	cur := map[string][]byte{}
	durable := map[string][]byte{}
	put := func(file []byte, off int64, p []byte) []byte {
		if end := off + int64(len(p)); end > int64(len(file)) {
			file = append(file, make([]byte, end-int64(len(file)))...)
		}
		copy(file[off:], p)
		return file
	}
	for _, e := range d.events[:c.at] {
		switch e.op {
		case opWrite:
			cur[e.file] = put(cur[e.file], e.off, e.data)
		case opTruncate:
			f := cur[e.file]
			if e.off <= int64(len(f)) {
				f = f[:e.off]
			} else {
				f = append(f, make([]byte, e.off-int64(len(f)))...)
			}
			cur[e.file] = f
		case opSync:
			durable[e.file] = bytes.Clone(cur[e.file])
		case opRemove:
			delete(cur, e.file)
			delete(durable, e.file)
		}
	}
	files := durable
	if c.keep {
		files = cur
	}
	w := d.events[c.at]
	f := bytes.Clone(files[w.file])
	from := int64(c.torn) * blockSize
	f = put(f, w.off, w.data[:from])
	sector := w.data[from:min(from+sectorSize, int64(len(w.data)))]
	if end := w.off + min(from+blockSize, int64(len(w.data))); end > int64(len(f)) {
		f = append(f, make([]byte, end-int64(len(f)))...)
	}
	files[w.file] = put(f, w.off+from, sector)
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// pending reports whether a change of a file made before events[at] was
// not covered by a sync of that file before it.
func (d *powerDisk) pending(at int) bool {
	dirty := map[string]bool{}
	for _, e := range d.events[:at] {
		switch e.op {
		case opWrite, opTruncate:
			dirty[e.file] = true
		case opSync, opRemove:
			dirty[e.file] = false
		}
	}
	for _, v := range dirty {
		if v {
			return true
		}
	}
	return false
}

// promised returns, for a cut at events[at], the rows committed by the
// commits that had returned (-1: none had, not even the table's), and
// the rows once the commit under way, if any, returns.
func (d *powerDisk) promised(at int) (committed, next int) {
	committed = -1
	for _, e := range d.events[:at] {
		if e.op == opMark {
			committed = int(e.off)
		}
	}
	next = committed
	for _, e := range d.events[at:] {
		if e.op == opMark {
			next = int(e.off)
			break
		}
	}
	return committed, next
}

// rowsAfterCut opens the database at path as a device does after a
// power cut, and returns how many rows of t it holds (-1: no table t);
// an error if the database does not open, is damaged, or holds rows that
// are not rows 0..n-1, each with its content.
func rowsAfterCut(path string) (int, error) {
	// Without syncs: what is checked is what SQLite reads back.
	db, err := Open(path, Options{Key: &key1, Params: "_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)"})
	if err != nil {
		return 0, fmt.Errorf("opening: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var tables int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master WHERE name = 't'").Scan(&tables); err != nil {
		return 0, fmt.Errorf("reading the schema: %w", err)
	}
	if tables == 0 {
		return -1, nil
	}
	var ok string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		return 0, fmt.Errorf("integrity_check: %q, %v", ok, err)
	}
	rows, err := db.Query("SELECT id, x FROM t ORDER BY id")
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id int
		var x string
		if err := rows.Scan(&id, &x); err != nil {
			return 0, err
		}
		if id != n || x != row(id) {
			return 0, fmt.Errorf("row %d where row %d belongs, or with other content", id, n)
		}
		n++
	}
	return n, rows.Err()
}

// powerWorkload commits transactions of rows of every size through db,
// marking each on disk once it returned: into the WAL, copied into the
// database (PASSIVE, on db), into a WAL that starts over, rows deleted
// and inserted again (pages of the database file written over at the
// next copy, which the read connection rdb makes, as the mail store's
// copy beside the writer), copied and the WAL cut (TRUNCATE), and on.
func powerWorkload(t *testing.T, db, rdb *sql.DB, disk *powerDisk) {
	t.Helper()
	mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
	disk.mark(0)
	n := 0
	commit := func(rows int, again int) {
		t.Helper()
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for i := range rows {
			if _, err := tx.Exec("INSERT INTO t VALUES (?, ?)", n+i, row(n+i)); err != nil {
				t.Fatal(err)
			}
		}
		if again >= 0 {
			if _, err := tx.Exec("DELETE FROM t WHERE id = ?", again); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec("INSERT INTO t VALUES (?, ?)", again, row(again)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		n += rows
		disk.mark(n)
	}
	for i := range 10 {
		commit(1+i%3, -1)
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(PASSIVE)")
	for i := range 5 {
		commit(1+i%2, i*3)
	}
	var busy, frames, copied int
	if err := rdb.QueryRow("PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil || frames == 0 || copied != frames {
		t.Fatalf("the copy on the read connection: %d of %d frames copied, %v", copied, frames, err)
	}
	for i := range 3 {
		commit(1, i*5+1)
	}
	mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
	for range 3 {
		commit(2, -1)
	}
}

// powerStacks are the VFS stacks a power cut is tried under, over the
// recording disk: the device's (the WAL buffer over the adiantum VFS),
// and, to show that the cuts find a loss where there is one, the adiantum
// VFS alone claiming powersafe overwrite, which it does not.
var powerStacks = map[string]func(disk vfs.VFS) vfs.VFS{
	"device": func(disk vfs.VFS) vfs.VFS {
		return &walBufVFS{VFS: adiantum.Wrap(disk, nil)}
	},
	"psow": func(disk vfs.VFS) vfs.VFS {
		return psowVFS{VFS: adiantum.Wrap(disk, nil)}
	},
}

// psowVFS claims powersafe overwrite for the files of the VFS below it.
type psowVFS struct{ vfs.VFS }

func (v psowVFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	f, flags, err := vfsutil.WrapOpenFilename(v.VFS, name, flags)
	if err != nil {
		return f, flags, err
	}
	return psowFile{f}, flags, nil
}

type psowFile struct{ vfs.File }

func (f psowFile) DeviceCharacteristics() vfs.DeviceCharacteristic {
	return f.File.DeviceCharacteristics() | vfs.IOCAP_POWERSAFE_OVERWRITE
}
func (f psowFile) Unwrap() vfs.File                { return f.File }
func (f psowFile) SharedMemory() vfs.SharedMemory  { return vfsutil.WrapSharedMemory(f.File) }
func (f psowFile) LockState() vfs.LockLevel        { return vfsutil.WrapLockState(f.File) }
func (f psowFile) SizeHint(size int64) error       { return vfsutil.WrapSizeHint(f.File, size) }
func (f psowFile) BusyHandler(handler func() bool) { vfsutil.WrapBusyHandler(f.File, handler) }

// powerCuts runs the workload on the stack, then opens the database after
// a power cut in each write (torn in each of its blocks, earlier unsynced
// writes kept and lost), and returns what went wrong: a commit that had
// returned and is not there, a commit there in part, damage, a database
// that does not open. It stops at the first failure when first is set.
func powerCuts(t *testing.T, stack string, first bool) (cuts int, failures []string) {
	disk := &powerDisk{}
	name := "powercut-" + stack + "-" + strings.ReplaceAll(t.Name(), "/", "-")
	vfs.Register(name, powerStacks[stack](diskVFS{VFS: vfs.Find(""), disk: disk}))
	t.Cleanup(func() { vfs.Unregister(name) })

	path := filepath.Join(t.TempDir(), "mail.db")
	db, err := open("file:"+escapePath(path)+"?vfs="+name+"&hexkey="+hex.EncodeToString(key1[:])+
		"&_pragma=temp_store(memory)&"+walParams, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	// A read connection as the mail store's, at the build's default
	// synchronous (NORMAL), for the copy beside the writer.
	rdb, err := open("file:"+escapePath(path)+"?vfs="+name+"&hexkey="+hex.EncodeToString(key1[:])+
		"&_pragma=temp_store(memory)&_pragma=busy_timeout(10000)&_pragma=query_only(1)", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	rdb.SetMaxOpenConns(1)
	powerWorkload(t, db, rdb, disk)
	// What the disk holds after the last commit is the record up to it:
	// closing the database (its checkpoint, the WAL removed) is no part
	// of it.
	disk.mu.Lock()
	events := len(disk.events)
	disk.mu.Unlock()
	if err := errors.Join(rdb.Close(), db.Close()); err != nil {
		t.Fatal(err)
	}
	disk.events = disk.events[:events]

	scratch := t.TempDir()
	for at, e := range disk.events {
		if first && len(failures) > 0 {
			break
		}
		if e.op != opWrite {
			continue
		}
		committed, next := disk.promised(at)
		for torn := range (len(e.data) + blockSize - 1) / blockSize {
			for _, keep := range []bool{true, false} {
				if !keep && !disk.pending(at) {
					continue
				}
				c := crash{at: at, torn: torn, keep: keep}
				dir, err := os.MkdirTemp(scratch, "cut")
				if err != nil {
					t.Fatal(err)
				}
				if err := disk.image(dir, c); err != nil {
					t.Fatal(err)
				}
				cuts++
				n, err := rowsAfterCut(filepath.Join(dir, "mail.db"))
				switch {
				case err != nil:
					failures = append(failures, fmt.Sprintf("%v (%s at %d): %v", c, e.file, e.off, err))
				case n != committed && n != next:
					failures = append(failures, fmt.Sprintf("%v (%s at %d): %d rows, want %d (committed) or %d (the commit under way)",
						c, e.file, e.off, n, committed, next))
				}
				os.RemoveAll(dir)
			}
		}
	}
	return cuts, failures
}

// TestPowerCutKeepsCommits: a power cut in any write of the device's
// database (its WAL's frames, the padding after a commit, the WAL started
// over, a checkpoint's pages) loses no commit that had returned, and
// leaves the one under way whole or absent. SQLite pads each commit's
// frames to the next sector boundary when the VFS does not claim
// powersafe overwrite (and the adiantum VFS never does: its sector is its
// 4 KiB block), so the next commit never writes a block that holds the
// synced frames of one before it, though frames and blocks do not line up.
func TestPowerCutKeepsCommits(t *testing.T) {
	cuts, failures := powerCuts(t, "device", false)
	t.Logf("%d power cuts tried", cuts)
	for _, f := range failures {
		t.Error(f)
	}
}

// TestPowerCutFindsLoss: the same cuts, where the VFS claims powersafe
// overwrite and SQLite so does not pad commits, lose commits that had
// returned: a commit's first write rewrites the block that ends the one
// before it, and torn, takes it with it. (The check of the test above.)
func TestPowerCutFindsLoss(t *testing.T) {
	cuts, failures := powerCuts(t, "psow", true)
	if len(failures) == 0 {
		t.Fatalf("none of %d power cuts lost a commit without the padding", cuts)
	}
	t.Logf("power cut %d of those tried: %s", cuts, failures[0])
}

// TestFirstBlockDamagedWALIntact: a first block that decrypts to garbage
// while the WAL's header vouches for the key, but not a power cut's (the
// WAL does not hold page 1: damage): the database opens, its first
// statement fails as damaged (ErrDamaged, for the hint to move it aside),
// and the commit the WAL held is not lost: SQLite copies it into the file
// when the connection closes, and with the block mended both rows are
// there.
func TestFirstBlockDamagedWALIntact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mail.db")
	w := openOneConn(t, path, true)
	mustExec(t, w, "INSERT INTO t VALUES (0, ?)", row(0))
	mustExec(t, w, "PRAGMA wal_checkpoint(TRUNCATE)")
	mustExec(t, w, "INSERT INTO t VALUES (1, ?)", row(1)) // page 1 unchanged
	crashed := filepath.Join(t.TempDir(), "mail.db")
	copyFile(t, path, crashed)
	copyFile(t, path+"-wal", crashed+"-wal")
	flip := func() {
		t.Helper()
		b, err := os.ReadFile(crashed)
		if err != nil {
			t.Fatal(err)
		}
		for i := sectorSize; i < blockSize; i++ {
			b[i] ^= 0x55
		}
		if err := os.WriteFile(crashed, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	flip()
	db, err := Open(crashed, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatalf("opening with the WAL's header vouching for the key: %v", err)
	}
	err = Explain(crashed, db.QueryRow("SELECT count(*) FROM t").Scan(new(int)))
	if !errors.Is(err, ErrDamaged) {
		t.Errorf("reading a database whose page 1 is garbage: %v, want ErrDamaged", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	flip()
	mended, err := Open(crashed, Options{Key: &key1, Params: walParams})
	if err != nil {
		t.Fatal(err)
	}
	defer mended.Close()
	checkRows(t, mended, 2)
	integrity(t, mended)
}
