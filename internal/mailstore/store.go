package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/devicedb"
)

// busyTimeoutMS is how long a statement waits for another connection's lock.
const busyTimeoutMS = 10000

// readConns is the size of the read connection pool.
const readConns = 8

// readCacheKiB bounds each read connection's page cache: the forms and
// messages pages of a mailbox of 10,000 test messages (about 1,200) fit,
// so a warm FETCH of every envelope reads none from the file again. It
// fills only as the connection reads (docs/MAILSTORE.md).
const readCacheKiB = 8192

// connIdle is how long a connection, the writer's or a reader's, stays
// open unused before it is closed. Each connection's SQLite has memory of
// its own that grows with its page cache and never shrinks while it is
// open (up to 18 MB for the writer after a sync, 8 MB and more for a
// reader after a FETCH of a large mailbox); closing it gives that memory
// back, and the next statement opens a new one with the same settings
// (docs/MAILSTORE.md).
const connIdle = 30 * time.Second

// writeCacheKiB bounds the writer's page cache.
const writeCacheKiB = 8192

// maxWriteCacheKiB bounds Options.WriteCacheKiB. A connection's SQLite
// has 256 MB of memory in all (the Wasm memory the driver compiles it to),
// and beside the cache a batch needs room for the dirty pages beyond it
// (writeSpillPages), its statements, the messages it binds and the search
// index's buffers: seed spool --device with a cache of 256 MiB ran out of
// memory in a batch (docs/MAILSTORE.md, "Apply").
const maxWriteCacheKiB = 128 << 10

// writeSpillPages is how many dirty pages a write transaction may hold in
// memory before SQLite writes some of them out to the WAL in its middle
// (PRAGMA cache_spill; by default the cache's size, 2,048 pages of 4 KiB
// here). A page written out that way and changed again is written again
// in place, and the commit then reads back every frame from the first of
// those to recompute the WAL's checksums: in a first sync past about
// 200,000 messages a batch of 500 deliveries dirties about 2,000 pages (a
// leaf of each index with random keys per message: messages.id,
// entries.id, bodies.digest), and those reads of the WAL were a fifth of
// the daemon's CPU. The dirty pages above the cache's size cost memory
// only while such a transaction runs, up to 4 MiB more.
const writeSpillPages = 3072

// Store is a device's mail state. Open it with Open. Its methods are safe for
// concurrent use; Apply calls are serialised.
type Store struct {
	path   string
	parser Parser
	// traceStmt, set by tests before any Apply, sees every statement an
	// apply on the writer runs.
	traceStmt func(query string)
	wdb       *sql.DB // one connection: Apply and migrations
	rdb       *sql.DB // read-only connections
	mu        sync.Mutex
	closed    atomic.Bool
	// commits counts the write transactions committed (Commits).
	commits atomic.Int64
	// walLimit is the WAL size that a commit bounds the WAL to (wal.go);
	// walRetry, when above it, the size at which a checkpoint that
	// readers held back is tried again. Both under mu.
	walLimit, walRetry int64
	// noAutoCheckpoint: the last apply was a bulk batch, which turned
	// the writer's automatic checkpoint off (wal.go). Under mu.
	noAutoCheckpoint bool
	// checkpointPending: an apply after a catch-up committed with the
	// automatic checkpoint still off; the checkpoint that follows it
	// turns it on again (wal.go, "After the apply"). Under mu.
	checkpointPending bool
	// passive is the checkpoint beside the writer, running or ended and
	// not yet looked at; nil: none (wal.go). Under mu.
	passive *passiveCopy
	// copiedFrom is the WAL's size when the last copy beside the writer
	// started, 0 after the WAL was cut (wal.go). Under mu.
	copiedFrom int64
	// settleHook, set by tests before any Apply, runs before a
	// checkpoint that follows an apply.
	settleHook func()
	// prepared holds the statements appliers run on the writer, prepared
	// once on wdb (query → *sql.Stmt); see applier.stmt.
	prepared sync.Map
	// writeCache is the writer's page cache for applies, in KiB;
	// fixedCache, that it was given (Options.WriteCacheKiB), so that the
	// search index's transactions keep it too (writer.go).
	writeCache int
	fixedCache bool
	// indexCache: the writer's connection has indexCacheKiB for the
	// index's transactions until the next apply (writer.go). Under mu.
	indexCache bool
	// wconn is the writer's connection while a transaction of
	// writeTxFor holds it, for the bodies it reads in pieces (blob.go).
	// Under mu.
	wconn *sql.Conn
	// relocateChunk, when not zero, replaces the constant (placement.go;
	// tests).
	relocateChunk int64
	// buildHook, when set, runs after each run of messages a restore
	// writes before its last step (buildState; tests).
	buildHook func()
	// readers caches local.readers (readers.go); -1: not read yet.
	readers atomic.Int32
	// textLimits bound the index's text for one body and the pieces of
	// the texts kept instead (search.go); tests make them small.
	textLimits textLimits
	// bodyReads counts the bodies LoadRaw read within Fetch and Scan
	// callbacks (BodyReads).
	bodyReads atomic.Int64
}

