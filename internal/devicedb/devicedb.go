// Package devicedb opens the SQLite databases a device keeps (the mail
// store and the outbox), encrypted at rest.
//
// Implementation notes (docs/SECURITY.md §9 is the threat model):
//
//   - Driver: github.com/ncruces/go-sqlite3 (SQLite compiled to Go through
//     Wasm, no cgo) with its "adiantum" VFS: every page of the database,
//     its WAL and its rollback journals is encrypted in 4 KiB blocks with
//     Adiantum (XChaCha12, AES-256, NH and Poly1305; a wide-block,
//     length-preserving cipher tweaked with the block's offset). Temporary
//     files are kept in memory (temp_store = memory), so none reach the
//     disk. The -shm file (the WAL index: page and frame numbers, salts,
//     checksums) is not encrypted and holds no content. Databases are
//     opened through "cspool-adiantum": that VFS with a buffer in front of
//     each WAL, which hands the cipher whole blocks (walbuf.go).
//   - Key: 32 bytes derived from the user's secret key (keys.SecretKey.
//     DatabaseKey), one per database kind, never stored. Adiantum
//     authenticates nothing, so a wrong key would read garbage, and SQLite,
//     seeing a WAL header that does not check out, would delete the WAL
//     with whatever it held: Open decrypts the file's first block (or the
//     WAL's header, for a database whose first page is still in the WAL)
//     itself before SQLite sees the file, and refuses a key that does not
//     give the SQLite header (ErrWrongKey). Nothing is written then. A
//     first block that a power cut tore (page 1 being copied back by a
//     checkpoint) decrypts to garbage too; the header of the WAL (or of
//     the rollback journal) that still holds the page then vouches for
//     the key, and SQLite reads the page from it.
//   - Power cuts: the cipher's blocks do not line up with the WAL's
//     frames (24 bytes and a page each), but a commit never shares a
//     block with the next one. The adiantum VFS claims no powersafe
//     overwrite and a sector of 4 KiB, so SQLite (synchronous = FULL)
//     pads each commit's frames with copies of its last frame up to the
//     next 4 KiB boundary, syncs there, and the next commit starts past
//     it: a torn write of that commit can garble only the padding, after
//     the last valid commit frame (docs/MAILSTORE.md, "File and
//     durability").
//   - Migration: a plaintext database (an earlier cspool's) is encrypted in
//     place when opened with a key: its WAL is checkpointed into it, VACUUM
//     INTO writes an encrypted copy beside it (PATH.encrypting), the copy is
//     synced, checked (quick_check, the same application id) and renamed
//     over the original, and the directory synced. A crash at any point
//     leaves either the complete plaintext database (the next open starts
//     again, discarding a partial copy) or the complete encrypted one.
package devicedb

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/ext/fts5"
	"lukechampine.com/adiantum"
)

// Key is a database's 32-byte Adiantum key.
type Key [32]byte

// Errors of Open; they are wrapped with the file name.
var (
	// ErrWrongKey: the file is encrypted with another key (another
	// user's secret key, or not a cspool database at all).
	ErrWrongKey = errors.New("the database is encrypted with another key (or is not a cspool database)")
	// ErrEncrypted: the file is encrypted and no key was given.
	ErrEncrypted = errors.New("the database is encrypted and needs the user's secret key")
	// ErrForeign: the file is a plaintext SQLite database of another
	// program (Options.AppID), left as it is.
	ErrForeign = errors.New("the file is another program's SQLite database")
)

// blockSize is the adiantum VFS's block: one 4 KiB page.
const blockSize = 4096

// sqliteHeader starts every SQLite database file (page 1).
var sqliteHeader = []byte("SQLite format 3\x00")

// State is what a file holds, as far as Open can tell without SQLite.
type State int

const (
	// Missing: no file, or an empty one with no WAL.
	Missing State = iota
	// Plaintext: an SQLite database that is not encrypted.
	Plaintext
	// Encrypted: encrypted with the key given (or, without a key, with
	// some key).
	Encrypted
)

// Inspect tells what the file at path holds; with a key it also checks
// that the key opens it (ErrWrongKey).
func Inspect(path string, key *Key) (State, error) {
	first, err := readBlock(path)
	if err != nil {
		return Missing, err
	}
	if len(first) == 0 {
		// A database whose first transaction is still in the WAL: check
		// the WAL's header (magic 0x377f0682 or 0x377f0683) instead.
		wal, err := readBlock(path + "-wal")
		if err != nil || len(wal) == 0 {
			return Missing, err
		}
		if isWALHeader(wal) {
			return Plaintext, nil
		}
		if key == nil {
			return Encrypted, nil
		}
		if len(wal) == blockSize && isWALHeader(decryptBlock(key, wal)) {
			return Encrypted, nil
		}
		return Encrypted, ErrWrongKey
	}
	if bytes.HasPrefix(first, sqliteHeader) {
		return Plaintext, nil
	}
	if key == nil {
		return Encrypted, nil
	}
	if len(first) == blockSize && bytes.HasPrefix(decryptBlock(key, first), sqliteHeader) {
		return Encrypted, nil
	}
	// A power cut in a write of page 1 can leave the first block half new
	// and half old, which decrypts to garbage: a checkpoint copies the
	// page back at almost every run (it holds the database's size), and
	// a new database writes it first under a rollback journal. The WAL,
	// or the journal, then still holds the page, and its header, written
	// and synced before, says whether the key is right; SQLite reads the
	// page from it.
	for _, j := range []struct {
		suffix string
		header func([]byte) bool
	}{{"-wal", isWALHeader}, {"-journal", isJournalHeader}} {
		b, err := readBlock(path + j.suffix)
		if err != nil {
			return Encrypted, err
		}
		if len(b) == blockSize && j.header(decryptBlock(key, b)) {
			return Encrypted, nil
		}
	}
	return Encrypted, ErrWrongKey
}

// journalMagic starts a rollback journal's header (sqlite.org/fileformat2.html §3).
var journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}

func isJournalHeader(b []byte) bool { return bytes.HasPrefix(b, journalMagic) }

func isWALHeader(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	m := binary.BigEndian.Uint32(b)
	return m == 0x377f0682 || m == 0x377f0683
}

// decryptBlock decrypts the first block of a file as the adiantum VFS
// does (tweak: the block's offset, 0, as 8 little-endian bytes).
func decryptBlock(key *Key, block []byte) []byte {
	var tweak [8]byte
	b := append([]byte(nil), block...)
	return adiantum.New(key[:]).Decrypt(b, tweak[:])
}

// readBlock reads up to blockSize bytes from the start of a file; a
// missing file reads as empty.
func readBlock(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, blockSize)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}

// Options say how Open opens a database.
type Options struct {
	// Key encrypts the database; nil opens it in plaintext (tests and
	// tools that have no key). With a key, a plaintext file is migrated.
	Key *Key
	// Params are further URI parameters (_pragma=..., _txlock=..., mode=...),
	// joined with '&'.
	Params string
	// NoMigrate leaves a plaintext file as it is and opens it in plaintext
	// even with a key (readers that do not hold the database's lock).
	NoMigrate bool
	// AppID, when not 0, is the application id (PRAGMA application_id)
	// of the caller's databases: a plaintext file with another one, or
	// with none and tables in it, is another program's and is refused
	// (ErrForeign), never encrypted in place. A path mistyped onto such
	// a file (the spool server's own database) encrypted it with the
	// user's key before the caller could see whose it was.
	AppID int64
}

// Open prepares the file at path (created if missing, mode 0600; a
// plaintext one migrated when a key is given) and returns a database
// handle on it. Every connection has FTS5 and keeps temporary data in
// memory. SQLite running out of memory fails the statement with
// sqlite3.NOMEM and closes the connection, where the driver would panic
// (panics.go).
func Open(path string, o Options) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("empty file name")
	}
	state, err := Inspect(path, o.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	key := o.Key
	switch {
	case state == Encrypted && key == nil:
		return nil, fmt.Errorf("%s: %w", path, ErrEncrypted)
	case state == Plaintext && key != nil && o.NoMigrate:
		key = nil
	case state == Plaintext && o.AppID != 0 && Foreign(path, o.AppID):
		return nil, fmt.Errorf("%s: %w", path, ErrForeign)
	case state == Plaintext && key != nil:
		if err := Migrate(path, *key); err != nil {
			return nil, fmt.Errorf("encrypting %s in place: %w", path, err)
		}
	case state == Missing:
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
	}
	if state != Missing && !o.NoMigrate {
		tighten(path)
	}
	db, err := open(DSN(path, key, o.Params), fts5.Register)
	if err != nil {
		// The data source name holds the key: never show it.
		return nil, fmt.Errorf("%s: cannot be opened as an SQLite file name", path)
	}
	return db, nil
}

