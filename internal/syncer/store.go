package syncer

import (
	"context"
	"io"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// What the syncer needs of the device's store, declared here, by the code
// that uses it; *mailstore.Store is what the device runs with
// (cmd/cspool/device.go asserts that it has every method: mailstore is a
// floor below the syncer and cannot name these interfaces), and a test or
// a future store may stand in. The types the methods carry (mailstore.Entry,
// Result, Outcome, Snapshot, Rejection, ...) stay in mailstore, which makes
// them, since it cannot import the syncer; imapd reads the same Result and
// Outcome (docs/ARCHITECTURE.md, "The device's store").

// Store is the device's store: its replica of the mail state, the changes
// made on the device that wait for the log, and its journal of the log.
// They are one store, not three parts that could be swapped separately: a
// batch's state, its chain hashes and its rejections commit in one
// transaction (Replica.ApplyChained), which also checks the journal's
// record of appended entries. Once closed, every method fails with an
// error wrapping mailstore.ErrClosed.
type Store interface {
	Replica
	Queue
	Journal
}

// RoomChecker is the optional capability of a Store to tell, before a
// change is sent, that it has no room left to apply it (a full disk:
// mailstore's CheckRoom): Submit then refuses the change, which would
// otherwise be in the log and wait, unapplied here, until space is freed.
type RoomChecker interface {
	// CheckRoom returns an error when a write of need bytes (and the
	// little a commit adds) would fail for want of space, nil otherwise.
	CheckRoom(need int64) error
}

// Replica is the device's copy of the mail state, which the sync loop keeps
// in step with the log and checkpoints write and restore.
type Replica interface {
	// Position returns the log position of the last entry applied (0
	// before any).
	Position(ctx context.Context) (uint64, error)
	// Prepare does the work on c's message that depends on its bytes
	// alone, for ApplyChained (mailstore.Entry.Prepared), on any
	// goroutine; nil for a command without a message.
	Prepare(c *command.Command) *mailstore.Prepared
	// ApplyChained applies a batch in one transaction: entries, with the
	// positions in between that would not open recorded as rejected
	// (unopened), up to position newPos, recording the chain hash at each
	// position after the old one (chain, or nil for none). A batch that
	// contradicts the journal is refused with a *mailstore.Contradiction
	// and changes nothing.
	ApplyChained(ctx context.Context, entries []mailstore.Entry, unopened []mailstore.Rejection, newPos uint64, chain []chain.Hash) (*mailstore.Result, error)
	// WriteSnapshot hands over the encoded state for a checkpoint
	// without holding it in memory (mailstore.ErrQueued while changes
	// wait in the Queue).
	WriteSnapshot(ctx context.Context, use func(info mailstore.SnapshotInfo, encode func(io.Writer) error) error) error
	// LiveBodies returns how many message bodies the state holds.
	LiveBodies(ctx context.Context) (int, error)
	// StageRestoreFrom readies the replacement of the state with a
	// checkpoint's, decoded from r as it is read and checked with check,
	// reading the bodies it lacks with fetch; the state changes only
	// when the StagedRestore is committed, and local changes are taken
	// meanwhile (mailstore.RestoreFrom is both at once).
	StageRestoreFrom(ctx context.Context, r io.Reader, check func(*mailstore.Restored) error, fetch mailstore.BodyFetcher) (*mailstore.StagedRestore, error)
	// AdoptFrom rebases the state onto a restoration's (restoration.go),
	// decoded from r as it is read and checked with check, as
	// StageRestoreFrom does, in one call.
	AdoptFrom(ctx context.Context, r io.Reader, check func(*mailstore.Restored) error, fetch mailstore.BodyFetcher) (*mailstore.Result, *mailstore.Adoption, *mailstore.Restored, error)
	// Locate returns the mailbox, UID and the mailbox's UIDVALIDITY of a
	// message, read together, to answer a Submit whose entry a restored
	// checkpoint already holds.
	Locate(ctx context.Context, id command.ID) (mailstore.Placement, error)
}

// Queue holds the changes made on this device while they wait for the log
// (queue.go).
type Queue interface {
	// Enqueue queues cmd as entry id and applies it provisionally.
	Enqueue(ctx context.Context, id command.ID, cmd *command.Command) (*mailstore.Result, error)
	// Queue returns the queued changes in order.
	Queue(ctx context.Context) ([]mailstore.Queued, error)
	// QueueLen returns how many changes wait.
	QueueLen(ctx context.Context) (int, error)
	// SetReaders records the newest entry format every device of the
	// user reads, as the spool says (spool.LogRead.Readers), which
	// decides the version of the changes the device writes
	// (mailstore.Store.WritesVersion2); it returns how many queued
	// changes it rewrote as version 2.
	SetReaders(ctx context.Context, v int) (int, error)
	// UpgradeQueue rewrites the changes queued as version 1 as version 2
	// with the view they were made in, and returns how many.
	UpgradeQueue(ctx context.Context) (int, error)
	// ShrinkHeldAppend replaces the message of queued APPEND id, which a
	// later queued change expunges and none copies or moves, by a
	// placeholder, and reports whether it did.
	ShrinkHeldAppend(ctx context.Context, id command.ID) (*mailstore.Result, bool, error)
}

// Journal is what the device knows of the log besides the state: the
// chain hash at each position applied, the entries it saw and those it
// appended, what it rejected, and the integrity alarms (integrity.go).
type Journal interface {
	// ChainAt returns the chain hash recorded at pos, and false when
	// there is none.
	ChainAt(ctx context.Context, pos uint64) (chain.Hash, bool, error)
	// EntriesSeen returns, of ids, those applied or rejected before, with
	// their positions.
	EntriesSeen(ctx context.Context, ids [][16]byte) (map[[16]byte]uint64, error)
	// RejectionOf returns the rejection of the entry id seen first at
	// pos, nil if it was applied there.
	RejectionOf(ctx context.Context, id command.ID, pos uint64) (*mailstore.Rejection, error)
	// RecordAppended records the positions the spool gave entries this
	// device appended; a contradiction is a *mailstore.Contradiction.
	RecordAppended(ctx context.Context, es []mailstore.Appended) error
	// RecordRejected records, on its own, a rejection that belongs to no
	// batch (a checkpoint that failed validation).
	RecordRejected(ctx context.Context, pos uint64, reason string) error
	// ForgetRejectedAs forgets the rejections for reason at positions up
	// to upTo: a rebuild from a state at upTo took their place.
	ForgetRejectedAs(ctx context.Context, reason mailstore.Reason, upTo uint64) error
	// Rejected lists the newest rejections, at most limit (all if
	// limit <= 0).
	Rejected(ctx context.Context, limit int) ([]mailstore.Rejection, error)
	// RejectedAsAfter calls fn with each rejection for reason at a
	// position after `after`, oldest first, one row at a time.
	RejectedAsAfter(ctx context.Context, reason mailstore.Reason, after uint64, fn func(mailstore.Rejection) error) error
	// Forbidden returns how many entries were rejected as beyond their
	// author's rights, and the newest of them.
	Forbidden(ctx context.Context) (int, *mailstore.Rejection, error)
	// RaiseAlarm records an integrity alarm.
	RaiseAlarm(ctx context.Context, pos uint64, detail string) error
	// Alarms lists the integrity alarms, oldest first.
	Alarms(ctx context.Context) ([]mailstore.Alarm, error)
	// SpoolKeyUsed reports whether an entry signed by the spool key the
	// store records was applied (spoolkey.go).
	SpoolKeyUsed(ctx context.Context) (bool, error)
}

// QuotaKept is the optional capability of a Store to keep the usage and
// quota the spool last stated (QuotaStated) from one run of the device to
// the next (mailstore.Store.StatedQuota): a device started while the spool
// is down holds its user to them until a read answers. A limit of 0 is
// none stated.
type QuotaKept interface {
	StatedQuota(ctx context.Context) (usage, limit int64, err error)
	SetStatedQuota(ctx context.Context, usage, limit int64) error
}