// Open opens the mail store in the SQLite file at path in plaintext,
// creating it (mode 0600) with the initial mailboxes if needed and
// migrating its schema; p parses the messages it keeps (package
// mimeform). Devices open it encrypted, with OpenWith.
func Open(path string, p Parser) (*Store, error) { return OpenWith(path, Options{Parser: p}) }

// Options say how OpenWith opens the store.
type Options struct {
	// Parser parses the messages the store keeps (package mimeform). It
	// is required.
	Parser Parser
	// Key encrypts the database at rest (package devicedb); nil opens it
	// in plaintext. With a key, a plaintext database is encrypted in place
	// first: the caller must hold the database's lock.
	Key *devicedb.Key
	// NoMigrate opens a plaintext database as it is even with a key
	// (readers that do not hold the database's lock, such as export), and
	// leaves the tables of an unfinished restore, which may be a running
	// daemon's (dropLeftStage).
	NoMigrate bool
	// WriteCacheKiB, when not zero, replaces the writer's page cache of
	// writeCacheKiB: a bulk build of a large store (bench/seed's device)
	// applies and indexes batches of thousands of messages, whose pages
	// an 8 MiB cache cannot hold. It changes what the file holds in no
	// way, only how often the writer reads a page again. At most
	// maxWriteCacheKiB.
	WriteCacheKiB int
	// idle, when not zero, replaces connIdle (tests).
	idle time.Duration
}

// OpenWith opens the mail store in the SQLite file at path, as Open does,
// encrypted at rest when o.Key is set.
func OpenWith(path string, o Options) (*Store, error) {
	return OpenContext(context.Background(), path, o)
}

// OpenContext is OpenWith within ctx: the schema's migration runs in it
// (on a large store a migration can take minutes), and the writer's
// connection, opened for it, is opened with what ctx carries for the
// driver (sqlite3.WithMaxMemory).
func OpenContext(ctx context.Context, path string, o Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening mail store: empty file name")
	}
	if o.Parser == nil {
		return nil, errors.New("opening mail store: no parser")
	}
	if o.WriteCacheKiB > maxWriteCacheKiB {
		return nil, fmt.Errorf("opening mail store: a writer's cache of %d KiB leaves no room in the 256 MB a connection's SQLite has: at most %d KiB",
			o.WriteCacheKiB, maxWriteCacheKiB)
	}
	base := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(ON)", busyTimeoutMS)
	writeCache := writeCacheKiB
	if o.WriteCacheKiB > 0 {
		writeCache = o.WriteCacheKiB
	}
	w, err := devicedb.Open(path, devicedb.Options{Key: o.Key, NoMigrate: o.NoMigrate, AppID: applicationID,
		Params: base + fmt.Sprintf("&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=cache_size(-%d)"+
			"&_pragma=cache_spill(%d)&_pragma=journal_size_limit(%d)&_txlock=immediate", writeCache, writeSpillPages, walLimit)})
	if err != nil {
		return nil, fmt.Errorf("opening mail store: %w", err)
	}
	idle := connIdle
	if o.idle != 0 {
		idle = o.idle
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(idle)
	if err := migrate(ctx, w, o.Parser); err != nil {
		w.Close()
		return nil, fmt.Errorf("opening mail store %s: %w", path, err)
	}
	// A reader without the database's lock leaves a restore's tables:
	// they may be a running daemon's.
	if !o.NoMigrate {
		if err := dropLeftStage(ctx, w); err != nil {
			w.Close()
			return nil, fmt.Errorf("opening mail store %s: dropping an interrupted restore's tables: %w", path, err)
		}
	}
	r, err := devicedb.Open(path, devicedb.Options{Key: o.Key, NoMigrate: true, Params: base + fmt.Sprintf("&_pragma=query_only(1)&_pragma=cache_size(-%d)", readCacheKiB)})
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening mail store: %w", err)
	}
	r.SetMaxOpenConns(readConns)
	r.SetMaxIdleConns(readConns)
	r.SetConnMaxIdleTime(idle)
	s := &Store{path: path, parser: o.Parser, wdb: w, rdb: r, walLimit: walLimit, writeCache: writeCache, fixedCache: o.WriteCacheKiB > 0,
		textLimits: textLimits{index: maxIndexedText, piece: textPiece}}
	s.readers.Store(-1)
	return s, nil
}

