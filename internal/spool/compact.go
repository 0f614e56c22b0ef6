package spool

import (
	"context"
	"errors"

	"cspool/internal/chain"
)

// Checkpoint is a device's snapshot of the user's mailbox state covering
// every entry at positions up to and including Pos. Data is opaque to the
// store (sealed and signed by the device, like an entry).
type Checkpoint struct {
	Pos  uint64
	Data []byte
}

// CompactStats says what a Compact did.
type CompactStats struct {
	Deleted int   // entries deleted
	Bytes   int64 // entry bytes deleted
	Kept    int   // entries at or before the checkpoint kept because listed
}

// Compactor is the optional checkpoint and compaction capability of a Store.
//
// Invariants: a user has at most one checkpoint, the newest; a checkpoint is
// replaced only by one at a higher position; Compact never deletes an entry
// after the checkpoint's position, never renumbers, and never lowers the
// head; storing the checkpoint and deleting the entries happen in one
// transaction, so a crash leaves either the old state or the new one.
type Compactor interface {
	// Compact stores cp as user's newest checkpoint and deletes every entry
	// at a position <= cp.Pos except the positions listed in keep. It fails
	// with ErrStaleCheckpoint if the user already has a checkpoint at cp.Pos
	// or later, and with ErrInvalidArgument if cp.Pos is 0 or beyond the
	// head, or keep lists a position beyond cp.Pos. Positions in keep that
	// are already holes are ignored.
	Compact(ctx context.Context, user string, cp Checkpoint, keep []uint64) (CompactStats, error)
	// LatestCheckpoint returns user's newest checkpoint, or
	// ErrNoCheckpoint.
	LatestCheckpoint(ctx context.Context, user string) (Checkpoint, error)
}

// CheckpointPositioner is the optional capability of a Compactor to give
// the position of a user's newest checkpoint without loading the
// checkpoint. The HTTP API reports that position with every read, long-polls
// included, so a store whose checkpoints are large should have it: without
// it every read loads the whole checkpoint (LatestCheckpoint) to learn one
// number.
//
// Invariant: CheckpointPos(user) equals LatestCheckpoint(user).Pos, or 0
// when LatestCheckpoint returns ErrNoCheckpoint, on every handle on the same
// storage once the Compact that stored it has returned.
type CheckpointPositioner interface {
	// CheckpointPos returns the position of user's newest checkpoint, 0 if
	// there is none (an unknown user included).
	CheckpointPos(ctx context.Context, user string) (uint64, error)
}

// CheckpointSizer is the optional capability of a Compactor to give the
// size in bytes of a user's newest checkpoint without loading it, 0 when
// there is none. The HTTP API takes that many bytes from its checkpoint
// budget before it loads a checkpoint to serve it, so that downloads at
// once hold a bounded amount of memory.
type CheckpointSizer interface {
	CheckpointSize(ctx context.Context, user string) (int64, error)
}

// FormatFinder is the optional capability of a store to find the entries
// of a log in a given entry format version (the byte after the magic,
// docs/FORMAT.md §2). The HTTP API asks it before it lets a device that
// does not read entry format 3 compact a log (docs/API.md §5).
type FormatFinder interface {
	// FirstOfFormat returns the position of the first entry of user's log
	// at or before upTo whose format version byte is v; 0 if there is
	// none (an unknown user included).
	FirstOfFormat(ctx context.Context, user string, upTo uint64, v byte) (uint64, error)
}

// CheckpointPos returns the position of user's newest checkpoint in st, 0
// when there is none or st does not compact: from a CheckpointPositioner
// without loading the checkpoint, else from LatestCheckpoint. Every reader
// of a log that reports the checkpoint with a read (the HTTP API's server,
// an in-process source, the test spools) asks it this way.
func CheckpointPos(ctx context.Context, st Store, user string) (uint64, error) {
	if p, ok := st.(CheckpointPositioner); ok {
		return p.CheckpointPos(ctx, user)
	}
	c, ok := st.(Compactor)
	if !ok {
		return 0, nil
	}
	cp, err := c.LatestCheckpoint(ctx, user)
	if errors.Is(err, ErrNoCheckpoint) {
		return 0, nil
	}
	return cp.Pos, err
}

// Errors of the Compactor capability.
var (
	// ErrStaleCheckpoint: a checkpoint at the same or a later position is
	// already stored (HTTP 409). Another device got there first.
	ErrStaleCheckpoint = errors.New("spool: a newer checkpoint exists")
	// ErrNoCheckpoint: the user has no checkpoint (HTTP 404).
	ErrNoCheckpoint = errors.New("spool: no checkpoint")
)

// LogRead is one read of a user's log, with what a device needs to know to
// trust it: the head, and the position of the newest checkpoint (0 if none).
// A reader whose position is below Checkpoint may have missed entries that
// compaction deleted, and must rebuild from the checkpoint.
type LogRead struct {
	Entries    []Entry
	Head       uint64
	Checkpoint uint64

	// Chained reports whether the source vouched for the hashes below
	// (its store is a Chainer); StartHash is the chain hash at the position
	// the read started after, HeadHash the chain hash at Head.
	Chained   bool
	StartHash Hash
	HeadHash  Hash

	// Readers is the newest entry format every device of the user has
	// read for a while, as the server says (api.HeaderReaders); 0 when
	// it says nothing (a server of an earlier release, a local store).
	Readers int
}

// Claim is what the read says of the chain, for the checks of package
// chain (chain.CheckRead).
func (lr LogRead) Claim() chain.Claim {
	return chain.Claim{Head: lr.Head, Chained: lr.Chained, StartHash: lr.StartHash, HeadHash: lr.HeadHash,
		Empty: len(lr.Entries) == 0}
}
