package outbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/submit"
	"cspool/internal/syncer"
)

// Log is the user's log as the outbox files into it (*syncer.Syncer).
type Log interface {
	// Submit appends commands and returns once the device applied them.
	Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error)
	// Status tells the last contact with the spool and the head seen then.
	Status() syncer.Status
	// WaitApplied returns once the device applied the log up to pos.
	WaitApplied(ctx context.Context, pos uint64) error
}

// Config configures an Outbox. Zero fields take the documented defaults.
type Config struct {
	Path string // the outbox database (required), DB.outbox by convention
	// Key encrypts the outbox at rest (package devicedb); nil: plaintext.
	Key   *devicedb.Key
	Store *mailstore.Store // the device's mail store (required)
	Log   Log              // required
	Relay Relay            // the smarthost (Addr required)
	// Hostname names this device in EHLO, in added Message-IDs and in
	// bounces. Empty means "localhost".
	Hostname string
	// MinBackoff is the wait after a first temporary failure; it doubles
	// with each further one up to MaxBackoff. Zero: 1 minute and 1 hour.
	MinBackoff, MaxBackoff time.Duration
	// MaxAge is how long a message may wait before its pending recipients
	// fail for good (and bounce), counted by the queue clock: the time the
	// outbox has run since the message was submitted, by the monotonic
	// clock, so that setting the device's clock neither brings it forward
	// nor puts it off. Zero means 5 days.
	MaxAge time.Duration
	// ClockSaveEvery is how often the queue clock is saved while messages
	// wait: the relay loop passes at least that often then, and a pass
	// saves the clock when it ran that long since it was last saved. A
	// daemon killed loses at most that much of the messages' time in the
	// queue. Zero means 1 minute.
	ClockSaveEvery time.Duration
	// DuplicateWindow is how long after a submission the same message
	// submitted again, or appended by the client into Sent, is recognised
	// as the same. Zero means 10 minutes.
	DuplicateWindow time.Duration
	// Keep is how long a message whose recipients and filings are all done
	// stays in the outbox. Zero means 24 hours (at least DuplicateWindow).
	Keep time.Duration
	// Logger gets one line per attempt, never contents or addresses.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// ReleaseHeld relays the messages held because the outbox was found
	// copied or restored into another machine or file (home.go), on the
	// user's word that the outbox they came from did not and will not
	// relay them. It is the hold's name (Status.Hold), as an earlier open
	// made it: any other value releases nothing, so that a value left in
	// a unit or a script cannot release a later hold (another copy of the
	// outbox, or this one copied again). "": none.
	ReleaseHeld string
}

// Outbox is the durable queue. Create it with Open, run it with Run.
type Outbox struct {
	cfg Config
	db  *sql.DB
	log *slog.Logger

	opened time.Time // the sync loop's exchanges after this see all earlier appends
	// clockBase is the queue clock when the outbox was opened; it runs on
	// by the monotonic clock since opened (queueClock). clockSaved is the
	// last value written to the database.
	clockBase  int64
	clockSaved atomic.Int64
	relayKick  chan struct{}
	fileKick   chan struct{}
	// fileMu serialises filing into Sent with a client's APPEND of the
	// same message (see SentFilter).
	fileMu sync.Mutex

	// idle is the connection to the smarthost kept open since idleSince
	// (the relay loop's own).
	idle      *relayConn
	idleSince time.Time

	mu        sync.Mutex
	holdUntil time.Time // the smarthost could not be reached: wait
	connFails int
	lastError string
	relayed   int
	bounced   int
	lastSent  time.Time
}