// Close closes the database. A second Close returns nil.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitPassive()
	s.prepared.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	if err := errors.Join(s.rdb.Close(), s.wdb.Close()); err != nil {
		return fmt.Errorf("closing mail store %s: %w", s.path, err)
	}
	return nil
}

// Path returns the database file name.
func (s *Store) Path() string { return s.path }

// CheckRoom returns an error wrapping devicedb.ErrDiskFull, naming the
// file, when the file system holding the store has no room left for a
// write of need bytes (devicedb.CheckRoom); nil otherwise.
func (s *Store) CheckRoom(need int64) error { return devicedb.CheckRoom(s.path, need) }

func (s *Store) check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// writeTx runs fn in one write transaction, serialised with every other
// write, and commits if fn returns nil; what names the work in errors.
func (s *Store) writeTx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	return s.writeTxFor(ctx, what, false, fn)
}

// indexTx is writeTx for the search index's transactions, on a writer
// given back after a long sync and with the index's cache (writer.go).
func (s *Store) indexTx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	return s.writeTxFor(ctx, what, true, fn)
}

func (s *Store) writeTxFor(ctx context.Context, what string, index bool, fn func(*sql.Tx) error) error {
	if err := s.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if index {
		s.releaseWriter(ctx)
	}
	c, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return devicedb.Explain(s.path, fmt.Errorf("%s: %w", what, err))
	}
	defer end()
	s.wconn = c
	defer func() { s.wconn = nil }()
	if index {
		if err := s.writerForIndex(ctx, tx); err != nil {
			return devicedb.Explain(s.path, fmt.Errorf("%s: %w", what, err))
		}
	}
	if err := fn(tx); err != nil {
		return devicedb.Explain(s.path, err)
	}
	if err := tx.Commit(); err != nil {
		return devicedb.Explain(s.path, fmt.Errorf("%s: %w", what, err))
	}
	end() // boundWAL takes the writer
	s.committed(ctx)
	return nil
}

// beginWrite begins a write transaction on the writer's connection, held
// as a *sql.Conn so that the transaction can move large bodies in pieces
// through SQLite's blob handles on it (blob.go); end rolls back what was
// not committed and gives the connection back to the pool, and must run
// before anything else takes the writer (it may run more than once). s.mu
// is held.
func (s *Store) beginWrite(ctx context.Context) (c *sql.Conn, tx *sql.Tx, end func(), err error) {
	c, err = s.wdb.Conn(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	tx, err = c.BeginTx(ctx, nil)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	done := false
	return c, tx, func() {
		if !done {
			done = true
			_ = tx.Rollback()
			c.Close()
		}
	}, nil
}

// Commits returns how many write transactions (each one durable commit of
// the database: an apply, a queued change, a record of appended entries,
// a restore) this Store has committed since it was opened, for tests and
// benchmarks that count the device's writes.
func (s *Store) Commits() int64 { return s.commits.Load() }

// BodyReads returns how many message bodies LoadRaw has read within
// Fetch and Scan callbacks since the store was opened: for SEARCH, the
// messages it had to read to test BODY or TEXT itself.
func (s *Store) BodyReads() int64 { return s.bodyReads.Load() }

// Position returns the log position of the last entry applied (0 before any).
func (s *Store) Position(ctx context.Context) (uint64, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var pos int64
	if err := s.rdb.QueryRowContext(ctx, "SELECT position FROM state").Scan(&pos); err != nil {
		return 0, fmt.Errorf("reading position: %w", err)
	}
	return uint64(pos), nil
}
