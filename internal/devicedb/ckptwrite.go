package devicedb

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// The checkpoint's writes.
//
// A checkpoint copies each page of the frames it backfills into the
// database with a write of its own (sqlite.org/src/file/src/wal.c,
// walCheckpoint), and through the adiantum VFS that is one pwrite of 4
// KiB a page: in a first sync, where the copy beside the writer appends
// the new pages in page order, about 9,000 calls for 3,000 messages of 10
// KB, 6% of the daemon's CPU in this VM. So while a checkpoint copies
// (between CheckpointStart and CheckpointDone), the whole pages it writes
// in the part of the file it had room made for gather, encrypted as the
// adiantum VFS encrypts each block (with the file's key, the block's
// offset as the tweak), and reach the file below that VFS in one call for
// up to ckptWriteMax bytes of consecutive pages. The blocks are those the
// adiantum VFS would write, byte for byte.
//
// Other connections do not read these pages from the database file until
// SQLite publishes the checkpoint (nBackfill in the WAL index): until then
// they read them from the WAL. The gathered pages are written out before
// anything else is done with the file (a read, its size, a truncation, a
// sync, another write), at ckptWriteMax, and at CheckpointDone, after the
// last page. A write-out that fails before CheckpointDone fails the write
// that led to it, and SQLite abandons the checkpoint, as for a failed
// write of one page. SQLite ignores what CheckpointDone returns, though,
// and right after it publishes the copy, with no other call on the
// database file when the copy was partial (readers hold later frames
// back). So only pages SQLite cannot fail to write on a sound disk
// gather: those past the file's former end, in the room that
// SQLITE_FCNTL_SIZE_HINT made when fallocate(2) reserved it (mainFile's
// SizeHint does that itself, to know it did: the VFS falls back to a
// sparse extension where the file system has no fallocate). A full disk
// thus fails the size hint, nothing gathers, and the checkpoint fails
// page by page and is tried again later, as before. Pages written over
// (and everything on a file system without fallocate) go one at a time,
// as before. A write-out at CheckpointDone that fails all the same (an
// I/O error of the disk) is lostWrite's: the process stops before SQLite
// publishes the copy, and the WAL, which is not cut, keeps every frame;
// the next start copies them again.

// ckptWriteMax is the most a checkpoint's gathered pages hold before they
// are written out.
const ckptWriteMax = 256 << 10

// ckptWrites is the checkpoint's gathered pages.
type ckptWrites struct {
	// reservedFrom and reservedTo bound the room fallocate reserved at
	// the checkpoint's size hint (none: equal).
	reservedFrom, reservedTo int64
	buf                      []byte // encrypted pages to write at off
	off                      int64
}

// lostWrite is called when the gathered pages cannot be written out at
// CheckpointDone: it must not return while SQLite could publish the copy.
var lostWrite = func(path string, err error) {
	fmt.Fprintf(os.Stderr, "cspool: writing pages into the database %s at the end of a checkpoint failed: %v\n"+
		"cspool: stopping before the copy is taken as done; the WAL keeps every page, and the next start copies them again\n", path, err)
	os.Exit(74) // EX_IOERR
}

// gather takes p, whole pages at off, when the checkpoint may gather them:
// false to write them at once.
func (m *mainFile) gather(p []byte, off int64) (bool, error) {
	c := m.ckpt
	if c == nil || m.cipher == nil || len(p) == 0 || len(p)%blockSize != 0 || off%blockSize != 0 ||
		off < c.reservedFrom || off+int64(len(p)) > c.reservedTo {
		return false, nil
	}
	if len(c.buf) > 0 && off != c.off+int64(len(c.buf)) {
		if err := m.writeGathered(); err != nil {
			return true, err
		}
	}
	if len(c.buf) == 0 {
		c.off = off
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, ckptWriteMax)
	}
	n := len(c.buf)
	c.buf = append(c.buf, p...)
	encryptBlocks(m.cipher, c.buf[n:], off)
	if len(c.buf) >= ckptWriteMax {
		return true, m.writeGathered()
	}
	return true, nil
}

// writeGathered writes the gathered pages out, in one call.
func (m *mainFile) writeGathered() error {
	c := m.ckpt
	if c == nil || len(c.buf) == 0 {
		return nil
	}
	_, err := m.raw.WriteAt(c.buf, c.off)
	c.buf = c.buf[:0]
	return err
}

// reserve makes room for the database to grow to size, as the VFS's size
// hint does, and records it when fallocate reserved it.
func (m *mainFile) reserve(size int64) error {
	c := m.ckpt
	size = (size + blockSize - 1) &^ (blockSize - 1)
	sc, ok := m.raw.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if c == nil || m.cipher == nil || !ok {
		return errNoReserve
	}
	end, err := m.raw.Size()
	if err != nil {
		return err
	}
	if end >= size {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return errNoReserve
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), 0, end, size-end)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return errNoReserve
	}
	switch {
	case ferr == nil:
		c.reservedFrom, c.reservedTo = end, size
		return nil
	case errors.Is(ferr, unix.EOPNOTSUPP):
		return errNoReserve
	}
	return ferr
}

// errNoReserve: reserve could not tell whether room was made; the VFS's
// size hint is used.
var errNoReserve = errors.New("no reservation")