// tighten makes the database's files open to their owner only, as Open
// makes a new one: a file created or restored by hand (touch, a plain cp of
// a backup) kept mode 0644, readable by every user of the machine; the
// content is encrypted, but its size and times are not, and a plaintext
// one is not yet. The WAL and shared-memory files take the database's
// mode when SQLite creates them. A file this process does not own, or a
// change refused, is left as it is.
func tighten(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o077 != 0 {
			os.Chmod(p, info.Mode().Perm()&0o700)
		}
	}
}

// Foreign reports whether the plaintext database at path is another
// program's: its application id is neither appID nor 0, or it is 0 and
// the file holds tables. A file that cannot be read so is not judged
// here (false): opening it tells what is wrong.
//
// It leaves nothing beside the file. The application id is read from
// the header (offset 68), and the tables from the file alone, opened
// immutable: a read-only SQLite connection to a database in WAL mode
// made DB-wal and DB-shm beside it and, unable to checkpoint, left them
// (beside the spool server's spool.db, given as --db by mistake). Only
// when a WAL with content is there already (a writer has the file open,
// or stopped without a checkpoint) is the file read through it.
func Foreign(path string, appID int64) bool {
	first, err := readBlock(path)
	if err != nil || len(first) < 100 || !bytes.HasPrefix(first, sqliteHeader) {
		return foreignSQL(path, appID, "mode=ro&_pragma=busy_timeout(10000)")
	}
	if id := int64(int32(binary.BigEndian.Uint32(first[68:72]))); id != 0 {
		return id != appID
	}
	if foreignSQL(path, appID, "mode=ro&immutable=1") {
		return true
	}
	if info, err := os.Stat(path + "-wal"); err == nil && info.Size() > 0 {
		return foreignSQL(path, appID, "mode=ro&_pragma=busy_timeout(10000)")
	}
	return false
}

// foreignSQL is Foreign through an SQLite connection opened with params.
func foreignSQL(path string, appID int64, params string) bool {
	db, err := open(DSN(path, nil, params), nil)
	if err != nil {
		return false
	}
	defer db.Close()
	var id, objects int64
	if err := db.QueryRow("PRAGMA application_id").Scan(&id); err != nil {
		return false
	}
	if id == appID {
		return false
	}
	if id != 0 {
		return true
	}
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master").Scan(&objects); err != nil {
		return false
	}
	return objects > 0
}

// DSN is the driver's data source name for path: the encrypting VFS
// (the adiantum VFS with a WAL write buffer, walbuf.go) and the key first when key is not nil, then params.
func DSN(path string, key *Key, params string) string {
	q := []string{}
	if key != nil {
		q = append(q, "vfs="+vfsName, "hexkey="+hex.EncodeToString(key[:]))
	}
	q = append(q, "_pragma=temp_store(memory)")
	if params != "" {
		q = append(q, params)
	}
	return "file:" + escapePath(path) + "?" + strings.Join(q, "&")
}

// escapePath writes path for a file: URI (RFC 3986 path characters as
// SQLite decodes them).
func escapePath(path string) string {
	u := url.URL{Path: path}
	s := u.EscapedPath()
	if strings.HasPrefix(s, "//") {
		s = "/" + strings.TrimLeft(s, "/")
	}
	return s
}

