package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	_ spool.Store                = (*Store)(nil)
	_ spool.Compactor            = (*Store)(nil)
	_ spool.CheckpointPositioner = (*Store)(nil)
	_ spool.Chainer              = (*Store)(nil)
	_ spool.HeadAppender         = (*Store)(nil)
	_ spool.KeyKeeper            = (*Store)(nil)
	_ spool.KeyHolder            = (*Store)(nil)
	_ spool.KeyReplacer          = (*Store)(nil)
	_ spool.OnceAppender         = (*Store)(nil)
)

// Options configures a Store. The zero value gives the documented defaults.
type Options struct {
	// MaxConns is the size of the connection pool (the listening connection
	// comes on top). Zero means 16.
	MaxConns int32
	// StatementTimeout bounds every statement on the server
	// (statement_timeout) and every call on the client. A call that runs
	// out of time fails with spool.ErrUnavailable. Zero means 30 s.
	StatementTimeout time.Duration
	// ConnectTimeout bounds establishing one connection. Zero means 5 s.
	ConnectTimeout time.Duration
	// MaxAppendBytes is the largest batch one Append accepts; larger ones
	// fail with spool.ErrTooLarge. Zero means 256 MiB (PostgreSQL refuses a
	// single value over 1 GB).
	MaxAppendBytes int64
	// MaxGroupCount is the most Append calls committed in one transaction
	// (group commit). Zero means 64.
	MaxGroupCount int
	// MaxGroupBytes is the most entry bytes committed in one transaction; a
	// single larger call goes alone. Zero means 64 MiB.
	MaxGroupBytes int64
	// MaxGroupLinger is the longest a group waits for the callers in
	// flight to come back before it commits (spool.Grouper), and never
	// more than half the last commit's duration. Zero means 2 ms; negative
	// turns the wait off.
	MaxGroupLinger time.Duration
	// RecheckInterval is how often the Store re-reads, in one query, the
	// heads of the users its Waits wait for, even without a notification
	// (a safety net for lost notices), and how soon a Wait notices the
	// database is down. Zero means 5 s.
	RecheckInterval time.Duration
	// Logger receives connection-level events (listener lost and back).
	// Nil discards. Entry contents are never logged; DSNs only with the
	// password removed.
	Logger *slog.Logger
}

// fill gives the fields left zero their documented defaults.
func (o *Options) fill() {
	if o.MaxConns <= 0 {
		o.MaxConns = 16
	}
	if o.StatementTimeout <= 0 {
		o.StatementTimeout = 30 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.MaxAppendBytes <= 0 {
		o.MaxAppendBytes = 256 << 20
	}
	if o.MaxGroupCount <= 0 {
		o.MaxGroupCount = 64
	}
	if o.MaxGroupBytes <= 0 {
		o.MaxGroupBytes = 64 << 20
	}
	if o.MaxGroupLinger == 0 {
		o.MaxGroupLinger = 2 * time.Millisecond
	}
	if o.RecheckInterval <= 0 {
		o.RecheckInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Store is a spool.Store and spool.Compactor on PostgreSQL.
type Store struct {
	opts    Options
	pool    *pgxpool.Pool
	log     *slog.Logger
	dsn     string // for the listener; never logged
	waiters waiters

	closed   chan struct{}
	closeMu  sync.Mutex
	isClosed bool
	stopL    context.CancelFunc
	lDone    chan struct{}
	rDone    chan struct{} // closed when the recheck has returned

	reqs  chan *appendReq // to the writer; unbuffered
	wDone chan struct{}   // closed when the writer has returned

	commits, appends atomic.Int64 // group transactions committed, Appends in them
	rechecks         atomic.Int64 // recheck queries made

	// spoolKey is the key KeepSpoolKey bound the appends to (nil: none):
	// every append passes it to cspool_append_within, which appends only
	// while cspool_spool_key holds it (schema/0007.sql).
	spoolKey atomic.Pointer[[]byte]

	// The hold on the spool key (hold.go): stopH ends keepHold, which
	// closes hDone; holdLost is not nil while the hold is lost, and then
	// refuses the appends.
	stopH    context.CancelFunc
	hDone    chan struct{}
	holdLost atomic.Pointer[spool.HoldLostError]
}

// Open connects to the PostgreSQL database named by dsn (a URL or a
// key=value string, as libpq takes it), creates or migrates the schema, and
// starts the listener for cross-process wake-ups.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	opts.fill()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, &dsnRefusedError{fmt.Errorf("parsing the PostgreSQL DSN %s: %w", Redact(dsn), err)}
	}
	configure(cfg.ConnConfig, opts)
	cfg.MaxConns = opts.MaxConns
	cfg.HealthCheckPeriod = 10 * time.Second
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL %s: %w", Redact(dsn), classify(err))
	}
	cctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout+opts.StatementTimeout)
	err = checkSessions(cctx, cfg.ConnConfig)
	cancel()
	if err != nil {
		pool.Close()
		if errors.Is(err, ErrSharedSessions) {
			return nil, fmt.Errorf("checking the sessions of %s: %w", Redact(dsn), err)
		}
		return nil, fmt.Errorf("connecting to PostgreSQL %s: %w", Redact(dsn), refusedDSN(classify(err)))
	}
	s := &Store{opts: opts, pool: pool, log: opts.Logger, dsn: dsn, closed: make(chan struct{}),
		waiters: waiters{m: map[string]*waitSlot{}}}
	mctx, cancel := context.WithTimeout(ctx, 2*opts.StatementTimeout)
	defer cancel()
	if err := migrate(mctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("preparing the schema in %s: %w", Redact(dsn), err)
	}
	s.reqs, s.wDone = make(chan *appendReq), make(chan struct{})
	go s.writer()
	s.rDone = make(chan struct{})
	go s.recheck()
	lctx, stop := context.WithCancel(context.Background())
	s.stopL, s.lDone = stop, make(chan struct{})
	ready := make(chan error, 1)
	go s.listen(lctx, ready)
	select {
	case err = <-ready:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("listening for appends on %s: %w", Redact(dsn), err)
	}
	return s, nil
}

// Close ends blocked Waits with spool.ErrClosed, lets the writer finish the
// group it is committing (its callers get their answers; Appends not yet
// taken get spool.ErrClosed), stops the listener and closes the pool once
// the calls in flight have returned their connections.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.isClosed {
		s.closeMu.Unlock()
		return nil
	}
	s.isClosed = true
	close(s.closed)
	s.closeMu.Unlock()
	if s.stopL != nil {
		s.stopL()
		<-s.lDone
	}
	if s.wDone != nil {
		<-s.wDone
	}
	if s.rDone != nil {
		<-s.rDone
	}
	if s.stopH != nil {
		// After the writer: the appends in flight commit while held.
		s.stopH()
		<-s.hDone
	}
	s.pool.Close()
	return nil
}

// begin checks that s is open and bounds the call by the statement timeout.
func (s *Store) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	select {
	case <-s.closed:
		return nil, nil, spool.ErrClosed
	default:
	}
	c, cancel := context.WithTimeout(ctx, s.opts.StatementTimeout+2*time.Second)
	return c, cancel, nil
}

// Pool returns the store's connection pool, for tests and tools that look at
// the tables directly.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }
