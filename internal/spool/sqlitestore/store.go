// Package sqlitestore is the embedded spool.Store: every user's log in one
// SQLite database file, dir/spool.db, shared safely by several processes.
//
// Implementation notes and invariants (docs/STORE.md has the full story):
//
//   - Layout: dir (0700) holds spool.db (0600) with its -wal and -shm files,
//     notify/ with one unix datagram socket per open Store, and
//     spool-key.lock (HoldLockName). The schema is
//     versioned with PRAGMA user_version and migrated at Open inside one
//     IMMEDIATE transaction; a database from a newer version is refused.
//   - Durability: WAL journal with synchronous=FULL, so every COMMIT fsyncs
//     the WAL before it returns, and Append returns only after its COMMIT.
//   - Positions: users.head is the last position ever assigned to a user. An
//     append reads and advances it inside a BEGIN IMMEDIATE transaction, which
//     holds the database's single write lock, so positions are unique, dense
//     and ordered across goroutines and processes. A trigger refuses any
//     update that would lower head, so compaction (deleting entries rows)
//     leaves holes and never lets a position be reused.
//   - Group commit: one writer goroutine per Store owns the only write
//     connection. It takes every Append waiting at the time, up to
//     Options.MaxGroupCount calls and Options.MaxGroupBytes bytes, and commits
//     them in one transaction (one fsync); each call has its own savepoint, so
//     a failing call does not fail the others.
//   - Spool key (spool.KeyKeeper): once KeepSpoolKey has bound the Store to
//     a key, every append group reads spool_key in its IMMEDIATE
//     transaction, under the write lock KeepSpoolKey's transaction also
//     takes, and writes nothing if it holds another key (a
//     *spool.KeyReplacedError for every call of the group).
//   - Spool key held (spool.KeyHolder): HoldSpoolKey keeps a shared
//     flock(2) on dir/spool-key.lock (HoldLockName) until Close; recording
//     another key takes it exclusively with LOCK_NB, in the IMMEDIATE
//     transaction that reads the key, and is refused (*spool.LiveKeyError)
//     while any open file holds it. The operating system drops a flock
//     with its process.
//   - Appends made once (spool.OnceAppender): AppendOnce's call inserts
//     its request's record into the once table in the group's transaction,
//     under its savepoint, ON CONFLICT DO NOTHING; finding one instead, it
//     rolls its savepoint back and answers with the recorded position. The
//     write lock orders the copies of a request across processes. A group
//     with such calls first drops spool.OncePrune expired records for each.
//   - Wake-up: in-process appends wake the waiters of exactly the users they
//     touched. After each commit the writer also sends one datagram naming the
//     users to every other socket in notify/ (best effort, never blocking);
//     a socket nobody listens on any more is removed. A slow fallback check
//     (PRAGMA data_version on the write connection every
//     Options.FallbackInterval, only while someone waits) catches lost
//     datagrams, so a lost one only delays a wake-up; it re-reads heads only
//     after another process committed, never for this process's own appends.
//     Waiters trust only the database: a datagram makes them re-read heads.
//   - Read takes one read transaction (a consistent WAL snapshot), first
//     choosing positions from the small (pos, size) columns, then loading only
//     the chosen entries' data.
//   - Compaction (spool.Compactor) runs on the writer goroutine between two
//     append groups, in its own IMMEDIATE transaction: the checkpoint row and
//     the deletions commit together or not at all, and appends keep their
//     group-commit guarantees. users.head is never touched by compaction.
//   - Chain (spool.Chainer): the append transaction computes the chain hash
//     of every entry from the hash kept on the user's row (users.chain, the
//     hash at the head) and stores it in the chain table, which nothing
//     updates or deletes from (triggers); compaction deletes entries only,
//     so the hash of every position up to the head stays answerable.
//   - Space: a database created by this version has auto_vacuum=INCREMENTAL
//     (set before its first page is written), and after a compaction the
//     free pages are handed back to the file system in bounded steps, each
//     its own job on the writer. A database created before that keeps
//     auto_vacuum=NONE: its free pages are reused by later appends but the
//     file does not shrink until an offline VACUUM (docs/STORE.md).
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/spool"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

