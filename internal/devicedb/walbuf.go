package devicedb

import (
	"encoding/binary"
	"encoding/hex"

	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
	_ "github.com/ncruces/go-sqlite3/vfs/adiantum" // registers the "adiantum" VFS
	"lukechampine.com/adiantum"
	"lukechampine.com/adiantum/hbsh"
)

// The WAL write buffer.
//
// The adiantum VFS encrypts 4 KiB blocks, and a write that covers only part
// of a block costs a locked read, a decryption, an encryption and a locked
// write of the whole block. SQLite writes its WAL as a 24-byte frame header
// and then a page, at offsets 32 + k × (24 + page size): with 4 KiB pages
// no frame starts or ends on a block boundary, so every frame took three
// such cycles. The "cspool-adiantum" VFS is the adiantum VFS with a buffer
// in front of each WAL: the connection's consecutive WAL writes gather in
// memory and reach the cipher as whole blocks; only the first block of a
// run (which holds frames already committed, which other connections may
// be reading) and the last, partial one go through the adiantum VFS's
// locked read-modify-write. The file's format is the adiantum VFS's,
// unchanged.
//
// Buffered bytes are written out before anything that could need them:
//
//   - the end of a commit frame (its header's "database size after
//     commit" field is not zero; WAL format, sqlite.org/fileformat2.html
//     §4.1), and the end of the frame a Sync of the WAL ended inside
//     (SQLite syncs a commit at a sector boundary in the middle of a
//     padding frame, a copy of the commit frame whose header it may write
//     in two pieces, and writes the rest after the sync): committed
//     frames are on disk before SQLite publishes them in the WAL index,
//     and a failed write-out fails the commit;
//   - a Sync of the WAL (synchronous = FULL syncs at every commit), a read
//     of it, its size, a truncation, a write that does not follow the
//     buffered bytes;
//   - any use of the database's shared memory (the WAL index) by the same
//     connection: SQLite takes and releases the WAL's write lock there, so
//     a transaction that wrote frames and then rolled back leaves nothing
//     buffered once another connection may write.
//
// A crash loses only what was buffered, which SQLite had not synced and
// so had not committed: the crash guarantees are the WAL's own.
//
// A write-out from the use of the shared memory cannot return its error
// (a full disk: the frames of a transaction that spilled pages and then
// rolled back, or goes on). Its frames are lost, so every later use of
// the WAL by that connection fails with the error (walFile.err): the
// transaction cannot commit, nor read what it lost. database/sql then
// closes the connection when it is given back (conn.IsValid, panics.go)
// and the next statement opens a new one, so the writer recovers as
// soon as the disk has room, not after the connection was idle for 30 s
// (the pool's idle time-out).
//
// The adiantum VFS writes what it is given one block and one write call
// at a time. The buffer's whole blocks (all but the first and the last of
// a write-out, when they are partial) are encrypted here instead, as that
// VFS encrypts each (Adiantum with the key of the file name's hexkey, the
// block's offset as the tweak), and written to the file below it with
// one call: a first sync wrote the WAL with one pwrite of 4 KiB a block,
// a tenth of the daemon's CPU under load. The blocks are what that VFS
// would write, byte for byte; it still writes the partial ones, which it
// reads back, decrypts and rewrites under its lock, as other connections
// may be reading the frames already committed in them.

// vfsName is the VFS encrypted databases are opened with.
const vfsName = "cspool-adiantum"

// walBufferMax is how much the buffer holds before it writes its whole
// blocks out (a large transaction). The buffer stays allocated for the
// connection's life, so it is a part of the daemon's live heap (and, with
// the collector's goal at 1.5 times that, half as much again): at 1 MiB it
// grew to 1.3 MB, a sixth of the live heap of a first sync of 100,000
// messages (docs/BENCHMARKS.md, "The first sync's peak and a SEARCH's
// garbage"); 256 KiB still hands the cipher 64 whole blocks a write.
const walBufferMax = 256 << 10