// Migrate encrypts the plaintext database at path in place with key,
// crash-safely (package comment). The caller holds the database's lock:
// nothing else may have it open.
func Migrate(path string, key Key) error {
	tmp := path + ".encrypting"
	for _, p := range []string{tmp, tmp + "-journal", tmp + "-wal", tmp + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	appID, err := copyEncrypted(path, tmp, key)
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := checkCopy(tmp, key, appID); err != nil {
		os.Remove(tmp)
		return err
	}
	// The plaintext WAL is empty after the checkpoint and the index holds
	// no content; neither may pair with the encrypted file.
	for _, p := range []string{path + "-wal", path + "-shm", tmp + "-wal", tmp + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// copyEncrypted checkpoints the plaintext database at path and writes an
// encrypted copy of it to tmp; it returns the database's application id.
func copyEncrypted(path, tmp string, key Key) (int64, error) {
	db, err := open(DSN(path, nil, "_pragma=busy_timeout(10000)"), nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	ctx := context.Background()
	var busy, logFrames, done int64
	if err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil {
		return 0, fmt.Errorf("checkpointing: %w", err)
	}
	if busy != 0 {
		return 0, errors.New("checkpointing: the database is in use by another process")
	}
	var appID int64
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return 0, err
	}
	target := DSN(tmp, &key, "")
	if _, err := db.ExecContext(ctx, "VACUUM INTO "+sqlite3.Quote(target)); err != nil {
		return 0, fmt.Errorf("writing the encrypted copy: %w", err)
	}
	return appID, db.Close()
}

// checkCopy opens the encrypted copy and checks it whole.
func checkCopy(tmp string, key Key, appID int64) error {
	db, err := open(DSN(tmp, &key, "mode=ro"), nil)
	if err != nil {
		return err
	}
	defer db.Close()
	var ok string
	var id int64
	if err := db.QueryRow("PRAGMA quick_check").Scan(&ok); err != nil {
		return fmt.Errorf("checking the encrypted copy: %w", err)
	}
	if err := db.QueryRow("PRAGMA application_id").Scan(&id); err != nil {
		return fmt.Errorf("checking the encrypted copy: %w", err)
	}
	if ok != "ok" || id != appID {
		return fmt.Errorf("the encrypted copy does not check out (%q, application id %#x, want %#x)", ok, id, appID)
	}
	return db.Close()
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ErrDiskFull: a write failed, and the file system holding the database
// has (almost) no space left. The driver reports a full disk as a plain
// I/O error, so Explain looks at the file system itself.
var ErrDiskFull = errors.New("the disk holding the database is full")

// fullBelow is the free space under which a failed write counts as a full
// disk: less than a WAL commit of a few pages.
const fullBelow = 1 << 20

// ErrDamaged: SQLite found the database's file damaged ("database disk
// image is malformed": a page that does not hold what its table's tree
// says, after a failing disk or a copy taken while it was written; "file
// is not a database": a page 1 that is garbage, which Open lets SQLite
// read only when the WAL's header showed the key right).
var ErrDamaged = errors.New("the database file is damaged")

// Explain returns err, marked with ErrDamaged when SQLite found the file
// damaged, and with ErrDiskFull when it is an I/O error from SQLite and
// the file system holding path is full.
func Explain(path string, err error) error {
	if err != nil && (errors.Is(err, sqlite3.CORRUPT) || errors.Is(err, sqlite3.NOTADB)) && !errors.Is(err, ErrDamaged) {
		return fmt.Errorf("%w: %w", ErrDamaged, err)
	}
	if err == nil || errors.Is(err, ErrDiskFull) || !(errors.Is(err, sqlite3.IOERR) || errors.Is(err, sqlite3.FULL)) {
		return err
	}
	if free, ok := freeSpace(path); !ok || free >= fullBelow {
		return err
	}
	return fmt.Errorf("%w (no space left on the file system of %s): %w", ErrDiskFull, path, err)
}

// CheckRoom returns an error wrapping ErrDiskFull, naming path, when the
// file system holding the database at path has less space left than a
// write of need bytes takes, and roomFloor more: a device then refuses a
// change before sending it, instead of sending it to the log and failing
// to apply it. Nil when there is room, or when the space cannot be told.
func CheckRoom(path string, need int64) error {
	free, ok := freeSpace(path)
	if !ok || free >= uint64(max(need, 0))+roomFloor {
		return nil
	}
	return fmt.Errorf("%w (no space left on the file system of %s: %d bytes free)", ErrDiskFull, path, free)
}

// roomFloor is the space CheckRoom wants free besides a write's own
// bytes: the pages a small change's commit adds to the write-ahead log
// (a few of 4 KiB each) many times over. Under it even a flag's change may
// fail; above it, the disk is not taken for full before SQLite says so.
const roomFloor = 64 << 10

// freeSpace is the space an unprivileged user may still take on the file
// system holding path; ok is false if it cannot be told.
func freeSpace(path string) (free uint64, ok bool) {
	var st syscall.Statfs_t
	if syscall.Statfs(filepath.Dir(path), &st) != nil {
		return 0, false
	}
	return st.Bavail * uint64(st.Bsize), true
}