var (
	_ spool.Store                = (*Store)(nil)
	_ spool.Compactor            = (*Store)(nil)
	_ spool.CheckpointPositioner = (*Store)(nil)
	_ spool.Chainer              = (*Store)(nil)
	_ spool.HeadAppender         = (*Store)(nil)
	_ spool.KeyHolder            = (*Store)(nil)
	_ spool.KeyReplacer          = (*Store)(nil)
	_ spool.OnceAppender         = (*Store)(nil)
)

// DBName is the database file's name inside the spool directory.
const DBName = "spool.db"

// Options configures a Store. The zero value gives the documented defaults.
type Options struct {
	// MaxGroupCount is the most Append calls committed in one transaction.
	// Zero means 256.
	MaxGroupCount int
	// MaxGroupBytes is the most entry bytes committed in one transaction; a
	// single Append larger than this is committed alone. Zero means 64 MiB.
	MaxGroupBytes int64
	// MaxGroupLinger is the longest a group waits for the callers in
	// flight to come back before it commits (spool.Grouper), and never
	// more than half the last commit's duration. Zero means 2 ms; negative
	// turns the wait off.
	MaxGroupLinger time.Duration
	// MaxAppendBytes is the largest batch one Append accepts; larger ones
	// fail with spool.ErrTooLarge. Zero means 512 MiB (SQLite itself refuses
	// a single entry over 1e9 bytes).
	MaxAppendBytes int64
	// BusyTimeout is how long a transaction waits for another process's
	// write lock before the call fails with spool.ErrUnavailable.
	// Zero means 10 s.
	BusyTimeout time.Duration
	// FallbackInterval is the period of the slow check for appends by other
	// processes whose datagram was lost. Zero means 1 s.
	FallbackInterval time.Duration
	// ReadConns is the most concurrent read connections. Zero means 4.
	ReadConns int
	// DisableNotify turns off the datagram wake-up: appends by other
	// processes are then noticed by the fallback check alone. For file
	// systems without unix sockets, and for tests.
	DisableNotify bool
	// Logger receives operational messages (never entry contents). Nil
	// discards them.
	Logger *slog.Logger
}

// fill gives the fields left zero their documented defaults.
func (o *Options) fill() {
	if o.MaxGroupCount <= 0 {
		o.MaxGroupCount = 256
	}
	if o.MaxGroupBytes <= 0 {
		o.MaxGroupBytes = 64 << 20
	}
	if o.MaxGroupLinger == 0 {
		o.MaxGroupLinger = 2 * time.Millisecond
	}
	if o.MaxAppendBytes <= 0 {
		o.MaxAppendBytes = 512 << 20
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 10 * time.Second
	}
	if o.FallbackInterval <= 0 {
		o.FallbackInterval = time.Second
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Store is a spool.Store in one SQLite database. Open it with Open.
type Store struct {
	dir    string
	opts   Options
	log    *slog.Logger
	opened time.Time // when Open made it, with the monotonic clock's reading

	wdb    *sql.DB // one connection, used only by the writer goroutine
	rdb    *sql.DB // read connections
	stmts  readStmts
	wstmts *writeStmts // the append group's, on wdb

	reqs    chan *appendReq
	jobs    chan *writeJob  // compactions and space reclamation
	asides  chan *asideCall // the waits' reads of the head (wait.go)
	quit    chan struct{}   // closed by Close
	closed  atomic.Bool
	bg      sync.WaitGroup // writer, notify listener, fallback poller and aside readers
	closeMu sync.Mutex

	waiters *waiters
	notify  *notifier // nil when datagram wake-up is off

	stats counters

	// spoolKey is the key KeepSpoolKey bound the appends to (nil: none).
	spoolKey atomic.Pointer[[]byte]
	// keyLock is HoldLockName, locked shared, while the Store holds its
	// spool key (HoldSpoolKey); nil: no hold. Closed by Close.
	keyLock *keyLock
}

// Stats counts a Store's work since Open.
type Stats struct {
	Appends int64 // successful Append calls
	Entries int64 // entries appended
	Commits int64 // write transactions committed (one fsync each)
	// HeadChecks counts the heads of waited users read again because
	// another process may have appended (a datagram, or the fallback
	// check seeing another connection's commit).
	HeadChecks int64
}

type counters struct {
	appends, entries, commits, headChecks atomic.Int64
}

// Stats returns the counters of s.
func (s *Store) Stats() Stats {
	return Stats{
		Appends: s.stats.appends.Load(),
		Entries: s.stats.entries.Load(),
		Commits: s.stats.commits.Load(),

		HeadChecks: s.stats.headChecks.Load(),
	}
}

// Dir returns the spool directory s was opened on.
func (s *Store) Dir() string { return s.dir }

// Open opens the spool in dir, creating the directory (0700) and the
// database (0600) if needed and migrating its schema to the current version.
func Open(dir string, opts Options) (*Store, error) {
	opts.fill()
	if dir == "" {
		return nil, errors.New("opening spool: empty directory name")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	path := filepath.Join(dir, DBName)
	created, err := createFile(path)
	if err != nil {
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	s := &Store{
		opened:  time.Now(),
		dir:     dir,
		opts:    opts,
		log:     opts.Logger,
		reqs:    make(chan *appendReq),
		jobs:    make(chan *writeJob),
		asides:  make(chan *asideCall),
		quit:    make(chan struct{}),
		waiters: newWaiters(),
	}
	if err := s.openDBs(path); err != nil {
		return nil, err
	}
	if err := s.migrate(context.Background()); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("opening spool %s: %w", path, err)
	}
	if err := s.prepare(context.Background()); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("opening spool %s: %w", path, err)
	}
	if s.wstmts, err = prepareWrite(context.Background(), s.wdb); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("opening spool %s: %w", path, err)
	}
	if created {
		// The new file's directory entry must survive a crash too.
		if err := syncDir(dir); err != nil {
			s.closeDBs()
			return nil, fmt.Errorf("opening spool: %w", err)
		}
	}
	if !opts.DisableNotify {
		n, err := listen(filepath.Join(dir, "notify"), s.log)
		if err != nil {
			s.log.Warn("spool: cross-process wake-up off, falling back to periodic checks", "dir", dir, "err", err)
		} else {
			s.notify = n
		}
	}
	s.bg.Add(2 + opts.ReadConns)
	go s.writer()
	go s.fallback()
	for range opts.ReadConns {
		go s.asideReader()
	}
	if s.notify != nil {
		s.bg.Add(1)
		go s.listenLoop()
	}
	return s, nil
}

// createFile creates path with mode 0600 unless it exists.
func createFile(path string) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

func (s *Store) openDBs(path string) error {
	busy := s.opts.BusyTimeout.Milliseconds()
	base := "file:" + path + fmt.Sprintf("?_pragma=busy_timeout(%d)", busy)
	// auto_vacuum must come before journal_mode: switching a new, empty file
	// to WAL writes its first page, after which auto_vacuum is fixed. On an
	// existing database it changes nothing (see the package notes).
	w, err := sql.Open("sqlite", base+
		"&_pragma=auto_vacuum(INCREMENTAL)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(ON)"+
		"&_pragma=journal_size_limit(67108864)&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("opening spool %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return fmt.Errorf("opening spool %s: %w", path, classify(err))
	}
	r, err := sql.Open("sqlite", base+"&_pragma=foreign_keys(ON)&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return fmt.Errorf("opening spool %s: %w", path, err)
	}
	r.SetMaxOpenConns(s.opts.ReadConns)
	r.SetMaxIdleConns(s.opts.ReadConns)
	s.wdb, s.rdb = w, r
	return nil
}

func (s *Store) closeDBs() error {
	var werr error
	if s.wstmts != nil {
		werr = s.wstmts.close()
	}
	return errors.Join(s.stmts.close(), werr, s.rdb.Close(), s.wdb.Close())
}

// Close stops the writer after the group it is committing, wakes every Wait
// with spool.ErrClosed, removes this Store's notify socket and closes the
// database. A second Close returns nil.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed.Swap(true) {
		return nil
	}
	close(s.quit)
	if s.notify != nil {
		s.notify.stop()
	}
	s.bg.Wait()
	if s.notify != nil {
		s.notify.cleanup()
	}
	if s.keyLock != nil {
		// After the writer: the groups it wrote committed while held.
		s.keyLock.close()
	}
	if err := s.closeDBs(); err != nil {
		return fmt.Errorf("closing spool %s: %w", s.dir, err)
	}
	return nil
}

// check returns spool.ErrClosed once Close has begun.
func (s *Store) check() error {
	if s.closed.Load() {
		return spool.ErrClosed
	}
	return nil
}

// dbErr turns a database error into the package's error vocabulary.
func (s *Store) dbErr(op string, err error) error {
	if s.closed.Load() {
		return spool.ErrClosed
	}
	return fmt.Errorf("%s: %w", op, classify(err))
}