func init() {
	vfs.Register(vfsName, &walBufVFS{VFS: vfs.Find("adiantum")})
}

// walBufVFS wraps the adiantum VFS.
type walBufVFS struct{ vfs.VFS }

func (v *walBufVFS) OpenFilename(name *vfs.Filename, flags vfs.OpenFlag) (vfs.File, vfs.OpenFlag, error) {
	f, flags, err := vfsutil.WrapOpenFilename(v.VFS, name, flags)
	if err != nil {
		return f, flags, err
	}
	switch {
	case flags&vfs.OPEN_MAIN_DB != 0:
		m := &mainFile{File: f, path: name.String()}
		m.cipher, m.raw = fileCipher(name, f)
		return m, flags, nil
	case flags&vfs.OPEN_WAL != 0:
		// Without its database's file (which sees the WAL index used)
		// the WAL is not buffered.
		m, ok := vfsutil.UnwrapFile[*mainFile](name.DatabaseFile())
		if !ok {
			return f, flags, nil
		}
		w := &walFile{File: f, main: m}
		w.cipher, w.raw = fileCipher(name, f)
		m.wal = w
		return w, flags, nil
	}
	return f, flags, nil
}

// fileCipher returns the adiantum VFS's cipher for the file f it opened
// as name, and the file below it; nil when it was given no hexkey.
func fileCipher(name *vfs.Filename, f vfs.File) (*hbsh.HBSH, vfs.File) {
	if key, err := hex.DecodeString(name.URIParameter("hexkey")); err == nil && len(key) == 32 {
		if u, ok := f.(interface{ Unwrap() vfs.File }); ok {
			return adiantum.New(key), u.Unwrap()
		}
	}
	return nil, nil
}

// mainFile is a database file; it writes out its connection's WAL buffer
// whenever the connection uses the WAL index, and gathers a checkpoint's
// writes (ckptwrite.go).
type mainFile struct {
	vfs.File
	wal  *walFile
	path string
	// cipher and raw, when set, are the adiantum VFS's cipher for this
	// file and the file below it, for the checkpoint's whole pages.
	cipher *hbsh.HBSH
	raw    vfs.File
	// ckpt is set while the connection copies frames into the file.
	ckpt *ckptWrites
}

func (m *mainFile) WriteAt(p []byte, off int64) (int, error) {
	switch ok, err := m.gather(p, off); {
	case err != nil:
		return 0, err
	case ok:
		return len(p), nil
	}
	if err := m.writeGathered(); err != nil {
		return 0, err
	}
	return m.File.WriteAt(p, off)
}

func (m *mainFile) ReadAt(p []byte, off int64) (int, error) {
	if err := m.writeGathered(); err != nil {
		return 0, err
	}
	return m.File.ReadAt(p, off)
}

func (m *mainFile) Size() (int64, error) {
	if err := m.writeGathered(); err != nil {
		return 0, err
	}
	return m.File.Size()
}

func (m *mainFile) Truncate(size int64) error {
	if err := m.writeGathered(); err != nil {
		return err
	}
	return m.File.Truncate(size)
}

func (m *mainFile) Sync(flags vfs.SyncFlag) error {
	if err := m.writeGathered(); err != nil {
		return err
	}
	return m.File.Sync(flags)
}

// SharedMemory is called for every operation on the WAL index (map, lock,
// unlock, barrier).
func (m *mainFile) SharedMemory() vfs.SharedMemory {
	if m.wal != nil && len(m.wal.buf) > 0 && m.wal.err == nil {
		m.wal.err = m.wal.flush()
	}
	return vfsutil.WrapSharedMemory(m.File)
}

// walFailed reports whether a write-out of the WAL buffer failed where
// it could not be reported (walFile.err): the connection must be replaced.
func (m *mainFile) walFailed() bool { return m.wal != nil && m.wal.err != nil }