var _ submit.Queue = (*Outbox)(nil)

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Minute
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = time.Hour
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	if c.MaxAge <= 0 {
		c.MaxAge = 5 * 24 * time.Hour
	}
	if c.ClockSaveEvery <= 0 {
		c.ClockSaveEvery = time.Minute
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	if c.Keep <= 0 {
		c.Keep = 24 * time.Hour
	}
	c.Keep = max(c.Keep, c.DuplicateWindow)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Open opens (creating if needed) the outbox database.
func Open(cfg Config) (*Outbox, error) {
	if cfg.Path == "" || cfg.Store == nil || cfg.Log == nil {
		return nil, errors.New("outbox: path, store and log are required")
	}
	if cfg.Relay.Addr == "" {
		return nil, errors.New("outbox: a relay address is required")
	}
	cfg.fill()
	log := cfg.Logger
	// A plaintext outbox encrypted in place is a new file (renamed over
	// the old): its home is then told by the machine alone, this once.
	state, _ := devicedb.Inspect(cfg.Path, cfg.Key)
	encrypting := cfg.Key != nil && state == devicedb.Plaintext
	db, err := openDB(cfg.Path, cfg.Key)
	if err != nil {
		return nil, err
	}
	o := &Outbox{cfg: cfg, db: db, log: log.With("component", "outbox"), opened: time.Now(),
		relayKick: make(chan struct{}, 1), fileKick: make(chan struct{}, 1)}
	if err := db.QueryRow("SELECT ms FROM clock WHERE id = 1").Scan(&o.clockBase); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening outbox %s: reading the queue clock: %w", cfg.Path, err)
	}
	if err := o.checkClock(); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening outbox %s: %w", cfg.Path, err)
	}
	o.clockSaved.Store(o.clockBase)
	if err := o.checkHome(context.Background(), encrypting, cfg.ReleaseHeld); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening outbox %s: %w", cfg.Path, err)
	}
	return o, nil
}

// Close closes the database; call it after Run returned.
func (o *Outbox) Close() error { return o.db.Close() }

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (o *Outbox) now() time.Time { return o.cfg.Now() }

// digest identifies a submission: envelope and bytes as the client sent
// them (less the fields the listener added, which differ each time).
func digest(m *submit.Message) []byte {
	h := sha256.New()
	h.Write([]byte(m.From))
	for _, r := range m.Recipients {
		h.Write([]byte{0})
		h.Write([]byte(r.Address))
	}
	h.Write([]byte{0, 0})
	if m.Added > 0 && m.Added <= len(m.Data) {
		h.Write(m.Data[m.Added:])
	} else {
		h.Write(m.Data)
	}
	return h.Sum(nil)
}

