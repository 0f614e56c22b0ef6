// Package syncer keeps a device's mail store in step with the user's log on
// the spool, and turns the device's own changes into signed commands in that
// log.
//
// Implementation notes and invariants:
//
//   - One loop (Run) reads entries after the store's position, long-polling
//     when it is at the head, opens and verifies each (trusted authors: the
//     user's key, and the spool's key, which the store then allows only to
//     Deliver), and applies the whole batch together with its last position in
//     one mail store transaction. A crash at any point therefore loses nothing
//     and applies nothing twice: the position moves only with the batch.
//   - Opening an entry depends on its bytes alone, so the entries of a read
//     are opened on all cores; the checks that depend on the device's state
//     and the apply go one entry after the other, in log order. While the
//     loop is behind the head, the next read is made and opened while the
//     batch before it applies, its entries opened as they arrive when the
//     source hands them over so (EachSource), and used only if the batch
//     committed (ahead.go).
//   - An entry that does not open (bad signature, unknown author, another
//     user's entry, corrupt bytes) is recorded as rejected with its position
//     and reason, in the transaction of its batch, logged, counted, and
//     skipped; the sync goes on.
//   - After each commit the OnApplied callback runs, in log order, before the
//     next batch is read: the IMAP layer updates its sessions from it.
//   - Submit seals commands with the user's key, appends them in one batch,
//     together with those of the other Submits that came while a request
//     was on its way (group commit, group.go), records in the store the
//     positions the spool's answer gave them (a dropped append is an alarm,
//     integrity.go) and returns only once the
//     loop has applied the log up to them, with each entry's outcome, so a
//     client sees its change in the order every other device sees it.
//     When the spool cannot be reached Submit returns an error wrapping
//     ErrUnavailable; nothing is appended, unless only the answer was lost:
//     then the entry is applied like any other when the loop reads it, and
//     its position, never learnt, is not checked.
//     While the spool cannot be reached, or changes wait already, Submit
//     queues the commands on the device instead, shown at once and sent by
//     the loop when the spool answers again (queue.go). A store with no
//     room left (RoomChecker: a full disk) gets no change: Submit refuses
//     it before it is sent or queued.
//   - When the spool is down the loop retries with capped exponential
//     backoff, asking the spool meanwhile whether it answers again so that
//     it resumes within a ProbeInterval of its return (a
//     ProbeSlowInterval once the outage is older than ProbeSlowAfter);
//     the store keeps serving reads meanwhile.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// ErrUnavailable means the spool could not be reached or refused for now;
// the caller may try again later (IMAP NO [UNAVAILABLE]).
var ErrUnavailable = errors.New("spool unavailable")

// ErrGap means the spool's answer skipped positions that no checkpoint
// explains: entries are missing, and applying on would diverge.
var ErrGap = errors.New("gap in the log")

// Source is the user's log on the spool: the API client satisfies it.
//
// A Source's error says whether trying again later may help: it is
// temporary when it wraps spool.ErrUnavailable (the spool could not be
// reached, or refused for now) or spool.ErrOverQuota, as the API client's
// errors do and a local store's; any other error is permanent.
type Source interface {
	// ReadLog returns entries after `after` (at most maxCount, about
	// maxBytes), waiting up to wait for one to arrive, with the log's head
	// and newest checkpoint position.
	ReadLog(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration) (spool.LogRead, error)
	// Append appends a batch to user's log and returns the first position.
	Append(ctx context.Context, user string, batch [][]byte) (uint64, error)
}

// Checkpointer is the optional checkpoint capability of a Source.
type Checkpointer interface {
	// Checkpoint returns the newest checkpoint (spool.ErrNoCheckpoint if
	// none).
	Checkpoint(ctx context.Context) (spool.Checkpoint, error)
	// PutCheckpoint stores cp and lets the spool delete every entry up to
	// cp.Pos except keep (spool.ErrStaleCheckpoint if a newer one exists).
	PutCheckpoint(ctx context.Context, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error)
	// PutCheckpointFrom is PutCheckpoint with the checkpoint at pos read
	// from data (from its start to its Size, again for a retry), so that
	// it need not be in memory.
	PutCheckpointFrom(ctx context.Context, pos uint64, data *io.SectionReader, keep []uint64) (spool.CompactStats, error)
}

// CheckpointWriterTo is the optional capability of a Checkpointer to
// write the newest checkpoint into w as it arrives (api.Client's
// CheckpointTo) instead of returning it in memory: the device downloads it
// into a file (Config.TempDir) and opens it from there, so that its
// memory does not grow with the checkpoint.
type CheckpointWriterTo interface {
	// CheckpointTo writes the newest checkpoint to w and returns its
	// position and size (spool.ErrNoCheckpoint if none).
	CheckpointTo(ctx context.Context, w io.Writer) (uint64, int64, error)
}

// IntoSource is the optional capability of a Source to read the entries'
// bytes into a buffer the caller gives (api.Client.ReadLogInto): the loop
// gives the same buffer to the read after a batch whose bytes it let go
// (ahead.go), instead of an allocation per entry read.
type IntoSource interface {
	// ReadLogInto is ReadLog with the entries' Data in buf's spare
	// capacity while they fit.
	ReadLogInto(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration, buf []byte) (spool.LogRead, error)
}

// EachSource is the optional capability of an IntoSource to hand over each
// entry of a read as it arrives (api.Client.ReadLogEach): the loop opens
// the first entries of a read made ahead while the spool still sends the
// others (ahead.go), instead of after the whole read.
type EachSource interface {
	IntoSource
	// ReadLogEach is ReadLogInto, calling each with every entry of the
	// read, in order, with its index, as soon as it is read; a read that
	// fails may have handed some over.
	ReadLogEach(ctx context.Context, after uint64, maxCount int, maxBytes int64, wait time.Duration, buf []byte, each func(i int, e spool.Entry)) (spool.LogRead, error)
}

// Config configures a Syncer. Zero fields take the documented defaults.
type Config struct {
	User     string
	UserKey  *keys.SecretKey
	SpoolKey keys.PublicKey
	// PreviousSpoolKey, if set, is the spool key SpoolKey replaced
	// (cspool's --previous-spool-key): deliveries signed by it are
	// trusted at the positions before the first entry signed by
	// SpoolKey, the cutover, and rejected as a stranger's after it
	// (spoolkey.go). It must differ from SpoolKey.
	PreviousSpoolKey keys.PublicKey
	Source           Source
	Store            Store        // the device's store (store.go): *mailstore.Store
	Logger           *slog.Logger // nil: slog.Default()

	// OnApplied, if set, runs after each committed batch, in log order.
	OnApplied func(*mailstore.Result)
	// OnContact, if set, runs after each read the spool answered, before
	// its entries are checked or applied: the spool took the user's key
	// for this log (cspool keeps the database a first run made from then
	// on). It runs on the loop's goroutine and should return quickly.
	OnContact func()
	// OnLargeOpened, if set, runs before a batch that holds an entry
	// whose message is over LargeEntryBytes is applied, once the entries'
	// sealed bytes are let go: they are garbage then, as large as the
	// message, and the device gives the Go heap's free pages back there,
	// before the apply's SQLite memory grows beside them.
	OnLargeOpened func()
	// Unreachable, if set, reports whether a Source error means that no
	// answer came from the spool (connection refused, reset or timed
	// out). After such an error the loop asks the spool (Prober) every
	// ProbeInterval whether it answers again instead of waiting out its
	// backoff. Nil: it waits out the backoff.
	Unreachable func(error) bool
	// ProbeInterval is how often the loop asks an unreachable spool
	// whether it answers again in the first ProbeSlowAfter of an outage;
	// 0 = 500 ms. A spool server restarted, or a connection that broke,
	// is back within seconds, and a quick return is what its users see.
	ProbeInterval time.Duration
	// ProbeSlowAfter and ProbeSlowInterval: once the spool has not
	// answered for ProbeSlowAfter (0 = 1 minute), the loop asks it every
	// ProbeSlowInterval (0 = 5 s) instead. A laptop offline for hours
	// then wakes for a probe 720 times an hour, not 7,200, and the
	// devices of a spool server back from a long outage return spread
	// over 5 s rather than within half a second of each other; the
	// price is up to 5 s more before a long outage's end is noticed.
	// Both ±10% at random, so that devices do not ask at once.
	ProbeSlowAfter    time.Duration
	ProbeSlowInterval time.Duration
	// DrainWait is how long Submit waits, while the spool answers, for
	// the loop to send the changes already queued before it appends a
	// new one itself instead of queueing it too (queue.go); 0 = 2 s.
	DrainWait time.Duration
	// Permanent, if set, returns what a person must do about a Source
	// error that retrying cannot heal (an untrusted certificate, a key the
	// spool refuses), or "" for an error that may heal by itself. Such an
	// error is logged once with that hint, shown in Status (LastError,
	// Hint), and tried again only every RecheckPermanent, so that a fix on
	// the server is noticed without a log line every 30 s. Nil: every
	// error is retried with backoff.
	Permanent func(error) string
	// RecheckPermanent is how long the loop waits after an error
	// Permanent or StoreProblem named, and how long after a checkpoint
	// it rejected it downloads no other (checkpointPause); 0 = 10 min.
	RecheckPermanent time.Duration
	// StoreProblem, if set, returns what a person must do about a failure
	// of the local store that retrying cannot heal (a database SQLite
	// finds damaged), or "" for one that may (a full disk, a lock). It is
	// logged once with that hint, shown in Status, and tried again every
	// RecheckPermanent, as for Permanent.
	StoreProblem func(error) string

	// CheckpointMin is the fewest entries since the newest checkpoint
	// before this device writes one (it also waits until they outnumber
	// the live bodies, and, while it appended none of them, for twice as
	// many: the device making the changes writes it; while the newest is
	// another device's, for a quarter more: that device writes the next);
	// 0 = 1000, negative = never write checkpoints.
	CheckpointMin int
	// CheckpointTail is how many entries without a message a checkpoint
	// this device writes keeps besides its live bodies: the newest such
	// entries this device applied (tail.go); 0 = DefaultCheckpointTail,
	// negative = none.
	CheckpointTail int

	// KeepDir, if set, is the folder where an entry sealed to another key
	// or for another user (a delivery made with a wrong or stale key) is
	// kept as POS.entry (mode 0600), so that the holder of that key can
	// open it and deliver the message again: such an entry is an alarm
	// (Status.Misdelivered), not only a rejection. Empty: not kept.
	KeepDir string

	// TempDir is the folder of the file a checkpoint is sealed into
	// before it is uploaded (WriteCheckpoint): removed as soon as it is
	// made, it holds only the sealed entry, as the spool stores it (about
	// 150 bytes a message), never the state in the clear. Empty:
	// os.TempDir().
	TempDir string

	// DisableIntegrity turns off the tamper-evidence checks (chain hashes,
	// seen heads). It exists to measure what they cost; never set it in
	// production.
	DisableIntegrity bool

	// BatchCount is the most entries per read, and so per batch applied;
	// 0 = 500. Two batches are in memory at once while the loop is behind
	// the head (one applying, the next read and opened ahead), each
	// entry with its plaintext and its parsed forms: at 2 KB a message,
	// 500 instead of 1,000 took the Go heap over a first sync of 100,000
	// from 25.6 to 22.1 MB (medians; peaks 27.4 and 25.4 MB) with the
	// same sync time (docs/BENCHMARKS.md, "Memory at 100,000 messages").
	// BatchBytes bounds a batch of larger messages first: at 10 KB a
	// message, 2 MiB instead of 4 took the daemon's CPU over a first sync
	// of 10,000 from 5.7 to 4.1 to 4.4 s with reads into one buffer
	// (ahead.go): less of the Go heap is live under the daemon's soft
	// memory limit, so the runtime collects and hands pages back less
	// often; 1 MiB gave 4.4 to 4.7 s (twice the commits).
	BatchCount int
	BatchBytes int64         // bytes per read; 0 = 2 MiB
	Wait       time.Duration // long-poll wait asked of the spool (it may grant less); 0 = 5 minutes
	MaxBackoff time.Duration // 0 = 30 s
	// PollRate and PollBurst bound how often the loop starts a long-poll
	// while no change of this device waits to be applied: at most
	// PollBurst at once, then PollRate a second (a token bucket). Each
	// entry appended ends a long-poll, so a burst of mail (a mailing
	// list, a migration) made one read a delivery: 20,000 deliveries
	// over 90 s spent the user key's nonce budget on the spool (16,384
	// requests in 5 minutes, for all of the user's devices, docs/API.md
	// §2), and the device got 429 and fell behind for 4.5 minutes. At
	// 10 a second after a burst of 600, a device makes at most 3,600
	// long-polls in 5 minutes, and during a burst each read takes what
	// arrived in the last tenth of a second; a device's own change is
	// read at once. Both 0: paced to the budget the spool states
	// (fitBudget: 10 a second after 600 at that budget of 16,384 in
	// 5 minutes, and as many times that as a budget allows more: 49 a
	// second at 16,384 in 61 s); PollRate < 0: no bound.
	PollRate  float64
	PollBurst int
	// AppendRate and AppendBurst bound how often this device's own
	// changes are appended (a token bucket, as PollRate): a group of
	// changes waits for its turn, and the changes made meanwhile join
	// it. Each append is also followed by a read at once (its Submit
	// waits on it), so a mail client making changes as fast as the
	// device takes them (10 sessions of the IMAP stress mix, about 500
	// appends a second) spent the user key's budget on the spool, 16,384 requests
	// in 5 minutes (docs/API.md §2), in 20 s: the spool then answered
	// 429 until the oldest of them was 5 minutes old, and every change
	// and every new mail waited that long. At 12 a second after a
	// burst of 2,000, appends and their reads stay under 11,200 in any
	// 5 minutes, which leaves another device's long-polls (3,600) room.
	// Both 0: paced to the spool's budget as PollRate (12 a second after
	// 2,000 at 16,384 in 5 minutes, 59 at 16,384 in 61 s); AppendRate < 0:
	// no bound.
	AppendRate  float64
	AppendBurst int
}

// Status is a snapshot of the sync state.
type Status struct {
	Position    uint64    // last applied position
	Head        uint64    // the spool's head, as last seen, never below Position
	LastContact time.Time // last successful exchange with the spool
	LastError   string    // the last failure, cleared by a success
	Connected   bool      // the last exchange succeeded
	// StoreFailing: LastError is the device's own database's (a full
	// disk, a locked or damaged file), not the spool's, which answered;
	// Connected says how the spool stands.
	StoreFailing bool
	// SpoolHead is the head the spool gave in its last answer (meaningful
	// once LastContact is set). Unlike Head it may be below Position: after
	// a rollback it is where the spool's log ends now.
	SpoolHead uint64
	// DownSince is when the exchanges with the spool started failing
	// (zero while connected).
	DownSince time.Time
	Rejected  int // entries rejected since start
	Applied   int // entries applied since start
	// Queued is how many changes made on this device wait to be sent to
	// the spool (or for the log to confirm them).
	Queued int
	// Readers is the newest entry format every device of the user reads,
	// as the spool said at the last read of this run (0: not said): from
	// 4 this device writes an EXPUNGE and a DELETE as commands of
	// version 2.
	Readers int

	Checkpoint        uint64    // newest checkpoint position on the spool, as last seen
	CheckpointWritten time.Time // when this device last stored a checkpoint
	Restores          int       // rebuilds from a checkpoint since start
	BadCheckpoint     uint64    // position of a checkpoint that failed validation, if any

	// Alarm, when not empty, is an integrity alarm: what a tamper-evidence
	// check saw. The sync is stopped while it is set.
	Alarm string
	// Misuse, when not empty, says that the spool's key signed entries only
	// the user may write. They were rejected and the sync goes on, but it is
	// proof that whoever holds the spool key tried to change the mailbox,
	// so it is shown with the alarms.
	Misuse string

	// Misdelivered, when not empty, says that entries of the log are
	// sealed to another key than the user's (or for another user): mail
	// delivered with a wrong or stale key, which no device of the user can
	// open. They were rejected, kept (Config.KeepDir) and the sync goes
	// on; it is shown with the alarms, with what to do.
	Misdelivered string

	// Hint, when not empty, says what a person must do about LastError:
	// retrying alone will not fix it (Config.Permanent).
	Hint string

	// Held, when not empty, says that an APPEND queued on this device is
	// refused by the spool for the quota and waits here, with the changes
	// that depend on it, until there is room; the other changes are sent
	// past it (held.go).
	Held string
}

// Alert is the text of the IMAP ALERT given at login, or "" when all is
// well.
func (st Status) Alert() string {
	switch {
	case st.Alarm != "":
		return "cspool integrity alarm, sync stopped: " + st.Alarm
	case st.Misuse != "":
		return "cspool integrity alarm: " + st.Misuse
	case st.Misdelivered != "":
		return "cspool alarm: " + st.Misdelivered
	}
	return ""
}

// Syncer runs the sync loop and submits commands. Create it with New.
type Syncer struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// readers is the last format learnReaders recorded; 0: none yet.
	readers    atomic.Int32
	status     Status
	chain      spool.Hash // chain hash at status.Position
	chainKnown bool
	// commitUnsure: an apply failed, and may have committed all the same
	// (reconcilePosition).
	commitUnsure atomic.Bool
	applied      chan struct{} // closed and replaced on each position change
	alarmed      chan struct{} // closed when an integrity alarm stops the sync
	pending      map[command.ID]pendingEntry
	goneAt       uint64    // checkpoint whose restore last found bodies gone
	downSince    time.Time // when the exchanges with the spool started failing
	cpRefused    time.Time // when the spool last refused a checkpoint as too large (413)
	// misdelivered tallies the entries recorded as sealed for another
	// key or user whose kept file is there (misdelivered.go), counted
	// through position misdelivered.through; only the loop's goroutine
	// and the start touch it.
	misdelivered misdeliveredTally
	// misuse tallies the entries recorded as beyond their author's
	// rights (integrity.go), counted through position misuse.through;
	// only the loop's goroutine and the start touch it.
	misuse misuseTally
	// rejects bounds the log's lines of rejected entries (rejectlog.go).
	rejects rejectLog
	// now is the clock of rejects' windows: time.Now.
	now func() time.Time
	// badCheckpointAt is when the last checkpoint was rejected
	// (Status.BadCheckpoint); another is not downloaded until
	// Config.RecheckPermanent has passed (checkpointPause).
	badCheckpointAt time.Time
	// quotaRefused: Submit refused a change for the quota (checkQuota)
	// since the last checkpoint this device wrote; mail deleted then
	// brings one as near the quota (nearQuota).
	quotaRefused atomic.Bool
	// quotaHeard: a read answered in this run, so the Source's Quota is
	// what the spool last stated; before, quotaKept is (statedQuota).
	quotaHeard atomic.Bool
	// quotaKept is the quota the Store keeps (QuotaKept); nil: none read.
	quotaKept atomic.Pointer[keptQuota]
	cpWritten uint64 // the position of the checkpoint this device stored last in this run
	liveSince uint64 // the checkpoint liveMark counts from (maybeCheckpoint)
	liveMark  int    // the most live bodies seen since liveSince

	light            []uint64      // positions applied in this run of entries without message bytes, ascending (tail.go)
	restoring        bool          // a restore from a checkpoint runs: Submit queues (queue.go)
	emptied          chan struct{} // closed when the queue empties, an exchange fails or a restore ends, for Submits waiting (drained)
	spoolHead        uint64        // the spool's head as last read (Status.Head never goes down)
	adopted          adoptedKey    // the restoration adopted last (restoration.go)
	triedRestoration uint64        // checkpoint position last looked at for a restoration

	// applyMu serializes the store's applies and queueing with their
	// OnApplied notices, so sessions hear them in the store's order.
	applyMu            sync.Mutex
	wake               chan struct{}                  // wakeUp: changes were queued
	hurry              chan struct{}                  // Submit: a change of this device waits to be read and applied
	polls              *rate.Limiter                  // the loop's long-polls (Config.PollRate), nil: no bound
	appends            *rate.Limiter                  // this device's appends of its changes (Config.AppendRate), nil: no bound
	autoPolls          bool                           // polls paced to the spool's budget (fitBudget): Config.PollRate and PollBurst were left zero
	autoAppends        bool                           // the same for appends
	budget             budgetSeen                     // the spool's budget the paces were last set for; guarded by mu
	noHeadSourceLogged bool                           // the loop's own
	ahead              *readAhead                     // the loop's own: the next read, made while a batch applies (ahead.go)
	spare              []byte                         // the loop's own: the buffer of a read ahead whose bytes were let go, for the next (ahead.go)
	firstBackoff       time.Duration                  // the loop's first wait after a failure
	keyUsed            atomic.Bool                    // an entry signed by the spool key was applied, or found in the log (spoolkey.go)
	cutoverPassed      atomic.Bool                    // an entry signed by the spool key was applied, or kept by a checkpoint restored: the previous key's are refused (spoolkey.go)
	previous           atomic.Pointer[keys.PublicKey] // the previous spool key: Config.PreviousSpoolKey, or learned from the spool's statement (succession.go); nil: none
	succession         successionState                // the spool's statement, asked for once (succession.go)
	successionWait     time.Duration                  // bounds the ask for it (successionAskTimeout; tests shorten it)
	earlier            atomic.Pointer[[]earlierKey]   // the spool keys before the previous one, newest first, with their cutovers (succession.go); nil: none
	unsignedThrough    uint64                         // the loop's own: the log holds no entry signed by the spool key up to here (spoolkey.go)
	signedAt           uint64                         // the loop's own: an entry signed by the spool key found ahead, at this position (spoolkey.go)
	// sentThrough is the last position where entries this device sent may
	// be in the log without the store having applied them: an append that
	// succeeded, or one without a clear answer, which may land later, but
	// only on the head it named (queue.go); or the position of an entry
	// of this device the loop applied, when that came first.
	sentThrough uint64
	// sentUnknown: changes were queued when this Syncer was made, and an
	// earlier run may have sent them without the store applying them yet
	// (a daemon killed after the spool's answer, or while the request was
	// on its way), anywhere after the position: until a send of its own
	// lands, or the queue is empty, the queue is sent only right after a
	// read found the store at the spool's head.
	sentUnknown bool
	quotaHalved bool  // sendMax was lowered after a refusal for the quota (507), until a batch lands
	held        *hold // a queued APPEND the spool refused alone for the quota (held.go); the loop's own
	heldCount   int   // how many queued changes are held with it (0: none); under mu
	sendMax     int   // the most queued changes to send at once after a 413 (0: BatchCount); the loop's own
	emptyBehind int   // reads in a row that found no entry below the spool's head; the loop's own

	// Submissions waiting to be appended together, and whether one leads
	// (group.go).
	groupMu      sync.Mutex
	groupWaiting []*submission
	groupBusy    bool
}

// fill gives the fields left zero their documented defaults.
func (c *Config) fill() {
	if c.BatchCount == 0 {
		c.BatchCount = 500
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 2 << 20
	}
	if c.Wait == 0 {
		c.Wait = 5 * time.Minute
	}
	if c.CheckpointTail == 0 {
		c.CheckpointTail = DefaultCheckpointTail
	}
	if c.CheckpointMin == 0 {
		c.CheckpointMin = 1000
	}
	if c.PollRate == 0 {
		c.PollRate = basePollRate
	}
	if c.PollBurst <= 0 {
		c.PollBurst = basePollBurst
	}
	if c.AppendRate == 0 {
		c.AppendRate = baseAppendRate
	}
	if c.AppendBurst <= 0 {
		c.AppendBurst = baseAppendBurst
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = 500 * time.Millisecond
	}
	if c.ProbeSlowAfter == 0 {
		c.ProbeSlowAfter = time.Minute
	}
	if c.ProbeSlowInterval == 0 {
		c.ProbeSlowInterval = 5 * time.Second
	}
	if c.DrainWait == 0 {
		c.DrainWait = 2 * time.Second
	}
	if c.RecheckPermanent == 0 {
		c.RecheckPermanent = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// New returns a Syncer; call Run to start syncing.
func New(cfg Config) (*Syncer, error) {
	if cfg.Store == nil || cfg.Source == nil || cfg.UserKey == nil || cfg.User == "" {
		return nil, errors.New("syncer: store, source, user and user key are required")
	}
	if cfg.PreviousSpoolKey.Ed25519 != nil && cfg.PreviousSpoolKey.Equal(cfg.SpoolKey) {
		return nil, errors.New("syncer: the previous spool key is the spool key")
	}
	autoPolls, autoAppends := cfg.PollRate == 0 && cfg.PollBurst <= 0, cfg.AppendRate == 0 && cfg.AppendBurst <= 0
	cfg.fill()
	pos, err := cfg.Store.Position(context.Background())
	if err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	s := &Syncer{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "sync", "user", cfg.User),
		applied: make(chan struct{}),
		alarmed: make(chan struct{}),
		pending: map[command.ID]pendingEntry{},
		wake:    make(chan struct{}, 1),
		hurry:   make(chan struct{}, 1),

		firstBackoff: 250 * time.Millisecond,
		now:          time.Now,
		autoPolls:    autoPolls,
		autoAppends:  autoAppends,
	}
	if cfg.PollRate > 0 {
		s.polls = rate.NewLimiter(rate.Limit(cfg.PollRate), cfg.PollBurst)
	}
	if cfg.AppendRate > 0 {
		s.appends = rate.NewLimiter(rate.Limit(cfg.AppendRate), cfg.AppendBurst)
	}
	s.fitBudget()
	s.status.Position = pos
	if s.status.Queued, err = cfg.Store.QueueLen(context.Background()); err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	s.sentUnknown = s.status.Queued > 0
	if err := s.loadIntegrity(context.Background()); err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	s.successionWait = successionAskTimeout
	if cfg.PreviousSpoolKey.Ed25519 != nil {
		prev := cfg.PreviousSpoolKey
		s.previous.Store(&prev)
	}
	if err := s.loadKeyUsed(context.Background()); err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	if err := s.loadQuota(context.Background()); err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	return s, nil
}

// Status returns the current sync state.
func (s *Syncer) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Run syncs until ctx is done, and returns ctx.Err() (or ErrClosed when the
// store was closed under it). Failures of the spool or of the local store
// (a full disk) are retried with backoff, errors Config.Permanent names
// every RecheckPermanent; an integrity alarm stops applying but Run still
// waits for ctx, so the daemon keeps serving reads.
func (s *Syncer) Run(ctx context.Context) error {
	defer s.dropAhead()
	defer s.endRejectWindow(context.Background(), true)
	firstBackoff := s.firstBackoff
	backoff := firstBackoff
	logged := ""         // the permanent error last logged
	unreachable := false // the last failure was no answer at all
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.step(ctx)
		// A read that applied nothing (a long poll ended empty, or a
		// failure) ends a window of rejection lines as well.
		s.endRejectWindow(ctx, false)
		if err == nil {
			err = s.sendQueue(ctx)
		}
		if err == nil {
			backoff, logged, unreachable = firstBackoff, "", false
			s.maybeCheckpoint(ctx)
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrIntegrity) {
			// Stop applying; keep serving reads until shut down, and
			// look for a restoration that explains the alarm
			// (restoration.go) whenever the spool's log changes.
			if !s.waitRestoration(ctx) {
				return ctx.Err()
			}
			continue
		}
		if errors.Is(err, mailstore.ErrClosed) {
			return err
		}
		var se *storeError
		var ue *UntrustedSpoolError
		hint := ""
		local := errors.As(err, &se)
		switch {
		case errors.As(err, &ue):
			hint = ue.Hint()
		case local && s.cfg.StoreProblem != nil:
			hint = s.cfg.StoreProblem(err)
		case !local && s.cfg.Permanent != nil:
			hint = s.cfg.Permanent(err)
		}
		wasUnreachable := unreachable
		unreachable = se == nil && s.cfg.Unreachable != nil && s.cfg.Unreachable(err)
		if wasUnreachable && !unreachable && se == nil {
			// The spool answers again, with an error: one from its
			// start (a request signed before it started, a 503 while it
			// opens its store) heals at once, so the backoff of the
			// outage starts over.
			backoff = firstBackoff
		}
		wait := backoff
		s.setError(err, hint)
		switch {
		case se != nil && hint == "":
			// A full disk or a locked database: nothing was applied (the
			// batch is one transaction); reads go on, and so do retries.
			s.log.Error("applying to the local store failed; retrying", "err", err, "in", backoff)
		case hint != "":
			// Retrying every 30 s would not fix it, and would say the same
			// thing forever: say it once, with what to do, and look again
			// now and then in case someone fixed the server (or the
			// store's file was put right).
			wait = s.cfg.RecheckPermanent
			if ue != nil && ue.Used {
				// A stranger's entry at the head stops the loop only until
				// the spool's key signs the next one (spoolkey.go).
				wait = min(wait, strangerRecheck)
			}
			if msg := err.Error(); msg != logged {
				logged = msg
				what := "cannot sync with the spool until this is fixed"
				if se != nil {
					what = "cannot apply the log to the local store until this is fixed"
				}
				s.log.Error(what, "err", err, "hint", hint, "next_try_in", wait)
			}
		case unreachable || s.cfg.Unreachable == nil:
			s.log.Warn("spool unreachable; retrying", "err", err, "in", backoff)
		default:
			// The spool answered, and refused for now (a key's budget
			// spent, 429; its store away, 503) or answered wrongly. A
			// refusal says how long to wait, and trying sooner is
			// refused again.
			wait = max(wait, retryAfter(err))
			s.log.Warn("spool answered with an error; retrying", "err", err, "in", wait)
		}
		answered := false
		if se != nil || hint != "" {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		} else if answered, err = s.pause(ctx, wait, err); err != nil {
			return err
		}
		switch {
		case answered:
			// A probe found the spool back: try at once, and if that
			// fails, wait the first backoff again.
			backoff, unreachable = firstBackoff, false
		case hint == "":
			backoff = min(backoff*2, s.cfg.MaxBackoff)
		}
	}
}

// retryAfter is how long a spool's refusal asked to wait before trying
// again (api.Error's Retry-After, bounded there), zero if it did not say.
func retryAfter(err error) time.Duration {
	var r interface{ RetryIn() time.Duration }
	if errors.As(err, &r) {
		return r.RetryIn()
	}
	return 0
}

// temporary reports whether a Source error says that trying again later
// may help (Source).
func temporary(err error) bool {
	return errors.Is(err, spool.ErrUnavailable) || errors.Is(err, spool.ErrOverQuota)
}

// reconcilePosition, after an apply that failed, takes the store's position
// if it is beyond the loop's: the failed apply's transaction was committed
// after all (SQLite can report an I/O error, such as a shared-memory index
// it could not grow on a full disk, after the write-ahead log took the
// commit). Reading on from the loop's own position would meet the entries
// that transaction applied and take them for a replay by the spool. The
// changes of this device's Submits among them are answered from the store.
func (s *Syncer) reconcilePosition(ctx context.Context) error {
	s.dropAhead()
	s.applyMu.Lock()
	p, err := s.cfg.Store.Position(ctx)
	if err != nil {
		s.applyMu.Unlock()
		return &storeError{err}
	}
	cur := s.Status().Position
	if p <= cur {
		s.commitUnsure.Store(false)
		s.applyMu.Unlock()
		return nil
	}
	h, known, err := s.cfg.Store.ChainAt(ctx, p)
	if err != nil {
		s.applyMu.Unlock()
		return &storeError{err}
	}
	s.log.Warn("the local store applied entries although its commit reported a failure; reading on after them", "from", cur, "to", p)
	s.setChain(h, known)
	s.advance(p, nil, 0, 0, &mailstore.Result{})
	s.commitUnsure.Store(false)
	s.applyMu.Unlock()
	s.resolveRestored(ctx)
	return nil
}

// storeError marks a failure of the local store, as opposed to the spool.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// SyncOnce applies everything up to the spool's current head without waiting
// for new entries, sends the changes queued on this device (a few rounds at
// most), and returns the number of entries applied.
func (s *Syncer) SyncOnce(ctx context.Context) (int, error) {
	defer s.dropAhead()
	defer s.endRejectWindow(context.Background(), true)
	total := 0
	sends := 0
	for {
		before := s.Status().Position
		n, head, err := s.readApply(ctx, 0)
		total += n
		if err != nil {
			return total, err
		}
		if s.Status().Position >= head || (s.Status().Position == before && n == 0) {
			if s.Status().Queued == 0 || sends == 10 {
				return total, nil
			}
			sends++
			if err := s.sendQueue(ctx); err != nil {
				return total, err
			}
		}
	}
}

// SyncOnceWaiting is SyncOnce for a command run once (cspool sync --once,
// cspool recover): when the spool refuses for now and says when to come
// back (a 503 or 429 with Retry-After, such as "this key is downloading its
// checkpoint already" while the user's other device, under the same key,
// downloads it), it waits as asked and tries again, for up to patience in
// all. A spool that cannot be reached, or a refusal without Retry-After,
// ends it at once, as SyncOnce does.
func (s *Syncer) SyncOnceWaiting(ctx context.Context, patience time.Duration) (int, error) {
	deadline := time.Now().Add(patience)
	total := 0
	for {
		n, err := s.SyncOnce(ctx)
		total += n
		if err == nil || !temporary(err) {
			return total, err
		}
		wait := retryAfter(err)
		if wait <= 0 || time.Now().Add(wait).After(deadline) {
			return total, err
		}
		s.log.Info("the spool is busy for now; trying again as it asked", "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return total, err
		case <-t.C:
		}
	}
}

// readsOn reports whether lr holds every position after pos, up to the
// spool's newest checkpoint or to the read's end if it ends before: the
// compaction deleted nothing this device still has to apply (the entries
// it lacks hold live messages, which a checkpoint keeps), so it reads on
// instead of rebuilding from the checkpoint. A device that was online
// while another wrote the checkpoint is usually a few entries behind,
// most often new mail; a rebuild reads the whole state and queues the
// device's own changes meanwhile, as offline.
func readsOn(pos uint64, lr spool.LogRead) bool {
	if len(lr.Entries) == 0 {
		return false
	}
	for i, e := range lr.Entries {
		if e.Pos != pos+1+uint64(i) {
			return false
		}
		if e.Pos >= lr.Checkpoint {
			break
		}
	}
	return true
}

// errWithheld: reads below the spool's head keep finding no entry.
var errWithheld = errors.New("entries withheld")

// step reads and applies one batch. The first read of a run, the first
// after the spool could not be reached, and any read while behind the head,
// does not wait, so the status shows contact with the spool at once, and a
// spool that came back with its log rolled back (a restored backup) is
// seen at once, not after a long-poll of minutes.
func (s *Syncer) step(ctx context.Context) error {
	wait := s.cfg.Wait
	_, canSend := s.cfg.Source.(HeadSource)
	held, nheld := s.holding()
	if held {
		// The held APPEND is sent again at the latest after MaxBackoff.
		wait = min(wait, s.cfg.MaxBackoff)
	}
	if st := s.Status(); st.LastContact.IsZero() || !st.Connected || st.Position < st.Head || (st.Queued > nheld && canSend) {
		// Queued changes are sent after a read at the head (those held
		// for the quota wait for their turn: held.go).
		wait = 0
	}
	if wait > 0 {
		if err := s.pace(ctx); err != nil {
			return err
		}
	}
	_, _, err := s.readApply(ctx, wait)
	if errors.Is(err, errWoken) {
		return nil
	}
	return err
}

// pace waits, before a long-poll, for the loop's share of long-polls
// (Config.PollRate), unless a change of this device waits to be applied:
// its Submit waits on the read, so the read starts at once, and a Submit
// made while pace waits ends the wait (hurry). Changes queued end it too.
func (s *Syncer) pace(ctx context.Context) error {
	if s.polls == nil {
		return nil
	}
	s.mu.Lock()
	waiting := len(s.pending) > 0
	s.mu.Unlock()
	if waiting {
		return nil
	}
	r := s.polls.Reserve()
	d := r.Delay()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.hurry:
		r.Cancel()
	case <-s.wake:
		r.Cancel()
		s.wakeUp() // for the long-poll's own wait (readLog), which sends them
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// LargeEntryBytes is the size of a message beyond which an entry holding
// it calls Config.OnLargeOpened.
const LargeEntryBytes = 4 << 20

// holdsLarge reports whether an entry opened holds a message of over
// LargeEntryBytes.
func holdsLarge(opened []opened) bool {
	for _, op := range opened {
		if op.err == nil && op.o != nil && op.o.Cmd != nil && len(op.o.Cmd.Body) > LargeEntryBytes {
			return true
		}
	}
	return false
}

// readApply reads one batch (long-polling up to wait) and applies it, or
// rebuilds from the newest checkpoint when compaction went past the
// store's position: it reads, checks the read against the chain of hashes
// this device has applied (checkRead, integrity.go), verifies the entries
// (verify), and applies what passed.
func (s *Syncer) readApply(ctx context.Context, wait time.Duration) (n int, head uint64, err error) {
	defer func() {
		if err != nil {
			s.dropAhead()
		}
	}()
	if a := s.Status().Alarm; a != "" {
		s.dropAhead()
		// Stopped, unless a restoration explains the alarm.
		lr, err := s.cfg.Source.ReadLog(ctx, s.Status().Position, 1, 1, 0)
		if err == nil {
			s.contact(lr.Head, lr.Checkpoint)
			err = s.tryRestoration(ctx, lr.Checkpoint)
			if err != nil && !errors.Is(err, errAdopted) && !errors.Is(err, ErrIntegrity) {
				// The look failed (the spool busy with this key's
				// other download, a cut connection, the local store):
				// it is tried again after the loop's backoff. Taken
				// for "no restoration", it had the loop wait for the
				// log's next change, up to a long-poll's 5 minutes,
				// with the restoration there already
				// (TestRestorationAfterBusyCheckpoint).
				return 0, 0, err
			}
		}
		if !errors.Is(err, errAdopted) {
			return 0, 0, fmt.Errorf("%w: %s", ErrIntegrity, s.Status().Alarm)
		}
		return 1, lr.Head, nil
	}
	if s.commitUnsure.Load() {
		if err := s.reconcilePosition(ctx); err != nil {
			return 0, 0, err
		}
	}
	pos := s.Status().Position
	ra, err := s.takeAhead(ctx, pos)
	if err != nil {
		return 0, 0, err
	}
	var lr spool.LogRead
	var opened []opened
	count := s.cfg.BatchCount
	if pos == 0 {
		// A new device reads one entry first: the read says whether
		// it rebuilds from a checkpoint, which needs only the entries
		// the checkpoint keeps, and then reads on from the
		// checkpoint's position; else the entry applies as a batch.
		count = 1
	}
	if ra != nil {
		lr, opened = ra.lr, ra.opened
		s.keepBuffer(ra.buf, lr)
	} else if lr, err = s.readLog(ctx, pos, count, wait); err != nil {
		return 0, 0, err
	}
	s.contact(lr.Head, lr.Checkpoint)
	s.learnReaders(ctx, lr.Readers)
	s.learnQuota(ctx)
	s.upgradeAtFormat4(ctx, lr.Entries)
	if lr.Checkpoint > pos && lr.Checkpoint != s.badCheckpoint() && (pos == 0 || !readsOn(pos, lr)) {
		if err := s.checkpointPause(lr.Checkpoint); err != nil {
			return 0, lr.Head, err
		}
		n, head, err := s.bootstrap(ctx, lr.Head, lr.Entries)
		if err != nil || s.badCheckpoint() != lr.Checkpoint {
			return n, head, err
		}
		// The checkpoint was rejected: go on with the log as read, which
		// works as long as compaction left no gap after the position.
	}
	if err := s.checkRead(ctx, pos, lr); err != nil {
		if errors.Is(err, errAdopted) {
			return 1, lr.Head, nil
		}
		return 0, lr.Head, err
	}
	if len(lr.Entries) == 0 {
		if lr.Head <= pos {
			s.emptyBehind = 0
			return 0, lr.Head, nil
		}
		// Behind the head with nothing to read: an entry appended between
		// the spool's read of the entries and of its head, once; a spool
		// that keeps answering so withholds the entries, and reading again
		// at once would spin (API.md §3: a read holds an entry when one
		// exists).
		if s.emptyBehind++; s.emptyBehind > 1 {
			return 0, lr.Head, fmt.Errorf("%w: the spool's answer to a read after position %d holds no entry, though it gives its head as %d (API.md §3): entries withheld; reading again after a pause",
				errWithheld, pos, lr.Head)
		}
		return 0, lr.Head, nil
	}
	s.emptyBehind = 0
	if opened == nil {
		opened = s.openAll(lr.Entries)
		lr = releaseSealed(lr, opened)
	}
	// Entries by a key not trusted before the cutover: the previous
	// spool key's, when the spool vouches for it (succession.go).
	hold := s.trustVouched(ctx, lr, opened)
	v, n, err := s.verify(ctx, pos, lr, opened)
	if v == nil {
		return n, lr.Head, err
	}
	if hold != 0 && hold <= v.last && !v.cutBefore(hold, pos) {
		// Held until the spool's statement is had (succession.go):
		// what precedes them was applied by the read before.
		return 0, lr.Head, fmt.Errorf("%w: held at position %d", errSuccessionPending, hold)
	}
	// Entries by a key not trusted, on a device whose spool key may be the
	// wrong one (spoolkey.go): what precedes them applies, then the loop
	// stops.
	declined := s.checkSpoolKey(ctx, v, lr, opened)
	if declined != nil {
		var ue *UntrustedSpoolError
		if !errors.As(declined, &ue) || !v.cutBefore(ue.First, pos) {
			return 0, lr.Head, declined
		}
	}
	if s.cfg.OnLargeOpened != nil && holdsLarge(opened) {
		s.cfg.OnLargeOpened()
	}
	if v.alarm == nil && v.last == lr.Entries[len(lr.Entries)-1].Pos && v.last < lr.Head {
		// Behind the head: read and open the next batch while this one
		// applies.
		s.startAhead(ctx, v.last)
	} else {
		// At the head: no buffer is kept for reads of an entry or two.
		s.spare = nil
	}
	rejected, alarm := v.rejected, v.alarm
	var record []spool.Hash
	if v.known {
		record = v.hashes
	}
	// The earlier keys' cutovers the batch holds are recorded before it
	// commits: a stop between the two then leaves them recorded, never
	// the batch applied without them (the batch read again finds the
	// same cutovers in the same log).
	s.passEarlier(ctx, v.earlierCuts, v.last)
	s.applyMu.Lock()
	res, err := s.cfg.Store.ApplyChained(ctx, v.batch, v.unopened, v.last, record)
	var c *mailstore.Contradiction
	if errors.As(err, &c) {
		// The batch skips an entry this device appended: nothing applied.
		s.applyMu.Unlock()
		return 0, lr.Head, s.raise(ctx, pos, c.Detail)
	}
	if err != nil {
		// The commit may have reached the database although it failed
		// (an I/O error once the write-ahead log held the transaction):
		// the next read looks at the store's position first.
		s.commitUnsure.Store(true)
		s.applyMu.Unlock()
		return 0, lr.Head, &storeError{err}
	}
	if s.cfg.OnApplied != nil {
		s.cfg.OnApplied(res)
	}
	s.applyMu.Unlock()
	s.noteLight(v.batch)
	if mailstore.SpoolSigned(v.batch) {
		s.keyUsed.Store(true)
		s.passCutover(v.batch)
	}
	for i, r := range v.unopened {
		s.logRejected(ctx, slog.LevelWarn, r.Reason, r.Pos, "reason", v.whyNot[i])
	}
	releaseDelivered(opened)
	if s.Status().Queued > 0 {
		s.refreshQueued(ctx)
	}
	misused := false
	for _, o := range res.Outcomes {
		if len(o.Kept) > 0 {
			// A DELETE or EXPUNGE of version 2 whose author had not seen
			// some of what it would have taken: ordinary in a conflict.
			s.log.Info("change applied, messages its author had not seen so kept", "pos", o.Pos, "command", o.Kind, "kept", len(o.Kept))
		}
		if o.Status == mailstore.Rejected {
			rejected++
			level := slog.LevelWarn
			if o.Reason == mailstore.ReasonDuplicate {
				// An MTA's retry: ordinary, not a warning.
				level = slog.LevelInfo
			}
			full := s.logRejected(ctx, level, o.Reason, o.Pos, "reason", o.Reason, "detail", o.Detail)
			if o.Reason == mailstore.ReasonForbidden {
				if full {
					// The rest are counted in Status.Misuse.
					s.log.Error("INTEGRITY ALARM: the spool's key signed an entry only the user may write; rejected", "pos", o.Pos, "detail", o.Detail)
				}
				misused = true
			}
			if o.Reason == mailstore.ReasonReplay && alarm == nil {
				// Devices never reuse an entry id: the spool served an old
				// entry again.
				alarm = &chain.Failure{Kind: chain.Replay, Pos: o.Pos, Detail: fmt.Sprintf("entry %d replays an entry already applied (%s)", o.Pos, o.Detail)}
			}
		}
	}
	var newChain *spool.Hash
	if v.known {
		newChain = &v.hashes[len(v.hashes)-1]
	}
	s.advance(v.last, newChain, len(res.Outcomes)-res.Rejections(), rejected, res)
	if misused {
		if err := s.countMisuse(ctx, v.last); err != nil {
			s.log.Error("reading the rejected entries failed", "err", err)
		}
	}
	if v.misdelivered {
		if err := s.countMisdelivered(ctx, v.last); err != nil {
			s.log.Error("reading the rejected entries failed", "err", err)
		}
	}
	s.endRejectWindow(ctx, false)
	if alarm != nil {
		return len(v.hashes), lr.Head, s.raise(ctx, alarm.Pos, alarm.Detail)
	}
	if declined != nil {
		return len(v.hashes), lr.Head, declined
	}
	return len(lr.Entries), lr.Head, nil
}

// releaseDelivered gives back the plaintexts of a read's deliveries once
// its batch is applied and committed (entry.Opened.Release): a delivery's
// one byte slice is its message, which the store copied into the
// database and keeps no reference to, and nothing after the apply reads
// it. Other kinds are left to the collector.
func releaseDelivered(opened []opened) {
	for _, op := range opened {
		if op.err == nil && op.o != nil && op.o.Cmd != nil && op.o.Cmd.Kind == command.Deliver {
			op.o.Release()
		}
	}
}

// verified is a read's batch that passed the checks: the entries to
// apply, those that would not open, to record as rejected with them, the
// chain hash after each position taken (rejected entries included), and
// the alarm to raise once what precedes it is applied.
type verified struct {
	batch        []mailstore.Entry
	unopened     []mailstore.Rejection
	whyNot       []error // why each of unopened did not open, logged once the batch is applied
	hashes       []spool.Hash
	known        bool // the device knows its chain: hashes are recorded
	last         uint64
	rejected     int
	misdelivered bool
	alarm        *chain.Failure
	earlierCuts  []earlierCut // the cutovers of earlier spool keys the batch holds (succession.go)
}

// verify opens the entries of a read after pos and checks them with
// internal/chain (positions, the heads their authors saw, replays, the
// head hash), and notes the entries that do not open; it stops before an
// entry that fails, and before a restoration (adopted here when it is
// first). A nil result means readApply returns n and err at once.
func (s *Syncer) verify(ctx context.Context, pos uint64, lr spool.LogRead, opened []opened) (*verified, int, error) {
	batch := make([]mailstore.Entry, 0, len(lr.Entries))
	var unopened []mailstore.Rejection
	var whyNot []error
	hashes := make([]spool.Hash, 0, len(lr.Entries))
	h, known := s.chainState()
	last := pos
	rejected := 0
	misdelivered := false
	var alarm *chain.Failure
	var cuts []earlierCut
	// Every entry is opened already (openAll), so replays are looked up
	// in one query.
	ids := make([][16]byte, 0, len(lr.Entries))
	for _, op := range opened {
		if op.err == nil {
			ids = append(ids, op.o.ID)
		}
	}
	var seenBefore map[[16]byte]uint64
	var err error
	if !s.cfg.DisableIntegrity {
		if seenBefore, err = s.cfg.Store.EntriesSeen(ctx, ids); err != nil {
			return nil, 0, &storeError{err}
		}
	}
	batchIDs := map[command.ID]uint64{}
	chainCache := map[uint64]spool.Hash{}
	seen := s.seenInitially()
	for i, e := range lr.Entries {
		if f := chain.CheckNext(last, e.Pos, ErrGap); f != nil {
			return nil, 0, s.raise(ctx, f.Pos, f.Detail)
		}
		if s.isRestoration(opened[i].o, opened[i].err, e.Pos) {
			// Its state replaces the store's before it applies: the
			// entries before it first, alone; then the adoption; then
			// the entry, read again.
			if i > 0 {
				break
			}
			if !s.adoptedAt(e.Pos, opened[i].o) {
				if err := s.adoptEntry(ctx, opened[i].o, e.Pos); err != nil {
					return nil, 0, err
				}
				return nil, 1, nil
			}
		}
		h = chain.NextLeaf(h, opened[i].leaf)
		if next := s.refusePrevious(&opened[i], seen); next < seen {
			cuts = s.cutsAt(cuts, e.Pos, next, seen)
			seen = next
		}
		o, err := opened[i].o, opened[i].err
		if err == nil && known && o.Author.Equal(s.cfg.UserKey.Public()) {
			// A head is a device's evidence only under the user's key:
			// one the spool's key signed (a delivery carries none) is
			// the spool's view, which proves nothing, and checking it
			// would let the spool raise a fork in a device's name.
			if f := s.checkSeen(ctx, e.Pos, o.Cmd.Seen, pos, hashes, chainCache); f != nil {
				alarm = f
				break
			}
		}
		if err == nil && !s.cfg.DisableIntegrity {
			// Devices never reuse an entry id: a second one is the spool
			// serving an old entry again. Stop before it.
			first, dup := batchIDs[o.ID]
			if !dup {
				first, dup = seenBefore[o.ID]
			}
			if alarm = chain.CheckReplay(e.Pos, first, o.ID, dup); alarm != nil {
				break
			}
			batchIDs[o.ID] = e.Pos
		}
		hashes = append(hashes, h)
		last = e.Pos
		if err != nil {
			rejected++
			whyNot = append(whyNot, err)
			if errors.Is(err, entry.ErrNotForUser) {
				misdelivered = true
				if err := s.keep(e.Pos, e.Data, err); err != nil {
					return nil, 0, &storeError{err}
				}
			}
			unopened = append(unopened, mailstore.Rejection{Pos: e.Pos, Reason: mailstore.Reason(rejectReason(err)), Detail: err.Error()})
			continue
		}
		author := mailstore.AuthorUser
		if !o.Author.Equal(s.cfg.UserKey.Public()) {
			author = mailstore.AuthorSpool
		}
		batch = append(batch, mailstore.Entry{Pos: e.Pos, ID: o.ID, Author: author, Previous: s.byPrevious(o),
			Cmd: o.Cmd, Prepared: opened[i].prep})
	}
	if alarm == nil && lr.Chained && known && last == lr.Head {
		if f := chain.CheckHeadHash(last, h, lr.HeadHash); f != nil {
			return nil, 0, s.raise(ctx, f.Pos, f.Detail)
		}
	}
	if last == pos {
		// Nothing of the batch was taken: the loop stopped at its first
		// entry, which only an alarm does there (a gap returns at once, and
		// a restoration first in the batch is adopted, or was already).
		if alarm == nil {
			return nil, 0, fmt.Errorf("syncer: took no entry of the batch after position %d and raised no alarm (a bug)", pos)
		}
		return nil, 0, s.raise(ctx, alarm.Pos, alarm.Detail)
	}
	return &verified{earlierCuts: cuts, batch: batch, unopened: unopened, whyNot: whyNot, hashes: hashes, known: known, last: last,
		rejected: rejected, misdelivered: misdelivered, alarm: alarm}, 0, nil
}

// rejectReason names why an entry did not open, for the rejected list.
func rejectReason(err error) string {
	for _, e := range []error{entry.ErrBadSignature, entry.ErrUnknownAuthor, entry.ErrNotForUser,
		entry.ErrCorrupt, entry.ErrTruncated, entry.ErrUnknownVersion, entry.ErrBadCommand} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return "unreadable entry"
}

func (s *Syncer) contact(head, checkpoint uint64) {
	s.noteContact(head, checkpoint)
	if s.cfg.OnContact != nil {
		s.cfg.OnContact()
	}
	s.fitBudget() // the spool's answer may state its budget
}

// learnReaders records what a read's answer says of the formats the user's
// devices read (spool.LogRead.Readers), when it says something new; a
// failure is logged and tried again at the next read.
func (s *Syncer) learnReaders(ctx context.Context, v int) {
	if v == 0 || int(s.readers.Load()) == v {
		return
	}
	n, err := s.cfg.Store.SetReaders(ctx, v)
	if err != nil {
		s.log.Warn("recording the entry formats this user's devices read failed", "err", err)
		return
	}
	s.logRewritten(n, "the spool's first answer of 4")
	s.mu.Lock()
	s.status.Readers = v
	s.mu.Unlock()
	// Logged at the first read of a run and at a change: which version
	// this device writes, and why.
	if old := s.readers.Swap(int32(v)); old != int32(v) {
		version := 1
		if v >= entry.Version4 {
			version = 2
		}
		s.log.Info("the spool says the newest entry format every device of this user reads; EXPUNGE and DELETE are written in the version it carries",
			"format", v, "version", version)
	}
}

// upgradeAtFormat4 rewrites the changes this device queued as version 1
// as version 2 (Store.UpgradeQueue) when a read holds an entry of format 4
// while the spool's answer keeps the device at version 1. The log stops
// every device that does not read format 4 at that entry already, so
// version 2 stops none that version 1 would not; and a device held back
// there until its upgrade (its own reads of the earlier release keep the
// answer below 4 for a while) queued its changes on the state before that
// entry, which the store holds until the read is applied. Failures are
// logged: the changes then go as they were written.
func (s *Syncer) upgradeAtFormat4(ctx context.Context, entries []spool.Entry) {
	if s.readers.Load() >= entry.Version4 {
		return
	}
	found := false
	for _, e := range entries {
		if v, ok := entry.VersionOf(e.Data); ok && v == entry.Version4 {
			found = true
			break
		}
	}
	if !found {
		return
	}
	n, err := s.cfg.Store.UpgradeQueue(ctx)
	if err != nil {
		s.log.Warn("rewriting queued EXPUNGE or DELETE changes at an entry of format 4 failed; they go as written", "err", err)
		return
	}
	s.logRewritten(n, "an entry of format 4")
}

// logRewritten logs n queued changes rewritten as version 2 at what.
func (s *Syncer) logRewritten(n int, at string) {
	if n > 0 {
		s.log.Info("queued EXPUNGE or DELETE changes rewritten to take only what this device holds now (docs/OPERATING.md, \"Upgrading\")",
			"changes", n, "at", at)
	}
}

func (s *Syncer) noteContact(head, checkpoint uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.status.Connected && s.status.LastError != "" {
		s.log.Info("spool reachable again", "was", s.status.LastError, "down_since", s.downSince.Format(time.RFC3339),
			"down_for", time.Since(s.downSince).Round(time.Millisecond))
	}
	s.status.Head = max(s.status.Head, head)
	s.status.SpoolHead = head
	s.status.Checkpoint = max(s.status.Checkpoint, checkpoint)
	s.status.LastContact = time.Now()
	s.status.Connected = true
	s.status.DownSince = time.Time{}
	if !s.status.StoreFailing {
		// A store that failed says so until it applies again.
		s.status.LastError, s.status.Hint = "", ""
	}
	s.spoolHead = head
}

// setError records a failed exchange with the spool, and what to do about
// it when retrying will not help. A failure of the local store is no
// failed exchange: the spool answered, and the status says so (a device
// whose disk was full said the spool did not answer, and logged it back
// several times a second).
func (s *Syncer) setError(err error, hint string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var se *storeError
	s.status.StoreFailing = errors.As(err, &se)
	if !s.status.StoreFailing {
		if s.status.Connected || s.status.LastError == "" {
			s.downSince = time.Now()
		}
		s.status.Connected = false
		s.status.DownSince = s.downSince
	}
	if s.emptied != nil {
		// Submits waiting for the queue to drain queue now instead.
		close(s.emptied)
		s.emptied = nil
	}
	s.status.LastError = err.Error()
	if hint != "" {
		// Every display of the status shows LastError: the hint goes
		// with it.
		s.status.LastError += "; to fix: " + hint
	}
	s.status.Hint = hint
}

func (s *Syncer) advance(pos uint64, chain *spool.Hash, applied, rejected int, res *mailstore.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Position = pos
	if chain != nil {
		s.chain = *chain
	}
	s.status.Head = max(s.status.Head, pos)
	if s.status.StoreFailing {
		s.status.StoreFailing = false
		s.status.LastError, s.status.Hint = "", ""
	}
	s.status.Applied += applied
	s.status.Rejected += rejected
	for _, o := range res.Outcomes {
		if p, ok := s.pending[o.Entry]; ok {
			p.ch <- o
			delete(s.pending, o.Entry)
			// This device's own, applied from the log maybe before its
			// append's answer came back (maybeCheckpoint's "appended").
			s.sentThrough = max(s.sentThrough, o.Pos)
		}
	}
	close(s.applied)
	s.applied = make(chan struct{})
}

// Submit seals cmds with the user's key, appends them as one batch (with
// those of other Submits waiting meanwhile, group.go), and waits until they
// are applied. It returns each entry's outcome, in order. While
// the spool cannot be reached, or changes made on this device wait already,
// it queues cmds on the device instead (queue.go) and returns their
// provisional outcomes: they are shown at once and sent when the spool
// answers. Commands that add mail while the spool last stated that the
// user's log is at its quota are refused with an *OverQuotaError
// (ErrOverQuota), nothing queued or appended.
func (s *Syncer) Submit(ctx context.Context, cmds ...*command.Command) ([]mailstore.Outcome, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	st := s.Status()
	if st.Alarm != "" {
		return nil, fmt.Errorf("%w: %s", ErrIntegrity, st.Alarm)
	}
	if rc, ok := s.cfg.Store.(RoomChecker); ok {
		if err := rc.CheckRoom(roomFor(cmds)); err != nil {
			return nil, fmt.Errorf("change not sent: %w", err)
		}
	}
	if err := s.checkQuota(ctx, cmds); err != nil {
		return nil, err
	}
	if s.queueing() && !s.drained(ctx) {
		return s.enqueue(ctx, cmds, nil)
	}
	alarmed := s.alarmedChan()
	seen := s.seenHead()
	sub := &submission{ctx: ctx, cmds: cmds, batch: make([][]byte, len(cmds)), ids: make([]command.ID, len(cmds)),
		done: make(chan submitted, 1)}
	waits := make([]chan mailstore.Outcome, len(cmds))
	for i, c := range cmds {
		if seen != nil {
			c.Seen = seen
		}
		b, id, err := entry.Seal(c, s.cfg.UserKey, s.cfg.UserKey.Public(), s.cfg.User, nil)
		if err != nil {
			return nil, err
		}
		sub.batch[i], sub.ids[i] = b, id
		sub.size += int64(len(b))
		waits[i] = make(chan mailstore.Outcome, 1)
	}
	s.mu.Lock()
	for i, id := range sub.ids {
		s.pending[id] = pendingEntry{ch: waits[i], cmd: cmds[i]}
	}
	s.mu.Unlock()
	select {
	case s.hurry <- struct{}{}:
	default:
	}
	forget := func() { s.forget(sub.ids) }
	r := s.sendGrouped(sub)
	switch {
	case r.err != nil:
		forget()
		return nil, r.err
	case r.queued != nil:
		return r.queued, nil
	}
	last := r.first + uint64(len(cmds)) - 1
	// The loop's long-poll ends when the spool answers it with the new
	// entries, at once from an honest spool on a live path. If it has not
	// after ownApplyGrace, its answer is held on the way or its connection
	// died without a word: the loop gives it up and reads again, as the
	// append's own request got through.
	grace := time.AfterFunc(ownApplyGrace, s.wakeUp)
	defer grace.Stop()
	outs := make([]mailstore.Outcome, len(cmds))
	for i := range waits {
		select {
		case o := <-waits[i]:
			outs[i] = o
		case <-alarmed:
			forget()
			return nil, fmt.Errorf("%w: %s (the change is in the log at position %d but not applied here)", ErrIntegrity, s.Status().Alarm, last)
		case <-ctx.Done():
			forget()
			return nil, fmt.Errorf("waiting for position %d to be applied: %w", last, ctx.Err())
		}
	}
	return outs, nil
}

// roomFor is the space a device's store takes to apply cmds, beyond what
// any commit takes: a message's bytes are written to the write-ahead log,
// then into the database, and indexed for search: three times them, to
// be safe.
func roomFor(cmds []*command.Command) int64 {
	var n int64
	for _, c := range cmds {
		n += 3 * int64(len(c.Body))
	}
	return n
}

// ownApplyGrace is how long Submit waits, once its entries are appended,
// for the loop to read and apply them before it ends the loop's long-poll
// (wakeUp), so that a long-poll whose answer the path holds, or whose
// connection died unnoticed, does not hold the change's answer until the
// read's own bound (minutes).
const ownApplyGrace = 2 * time.Second

// appendOwn appends a batch of this device's own entries: on the head the
// spool last gave it (at least the head it has applied) when the source can
// append on a condition, so that a request that was delayed or whose answer
// was lost can never land after the same entries sent again from the queue.
// A refusal because the head moved (a
// delivery or another device came first) appended nothing for sure, so the
// batch is sent again on the head the spool named, until ctx is done: each
// refusal is another writer's progress, and falling back to the queue
// would show the change before the log has it while the spool answers.
func (s *Syncer) appendOwn(ctx context.Context, batch [][]byte, ids []command.ID) (uint64, error) {
	hs, ok := s.cfg.Source.(HeadSource)
	if !ok {
		return s.cfg.Source.Append(ctx, s.cfg.User, batch)
	}
	return s.appendFrom(ctx, hs, s.Status().Head, batch, ids, 0)
}

// appendFrom appends batch (the entries ids) on head, and, while it is
// refused because the head moved, on the head the spool named, up to tries
// attempts (0: until ctx is done). Where the entries may be in the log is
// noted in sentThrough: after an attempt that succeeded, or that got no
// clear answer and may still land, on its head only.
//
// A refusal is taken at its word only once the entry after head is seen
// not to be this batch's first (landedAt): the same request may have been
// appended already, its answer lost, and the refusal be another copy's (a
// balancer that retried it on a second server process, a re-signed retry
// after a refused timestamp, a forged answer). Sent again, it would be in
// the log twice, and every device would raise a replay alarm. The batch is
// taken as appended only if all of it is there, in order: the queue's
// batches differ from one send to the next (changes queued since, a batch
// halved after a 413), so an earlier request whose first entry is this
// batch's may have held fewer of its entries. When only some are there,
// nothing is sent again and the refusal is returned: the caller reads
// first (the apply takes those out of the queue) or queues the rest.
func (s *Syncer) appendFrom(ctx context.Context, hs HeadSource, head uint64, batch [][]byte, ids []command.ID, tries int) (uint64, error) {
	for try := 1; ; try++ {
		first, err := hs.AppendAt(ctx, s.cfg.User, head, batch)
		var moved *spool.HeadMovedError
		if !errors.As(err, &moved) {
			s.mu.Lock()
			s.sentThrough = max(s.sentThrough, head+uint64(len(batch)))
			s.mu.Unlock()
			return first, err
		}
		s.sawHead(moved.Head)
		if moved.Head > head {
			n, lerr := s.landedAt(ctx, head, ids)
			if lerr != nil {
				// Not known whether a copy landed: as for an answer lost,
				// it may be there, on head only.
				s.mu.Lock()
				s.sentThrough = max(s.sentThrough, head+uint64(len(batch)))
				s.mu.Unlock()
				return 0, fmt.Errorf("%w: the spool refused an append on head %d (its head is %d), and reading position %d to see whether the same request had landed failed: %v",
					spool.ErrUnavailable, head, moved.Head, head+1, lerr)
			}
			if n > 0 {
				s.mu.Lock()
				s.sentThrough = max(s.sentThrough, head+uint64(n))
				s.mu.Unlock()
			}
			if n == len(batch) {
				s.log.Warn("an append was refused as if the head had moved, but the log holds it already: an earlier copy of the request landed and its answer was lost (a proxy that retried it, or a forged answer); taken as appended, not sent again",
					"pos", head+1, "count", len(batch), "refusal_head", moved.Head)
				return head + 1, nil
			}
			if n > 0 {
				s.log.Warn("an append was refused as if the head had moved, and the log holds the first of its entries already, from an earlier request that held fewer: none is sent again before the log is read",
					"pos", head+1, "landed", n, "count", len(batch), "refusal_head", moved.Head)
				return 0, err
			}
		}
		if try == tries {
			return 0, err
		}
		if s.waitTurns(ctx, 2) != nil {
			return 0, err
		}
		head = moved.Head
		if try%10 == 0 {
			// A crowd: let it pass.
			select {
			case <-ctx.Done():
				return 0, err
			case <-time.After(time.Duration(1+mrand.IntN(min(10*try, 100))) * time.Millisecond):
			}
		}
	}
}

// landedAt returns how many of ids, in order, are the log's entries right
// after head: entries are signed with the user's key, and ids are random,
// so an entry with ids[i] that opens under this user's key alone was sealed
// by this device for this very change. The entry after head is read alone
// first, as nearly every refusal is another writer's; the rest only when it
// is this device's. (A spool that shows them there but never keeps them is
// caught when the log is applied past them: recordAppended.)
func (s *Syncer) landedAt(ctx context.Context, head uint64, ids []command.ID) (int, error) {
	n := 0
	for n < len(ids) {
		count := len(ids) - n
		if n == 0 {
			count = 1
		}
		lr, err := s.cfg.Source.ReadLog(ctx, head+uint64(n), count, 0, 0)
		if err != nil {
			return n, err
		}
		if len(lr.Entries) == 0 {
			return n, nil
		}
		for _, e := range lr.Entries {
			if e.Pos != head+uint64(n)+1 {
				return n, nil
			}
			o, err := entry.Open(e.Data, s.cfg.UserKey, s.cfg.User, s.cfg.UserKey.Public())
			if err != nil || o.ID != ids[n] {
				return n, nil
			}
			n++
			if n == len(ids) {
				break
			}
		}
	}
	return n, nil
}

// recordAppended remembers, in the store, the positions the spool's answer
// gave the entries just appended, so that applying past one of them without
// finding it there is an alarm, also after a restart (integrity.go). Only an
// entry the sync loop already applied past, and did not find, is an error
// here: the alarm. Failing to record (a full disk) only loses that check.
func (s *Syncer) recordAppended(ctx context.Context, ids []command.ID, first uint64) error {
	recs := make([]mailstore.Appended, len(ids))
	for i, id := range ids {
		recs[i] = mailstore.Appended{ID: id, Pos: first + uint64(i)}
	}
	err := s.cfg.Store.RecordAppended(context.WithoutCancel(ctx), recs)
	var c *mailstore.Contradiction
	if errors.As(err, &c) {
		return s.raise(ctx, c.Pos, c.Detail)
	}
	if err != nil {
		s.log.Warn("recording appended entries failed: a dropped append will not be noticed", "pos", first, "err", err)
	}
	return nil
}

// pendingEntry is a submitted command waiting for its outcome.
type pendingEntry struct {
	ch  chan mailstore.Outcome
	cmd *command.Command
}

// seenHead is the head this device has applied, for its commands to carry.
func (s *Syncer) seenHead() *command.Head {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.chainKnown || s.status.Position == 0 {
		return nil
	}
	return &command.Head{Pos: s.status.Position, Hash: append([]byte(nil), s.chain[:]...)}
}

// WaitApplied blocks until the store's position is at least pos.
func (s *Syncer) WaitApplied(ctx context.Context, pos uint64) error {
	for {
		s.mu.Lock()
		cur, ch := s.status.Position, s.applied
		s.mu.Unlock()
		if cur >= pos {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