func (m *mainFile) Close() error {
	if m.wal != nil {
		m.wal.main = nil
	}
	return m.File.Close()
}

// The adiantum VFS's optional methods, forwarded.

func (m *mainFile) Unwrap() vfs.File                   { return m.File }
func (m *mainFile) Pragma(n, v string) (string, error) { return vfsutil.WrapPragma(m.File, n, v) }
func (m *mainFile) LockState() vfs.LockLevel           { return vfsutil.WrapLockState(m.File) }
func (m *mainFile) PersistentWAL() bool                { return vfsutil.WrapPersistWAL(m.File) }
func (m *mainFile) SetPersistentWAL(keep bool)         { vfsutil.WrapSetPersistWAL(m.File, keep) }
func (m *mainFile) HasMoved() (bool, error)            { return vfsutil.WrapHasMoved(m.File) }
func (m *mainFile) Overwrite() error                   { return vfsutil.WrapOverwrite(m.File) }
func (m *mainFile) SyncSuper(super string) error       { return vfsutil.WrapSyncSuper(m.File, super) }
func (m *mainFile) CommitPhaseTwo() error              { return vfsutil.WrapCommitPhaseTwo(m.File) }
func (m *mainFile) BeginAtomicWrite() error            { return vfsutil.WrapBeginAtomicWrite(m.File) }
func (m *mainFile) CommitAtomicWrite() error           { return vfsutil.WrapCommitAtomicWrite(m.File) }
func (m *mainFile) RollbackAtomicWrite() error         { return vfsutil.WrapRollbackAtomicWrite(m.File) }
func (m *mainFile) BusyHandler(handler func() bool)    { vfsutil.WrapBusyHandler(m.File, handler) }
func (m *mainFile) ChunkSize(size int)                 { vfsutil.WrapChunkSize(m.File, size) }

// SizeHint makes room for the file to grow to size; in a checkpoint it
// records the room fallocate reserved (ckptwrite.go).
func (m *mainFile) SizeHint(size int64) error {
	if err := m.writeGathered(); err != nil {
		return err
	}
	if err := m.reserve(size); err != errNoReserve {
		return err
	}
	return vfsutil.WrapSizeHint(m.File, size)
}

// CheckpointStart and CheckpointDone bracket the copying of WAL frames
// into the database (SQLITE_FCNTL_CKPT_START and _DONE).
func (m *mainFile) CheckpointStart() {
	m.ckpt = &ckptWrites{}
	if m.wal != nil {
		m.wal.startCheckpoint()
	}
	vfsutil.WrapCheckpointStart(m.File)
}

func (m *mainFile) CheckpointDone() {
	if err := m.writeGathered(); err != nil {
		lostWrite(m.path, err)
	}
	m.ckpt = nil
	if m.wal != nil {
		m.wal.endCheckpoint()
	}
	vfsutil.WrapCheckpointDone(m.File)
}

// WAL format (sqlite.org/fileformat2.html §4.1).
const (
	walHeaderSize      = 32
	walFrameHeaderSize = 24
)

// walFile is a WAL with its connection's write buffer.
type walFile struct {
	vfs.File
	main *mainFile
	// buf holds the bytes written at off that the file does not have yet.
	buf []byte
	off int64
	// pageSize is the WAL's page size, from its header (0: not read yet).
	pageSize int64
	// commitEnd is the end of the commit frame being written, or of the
	// padding frame a Sync ended inside (0: none).
	commitEnd int64
	// end is the end of the last write.
	end int64
	// window is set while the connection copies frames into the
	// database (between CheckpointStart and CheckpointDone), and holds
	// the blocks it read last.
	window *ckptWindow
	// err is a failed write-out of the buffer from SharedMemory, which
	// cannot return it: every later operation on the WAL fails with it,
	// and database/sql replaces the connection (mainFile.walFailed).
	err error
	// cipher and raw, when set, are the adiantum VFS's cipher for this
	// file and the file below it, for the whole blocks (writeOut).
	cipher *hbsh.HBSH
	raw    vfs.File
}

// encryptBlocks encrypts b, whole blocks that go at off in their file, in
// place, as the adiantum VFS encrypts each: with its file's cipher, the
// block's offset as the tweak (8 bytes, little-endian).
func encryptBlocks(c *hbsh.HBSH, b []byte, off int64) {
	var tweak [8]byte
	for i := 0; i < len(b); i += blockSize {
		binary.LittleEndian.PutUint64(tweak[:], uint64(off+int64(i)))
		c.Encrypt(b[i:i+blockSize], tweak[:])
	}
}

// writeOut writes p, bytes of the buffer, at off: the partial blocks at
// either end through the adiantum VFS, the whole blocks between them
// encrypted in place, as it encrypts each, and written to the file below
// it with one call. p's bytes are not used again.
func (w *walFile) writeOut(p []byte, off int64) error {
	if w.cipher == nil {
		_, err := w.File.WriteAt(p, off)
		return err
	}
	end := off + int64(len(p))
	first := min((off+blockSize-1)&^(blockSize-1), end)
	last := max(end&^(blockSize-1), first)
	if first > off {
		if _, err := w.File.WriteAt(p[:first-off], off); err != nil {
			return err
		}
	}
	if last > first {
		whole := p[first-off : last-off]
		encryptBlocks(w.cipher, whole, first)
		if _, err := w.raw.WriteAt(whole, first); err != nil {
			return err
		}
	}
	if end > last {
		if _, err := w.File.WriteAt(p[last-off:], last); err != nil {
			return err
		}
	}
	return nil
}