// Enqueue stores m and its recipients in one synced transaction and returns
// its queue id. The same submission again within DuplicateWindow (a client
// that lost the 250) returns the first one's id and stores nothing: the
// same Message-ID, envelope and bytes; for a message the client sent
// without Message-ID (the listener's is new each time), the same envelope
// and bytes, when the client wrote its Date (without it, the same text
// sent twice on purpose would be taken for one).
func (o *Outbox) Enqueue(ctx context.Context, m *submit.Message) (string, error) {
	now, clock := o.now(), o.queueClock()
	sum := digest(m)
	since := now.Add(-o.cfg.DuplicateWindow).UnixMilli()
	same, args := "SELECT qid FROM messages WHERE message_id = ? AND digest = ? AND accepted >= ? ORDER BY qid LIMIT 1", []any{m.MessageID, sum, since}
	switch {
	case m.Content != nil && m.DateAdded:
		same = ""
	case m.Content != nil:
		same, args = "SELECT qid FROM messages WHERE content = ? AND digest = ? AND accepted >= ? ORDER BY qid LIMIT 1", []any{m.Content, sum, since}
	}
	sentBox, sentFrom := o.mailboxMark(ctx, sentMailbox)
	if uid := o.earlyCopyUID(ctx, keyOf(m), sentBox, now); uid > 0 && uid < sentFrom {
		sentFrom = uid
	}
	var qid int64
	err := inTx(ctx, o.db, func(tx *sql.Tx) error {
		if same != "" {
			err := tx.QueryRowContext(ctx, same, args...).Scan(&qid)
			if err == nil {
				return nil
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO messages (message_id, digest, sender, utf8, body_type, ret, envid, data,
			accepted, sent_box, sent_from, next_try, queued, content) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			m.MessageID, sum, m.From, m.UTF8, m.Body, m.Return, m.EnvelopeID, m.Data,
			now.UnixMilli(), sentBox, sentFrom, now.UnixMilli(), clock, m.Content)
		if err != nil {
			return err
		}
		// The queue clock on disk is never behind a message's queued.
		if _, err := tx.ExecContext(ctx, "UPDATE clock SET ms = ? WHERE id = 1 AND ms < ?", clock, clock); err != nil {
			return err
		}
		if qid, err = res.LastInsertId(); err != nil {
			return err
		}
		for i, r := range m.Recipients {
			if _, err := tx.ExecContext(ctx, "INSERT INTO recipients (qid, idx, address, notify, orcpt) VALUES (?, ?, ?, ?, ?)",
				qid, i, r.Address, joinNotify(r.Notify), r.ORCPT); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("queueing message: %w", err)
	}
	kick(o.relayKick)
	return strconv.FormatInt(qid, 10), nil
}

// Run relays and files until ctx is done, then returns ctx.Err().
func (o *Outbox) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		o.fileLoop(ctx)
	}()
	o.relayLoop(ctx)
	wg.Wait()
	return ctx.Err()
}

// Status is the queue as the status page shows it.
type Status struct {
	Relay    string `json:"relay"`
	Queued   int    `json:"queued"`   // messages with recipients still to relay
	Deferred int    `json:"deferred"` // of those, the ones that failed for now at least once
	// Held of those are not relayed: the outbox was copied or restored
	// from another machine or file (Config.ReleaseHeld).
	Held int `json:"held"`
	// Hold names the held messages, for Config.ReleaseHeld ("": none held).
	Hold      string    `json:"hold,omitempty"`
	Oldest    time.Time `json:"oldest"`   // when the oldest queued message was submitted (zero: none)
	NextTry   time.Time `json:"next_try"` // the next attempt (zero: none due)
	ToFile    int       `json:"to_file"`  // Sent copies and bounces not yet in the log
	LastError string    `json:"last_error,omitempty"`
	Relayed   int       `json:"relayed"` // messages relayed since the daemon started
	Bounced   int       `json:"bounced"` // bounces filed since the daemon started
	LastSent  time.Time `json:"last_sent"`
}

// Status reads the queue's state.
func (o *Outbox) Status(ctx context.Context) (Status, error) {
	o.mu.Lock()
	st := Status{Relay: o.cfg.Relay.String(), LastError: o.lastError, Relayed: o.relayed, Bounced: o.bounced, LastSent: o.lastSent}
	hold := o.holdUntil
	o.mu.Unlock()
	var oldest, next sql.NullInt64
	err := o.db.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(attempts > 0), 0), coalesce(sum(held), 0), min(accepted),
		min(CASE WHEN held = 0 THEN next_try END) FROM messages WHERE done = 0`).Scan(&st.Queued, &st.Deferred, &st.Held, &oldest, &next)
	if err != nil {
		return st, fmt.Errorf("reading outbox status: %w", err)
	}
	if err := o.db.QueryRowContext(ctx, "SELECT count(*) FROM filings WHERE done = 0").Scan(&st.ToFile); err != nil {
		return st, fmt.Errorf("reading outbox status: %w", err)
	}
	if st.Held > 0 {
		if err := o.db.QueryRowContext(ctx, "SELECT hold FROM home WHERE k = 1").Scan(&st.Hold); err != nil {
			return st, fmt.Errorf("reading outbox status: %w", err)
		}
	}
	if st.LastError == "" && st.Deferred > 0 {
		// The smarthost answered, but not yet for some message: its reply.
		err := o.db.QueryRowContext(ctx, "SELECT last_error FROM messages WHERE done = 0 AND last_error != '' ORDER BY qid DESC LIMIT 1").
			Scan(&st.LastError)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return st, fmt.Errorf("reading outbox status: %w", err)
		}
	}
	if oldest.Valid {
		st.Oldest = time.UnixMilli(oldest.Int64)
	}
	if next.Valid {
		st.NextTry = time.UnixMilli(next.Int64)
		if hold.After(st.NextTry) {
			st.NextTry = hold
		}
	}
	return st, nil
}

func (o *Outbox) setError(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err == nil {
		o.lastError = ""
	} else {
		o.lastError = err.Error()
	}
}