func (w *walFile) WriteAt(p []byte, off int64) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(w.buf) > 0 && off != w.off+int64(len(w.buf)) {
		if err := w.flush(); err != nil {
			return 0, err
		}
	}
	if off == 0 && len(p) >= walHeaderSize {
		w.pageSize = walPageSize(p)
	}
	if len(p) == walFrameHeaderSize && off >= walHeaderSize && binary.BigEndian.Uint32(p[4:8]) != 0 {
		// A commit frame's header; the page follows.
		if w.pageSize == 0 {
			if err := w.readPageSize(); err != nil {
				return 0, err
			}
		}
		w.commitEnd = off + walFrameHeaderSize + w.pageSize
	}
	if len(w.buf) == 0 {
		w.off = off
	}
	if w.buf == nil {
		// Room for the most it holds before a write-out (walBufferMax
		// less a byte, then a frame header and a page), so that it
		// does not grow by appends beyond it.
		w.buf = make([]byte, 0, walBufferMax+2*blockSize)
	}
	w.buf = append(w.buf, p...)
	end := off + int64(len(p))
	w.end = end
	switch {
	case w.commitEnd != 0 && end >= w.commitEnd:
		w.commitEnd = 0
		if err := w.flush(); err != nil {
			return 0, err
		}
	case len(w.buf) >= walBufferMax:
		if err := w.flushBlocks(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// walPageSize reads the page size from a WAL header (65536 is stored as 1).
func walPageSize(h []byte) int64 {
	s := int64(binary.BigEndian.Uint32(h[8:12]))
	if s == 1 {
		s = 65536
	}
	return s
}

// readPageSize reads the page size from the WAL's header on disk.
func (w *walFile) readPageSize() error {
	var h [walHeaderSize]byte
	if _, err := w.File.ReadAt(h[:], 0); err != nil {
		return err
	}
	w.pageSize = walPageSize(h[:])
	return nil
}

// flush writes the whole buffer out.
func (w *walFile) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.writeOut(w.buf, w.off)
	w.buf = w.buf[:0]
	return err
}

// flushBlocks writes out the buffer up to its last block boundary and
// keeps the rest.
func (w *walFile) flushBlocks() error {
	end := (w.off + int64(len(w.buf))) &^ (blockSize - 1)
	if end <= w.off {
		return nil
	}
	n := end - w.off
	if err := w.writeOut(w.buf[:n], w.off); err != nil {
		w.buf = w.buf[:0]
		return err
	}
	w.buf = w.buf[:copy(w.buf, w.buf[n:])]
	w.off = end
	return nil
}

func (w *walFile) ReadAt(p []byte, off int64) (int, error) {
	if err := w.settle(); err != nil {
		return 0, err
	}
	if w.window != nil && w.cipher != nil {
		if n, ok := w.readCached(p, off); ok {
			return n, nil
		}
	}
	return w.File.ReadAt(p, off)
}

// The checkpoint's reads.
//
// A checkpoint reads the pages of the frames it copies, each across two
// blocks, in page order, which for the pages a transaction appended is the
// frames' order. Through the adiantum VFS every block would be read twice
// (once for each frame it holds a part of); a cache of the last two
// blocks read each once, but with a call of its own under the block's I/O
// lock: three system calls a block, about a tenth of the daemon's CPU in
// a first sync (0.30 s of 2.82 s). While the checkpoint runs,
// the frames it copies are committed and the WAL cannot start over (it
// holds the WAL index's first read lock), so their bytes on disk do not
// change, except in the block that holds the end of the committed frames,
// which the writer rewrites whole (under that block's I/O lock, exclusive)
// when it appends the next frame. So the checkpoint reads the WAL through
// a window of blocks (ckptWindow): a block it needs that the window does
// not hold is read with the blocks after it, up to walWindowMax, in one
// call, under the I/O locks of every block read (shared; the adiantum VFS
// stripes them over seven locks, so a window of seven blocks or more
// takes all seven), and the blocks are decrypted as they are first asked
// for. The window starts at two blocks (a frame's page) and doubles while
// the reads go on where it ended, so a checkpoint of scattered pages reads
// what it needs and little more; it is dropped when the checkpoint ends.

// walWindowMax is the most blocks a checkpoint's read takes at once.
const walWindowMax = 64

// ioLockStripes is how many I/O locks the adiantum VFS stripes blocks over
// (consecutive blocks, offsets 4096 apart, fall on consecutive stripes).
const ioLockStripes = 7

// ckptWindow is the blocks of the WAL a checkpoint read last.
type ckptWindow struct {
	off   int64  // the first block's offset
	n     int    // blocks held
	size  int    // blocks the next read takes when it follows this one
	buf   []byte // n blocks, encrypted until plain says otherwise
	plain [walWindowMax]bool
}

func (w *walFile) startCheckpoint() {
	w.window = &ckptWindow{size: 2}
}

func (w *walFile) endCheckpoint() {
	w.window = nil
}

// readCached reads p at off through the window; false if a block is not
// whole on disk or could not be locked (the caller reads without it).
func (w *walFile) readCached(p []byte, off int64) (int, bool) {
	n := 0
	for n < len(p) {
		at := off + int64(n)
		b, ok := w.windowBlock(at &^ (blockSize - 1))
		if !ok {
			return 0, false
		}
		n += copy(p[n:], b[at&(blockSize-1):])
	}
	return n, true
}

// windowBlock returns the plaintext of the block at off, reading the
// window again when it does not hold it.
func (w *walFile) windowBlock(off int64) ([]byte, bool) {
	win := w.window
	if off < win.off || off >= win.off+int64(win.n)*blockSize {
		if !w.readWindow(off) {
			return nil, false
		}
	}
	i := int((off - win.off) / blockSize)
	b := win.buf[i*blockSize : (i+1)*blockSize]
	if !win.plain[i] {
		var tweak [8]byte
		binary.LittleEndian.PutUint64(tweak[:], uint64(off))
		w.cipher.Decrypt(b, tweak[:])
		win.plain[i] = true
	}
	return b, true
}

// readWindow reads the window's blocks from off on, in one call under
// their I/O locks.
func (w *walFile) readWindow(off int64) bool {
	win := w.window
	size := 2
	if win.n > 0 && off == win.off+int64(win.n)*blockSize {
		size = win.size
	}
	win.size = min(size*2, walWindowMax)
	win.n = 0
	if cap(win.buf) < size*blockSize {
		win.buf = make([]byte, 0, size*blockSize)
	}
	win.buf = win.buf[:size*blockSize]
	var shm vfs.SharedMemory
	if w.main != nil {
		shm = vfsutil.WrapSharedMemory(w.main.File)
	}
	if shm != nil {
		locked := 0
		defer func() {
			for i := range locked {
				shm.IOLock(vfs.LOCK_NONE, off+int64(i)*blockSize)
			}
		}()
		for i := range min(size, ioLockStripes) {
			if err := shm.IOLock(vfs.LOCK_SHARED, off+int64(i)*blockSize); err != nil {
				return false
			}
			locked++
		}
	}
	m, _ := w.raw.ReadAt(win.buf, off)
	if m < blockSize {
		return false
	}
	win.off, win.n = off, m/blockSize
	win.buf = win.buf[:win.n*blockSize]
	clear(win.plain[:])
	return true
}

func (w *walFile) Sync(flags vfs.SyncFlag) error {
	if err := w.settle(); err != nil {
		return err
	}
	w.padding()
	return w.File.Sync(flags)
}

// padding makes the rest of a frame that the last write ended inside the
// end of a commit: SQLite syncs a commit's frames at a sector boundary
// (its "sync point") in the middle of a padding frame (a copy of the
// commit frame), writes the rest of that frame after the sync, and then
// publishes it in the WAL index with the commit, without another sync.
// Buffered, it would be written out only at the WAL index's next use,
// where a failure cannot be reported, and the frame would be published
// without being in the file.
// (A commit frame was written before, so the page size is known.)
func (w *walFile) padding() {
	if w.end <= walHeaderSize || w.pageSize == 0 {
		return
	}
	frame := walFrameHeaderSize + w.pageSize
	if k := (w.end - walHeaderSize) % frame; k != 0 {
		w.commitEnd = w.end + frame - k
	}
}

// Size is the WAL's size in whole blocks. The adiantum VFS writes and
// truncates only whole blocks, so a WAL ending inside one was cut by
// something else: a copy of a running device's folder that stopped in the
// middle of a block (docs/OPERATING.md, "Restoring a device from its own
// backup"). Its last part block cannot be decrypted, and no frame that
// reaches into it is whole; counted in, SQLite's recovery read a frame
// into it, got a short read, and every open of the database failed with
// "disk I/O error". Left out, the recovery stops at the last whole frame
// before it, as at any torn end of a WAL.
func (w *walFile) Size() (int64, error) {
	if err := w.settle(); err != nil {
		return 0, err
	}
	n, err := w.File.Size()
	if w.cipher != nil {
		n &^= blockSize - 1
	}
	return n, err
}

func (w *walFile) Truncate(size int64) error {
	if err := w.settle(); err != nil {
		return err
	}
	w.end = min(w.end, size)
	return w.File.Truncate(size)
}

// Close drops what is buffered: frames no commit covered, which nothing
// will read.
func (w *walFile) Close() error {
	w.buf = nil
	if w.main != nil {
		w.main.wal = nil
	}
	return w.File.Close()
}

// settle writes the buffer out, or returns the error that an earlier
// write-out failed with.
func (w *walFile) settle() error {
	if w.err != nil {
		return w.err
	}
	return w.flush()
}

func (w *walFile) Unwrap() vfs.File          { return w.File }
func (w *walFile) SizeHint(size int64) error { return vfsutil.WrapSizeHint(w.File, size) }
func (w *walFile) ChunkSize(size int)        { vfsutil.WrapChunkSize(w.File, size) }
