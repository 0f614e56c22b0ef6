// Package spool defines the spool server's storage: an append-only log of
// opaque entries per user, and the Store interface every backend implements.
//
// Implementation notes and invariants, which every Store must keep (the
// conformance suite in spool/spooltest checks them):
//
//   - Positions start at 1 and are dense per user: the n-th entry ever appended
//     to a user's log has position n. A position is never reused, even after a
//     later compaction deletes the entry ("holes"); Read skips holes.
//   - Head never goes down. It is the position of the last entry ever
//     appended (0 for an empty or unknown log), not the count of entries kept.
//   - Append is atomic and durable: a batch becomes visible all at once, at
//     consecutive positions, and only after it is on stable storage. When
//     Append returns a position, a crash of the process or the machine does
//     not lose the batch. When Append returns an error other than a context
//     error, nothing was appended; when it returns ctx.Err(), the batch may or
//     may not have been appended (the caller cannot know, as with any network
//     request).
//   - Read-your-append: once Append has returned, Read and Head on the same
//     store (and on any other handle on the same storage) see the batch.
//   - Users are isolated: an operation names one user and never sees another
//     user's entries. User names are opaque byte strings, validated by the
//     callers; the store only rejects the empty name.
//   - Entries are opaque: the store never interprets, logs or transforms Data.
//     Empty entries (len(Data) == 0) are allowed.
//   - Every Store keeps the hash chain (Chainer, chain.go): a device's
//     rollback and reordering checks rest on it, so it is not optional.
//
// Backends live in subpackages (spool/sqlitestore, spool/pgstore). Optional
// capabilities, such as checkpoints and compaction, are separate interfaces
// a Store may also implement.
package spool

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"
)

// Entry is one opaque log entry at a position. Positions start at 1 and are
// dense per user.
type Entry struct {
	Pos  uint64
	Data []byte
}

// Store is a set of per-user append-only logs. All methods are safe for
// concurrent use.
type Store interface {
	// Append durably appends the batch atomically to user's log and returns the
	// position of its first entry (the batch occupies first..first+len-1). It
	// returns only once the batch is durable (fsync'd). Empty batch: error.
	Append(ctx context.Context, user string, batch [][]byte) (first uint64, err error)
	// Read returns entries with Pos > after in order, at most maxCount entries and
	// at most maxBytes of Data in total, but always at least one entry if any exists
	// (even if that one is larger than maxBytes).
	Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]Entry, error)
	// Head returns the position of the last entry (0 for an empty or unknown log).
	Head(ctx context.Context, user string) (uint64, error)
	// Wait blocks until Head(user) > after, or ctx is done (returns ctx.Err()).
	// It must wake promptly when ANY process appends to the same store.
	Wait(ctx context.Context, user string, after uint64) error
	// Chainer: every store keeps the log's hash chain, which the HTTP API
	// sends with every read (API v1 requires it; docs/API.md §3).
	Chainer
	// Close releases the store. Blocked Wait calls return ErrClosed, later
	// calls of any method return ErrClosed, and a second Close returns nil.
	Close() error
}

// Errors returned by stores. They may be wrapped: test with errors.Is.
var (
	// ErrEmptyBatch: Append was called with no entries.
	ErrEmptyBatch = errors.New("spool: empty batch")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("spool: store closed")
	// ErrUnavailable is temporary: the disk is full, the database stayed
	// locked too long, the database server is unreachable. Nothing was
	// appended; the caller may retry later (HTTP 503, LMTP 451).
	ErrUnavailable = errors.New("spool: store temporarily unavailable")
	// ErrInvalidUser: the user name is empty.
	ErrInvalidUser = errors.New("spool: invalid user name")
	// ErrInvalidArgument: a limit or size is out of range (Read with
	// maxCount < 1 or maxBytes < 0).
	ErrInvalidArgument = errors.New("spool: invalid argument")
	// ErrFull: the store's disk is full. It always comes with
	// ErrUnavailable (it is temporary); LMTP answers 452 4.3.1 for it.
	ErrFull = errors.New("spool: storage full")
	// ErrTooLarge: the batch is larger than the store accepts in one Append
	// (permanent for this batch: HTTP 413, LMTP 552).
	ErrTooLarge = errors.New("spool: batch too large")
)

// HeadAppender is a store that can append on a condition: both stores
// implement it, and the API's append with if_head needs it. A device
// appends its own commands only right after the head it has applied, so
// that an attempt whose answer was lost can be made again without the
// entries landing twice (docs/MAILSTORE.md, "Changes made on this device").
type HeadAppender interface {
	// AppendAt is Append, done only if user's head is head when the batch
	// would be appended (it then takes head+1...). Otherwise nothing is
	// appended and the error is a *HeadMovedError (errors.Is ErrHeadMoved).
	AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (first uint64, err error)
}

// IntoReader is a store that can read entries into a buffer its caller
// gives: the SQLite store implements it, and the API's server reads the
// chunks of a response with it into two buffers it uses again (each
// chunk's bytes otherwise an allocation of their own, then garbage once
// written to the network).
type IntoReader interface {
	// ReadInto is Read with the entries' bytes written into buf's
	// capacity: each entry's Data is a slice of the buffer returned,
	// capped at its end. That buffer is buf when the entries fit in its
	// capacity, else one the store allocated. The caller may use buf
	// again once it no longer needs the entries.
	ReadInto(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte) ([]Entry, []byte, error)
}

// SizedReader is a store that tells the size of a read's entries before
// it loads them: both stores implement it, and the API's server reads a
// response's first chunk with it, so that a read whose first entry is
// larger than the room left in the server's memory for reads never loads
// it (a read's first entry is sent whole, however large).
type SizedReader interface {
	// ReadSized is ReadInto, calling room with the bytes of the entries
	// it picked (what the data loaded takes) before it loads them: when
	// room returns an error, ReadSized returns it and loads nothing.
	ReadSized(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte, room func(n int64) error) ([]Entry, []byte, error)
}

// ReaderFormats is the optional capability of a store to record, for each
// log, since when every device that read it said it reads entry format 3,
// and format 4 (docs/API.md §3). A server started with --entry-format auto
// seals a user's deliveries in format 3 once that has held long enough,
// and tells the user's devices to write commands of version 2 (format 4)
// once that has (docs/OPERATING.md, "Running it"); several servers on one
// store share what any of them saw. Both stores implement it.
type ReaderFormats interface {
	// NoteReader records a read of user's log by a device that says it
	// reads entry formats up to reads (below 3: one that says nothing, of
	// a release before format 3). For format 3 and for format 4, the
	// time is set to now unless one is set already if the device reads
	// it, and cleared if not. A user with no log is left as it is:
	// nothing is recorded, and it reports false (the caller tries again
	// at the next read, which may find the log made meanwhile).
	NoteReader(ctx context.Context, user string, reads int, now time.Time) (bool, error)
	// ReadersSince returns the times recorded. A store that knows every
	// read of a log it makes is recorded from its start (SQLite) starts
	// its times at the Unix epoch, until a read says less; a log made
	// before (a store migrated), or on a store shared with servers that
	// do not record reads (PostgreSQL during an upgrade), has them from
	// the first read after. A user with no log has what the log its
	// first append makes starts with.
	ReadersSince(ctx context.Context, user string) (Readers, error)
}

// Readers is what ReaderFormats recorded of a log's reads: since when
// every read said its device reads entry format 3, and format 4. The zero
// time where that is not so (no such read yet, one that did not say it
// since).
type Readers struct {
	Format3, Format4 time.Time
}

// ErrHeadMoved: a conditional append found another head than the one it
// was given; nothing was appended (HTTP 409 with Cspool-Head).
var ErrHeadMoved = errors.New("spool: the log's head moved")

// HeadMovedError is a conditional append refused because the head moved.
type HeadMovedError struct {
	Want, Head uint64 // the head the append was for, and the head it found
}

func (e *HeadMovedError) Error() string {
	return fmt.Sprintf("the log's head is %d, not %d: nothing appended", e.Head, e.Want)
}

// Unwrap makes errors.Is(err, ErrHeadMoved) hold.
func (e *HeadMovedError) Unwrap() error { return ErrHeadMoved }

// CheckUser returns ErrInvalidUser (wrapped) if user cannot name a log.
func CheckUser(user string) error {
	if user == "" {
		return fmt.Errorf("checking user name: %w", ErrInvalidUser)
	}
	return nil
}

// CheckRead validates the arguments of Read.
func CheckRead(user string, maxCount int, maxBytes int64) error {
	if err := CheckUser(user); err != nil {
		return err
	}
	if maxCount < 1 {
		return fmt.Errorf("read with maxCount %d: %w", maxCount, ErrInvalidArgument)
	}
	if maxBytes < 0 {
		return fmt.Errorf("read with maxBytes %d: %w", maxBytes, ErrInvalidArgument)
	}
	return nil
}

// CheckAppend validates the arguments of Append and returns the total size of
// the batch's data.
func CheckAppend(user string, batch [][]byte) (size int64, err error) {
	if err := CheckUser(user); err != nil {
		return 0, err
	}
	if len(batch) == 0 {
		return 0, fmt.Errorf("appending to log: %w", ErrEmptyBatch)
	}
	for _, d := range batch {
		size += int64(len(d))
	}
	return size, nil
}

// KeyKeeper is a store that records the spool key its deliveries are
// signed with (both stores implement it). A device trusts one spool key
// for deliveries: a server started on the store with another would sign
// mail every device rejects as "entry author not trusted", so the server
// and cspool deliver check the key with the store before they write.
//
// The check at start is not enough on its own: a store with no log takes a
// new key, so a process that holds no key (KeyHolder) started with another
// key on a new store records its key over a running one's. So the key is
// also checked where every append commits: once KeepSpoolKey(pub) has
// returned nil, every append through that handle (Append, AppendAt,
// AppendWithin) commits only if the store records pub, in the append's
// own transaction, serialised with KeepSpoolKey's own; otherwise nothing
// is appended and the error is a *KeyReplacedError (errors.Is
// ErrKeyReplaced and ErrUnavailable: LMTP 451, HTTP 503). The log
// therefore never holds an entry appended through a handle whose key was
// not the recorded one at its commit.
type KeyKeeper interface {
	// KeepSpoolKey records pub (the 64 bytes of keys.PublicKey.Bytes) if
	// the store records none yet, or records another but holds no log;
	// it returns an *OtherKeyError if it records another. On success the
	// handle's appends are bound to pub (above).
	KeepSpoolKey(ctx context.Context, pub []byte) error
}

// KeyHolder is a KeyKeeper whose handles hold the spool key they run with
// for as long as they are open, so that no process starts with another
// key while one runs: the check of KeyKeeper lets a store with no log take
// a new key, which is how a second server given the wrong key file used to
// record its key over a running one's and leave that one refusing every
// delivery. Both stores implement it: the server, cspool deliver and
// quickstart take the key through it.
type KeyHolder interface {
	KeyKeeper
	// HoldSpoolKey does what KeepSpoolKey does and then holds pub until
	// the handle is closed. Any number of handles, in any processes, may
	// hold one key at once. While any holds a key, HoldSpoolKey with
	// another returns a *LiveKeyError and records nothing (an
	// *OtherKeyError comes first once a log exists). The hold is a lock
	// the operating system or the database server releases when the
	// process holding it ends, killed or not, so it never outlives its
	// holder. A handle whose hold is lost while it runs (pgstore: the
	// connection holding the lock) takes it again on its own; meanwhile
	// its appends are refused as unavailable (a *HoldLostError).
	HoldSpoolKey(ctx context.Context, pub []byte) error
}

// KeyReplacer is a KeyHolder whose recorded spool key can be replaced by
// another, logs and all, when the one it records is the previous one: the
// way out of a leaked spool key (docs/OPERATING.md, "Replacing the spool
// key"). Both stores implement it. Nothing but the record changes: every
// log, position, chain hash and checkpoint stays.
type KeyReplacer interface {
	KeyHolder
	// ReplaceSpoolKey does what HoldSpoolKey(pub) does, but records pub
	// over previous (each the 64 bytes of keys.PublicKey.Bytes), whether
	// the store holds logs or not, and then holds it. It returns replaced
	// true if it recorded pub over previous, false if the store recorded
	// pub already (a second server started with the same flags, or one
	// restarted with them); a *NotPreviousKeyError if the store records
	// neither (or none); a *LiveKeyError, recording nothing, while other
	// open handles hold a key (previous, most likely) on the store, as
	// HoldSpoolKey does for any other key; a *ReplacedBeforeError,
	// recording nothing, when pub is a key a replacement took out
	// (KeyHistory). The record and its check are one transaction.
	// previous equal to pub is refused.
	ReplaceSpoolKey(ctx context.Context, previous, pub []byte) (replaced bool, err error)
}

// KeyHistory is a KeyReplacer that keeps the keys it replaced: each
// ReplaceSpoolKey that records its key over another records which key it
// replaced, in the same transaction; one that finds its key recorded
// records its previous key when none is recorded for the key yet (a
// replacement made before the store kept them). The server vouches for that key,
// signed by the key now, so that a device given only the new key trusts
// the deliveries the old one signed before the cutover (docs/API.md,
// "Spool keys"). Both stores implement it.
type KeyHistory interface {
	// PreviousSpoolKey returns the key that pub (64 bytes) was recorded
	// over by the latest replacement that recorded it, nil if none did.
	PreviousSpoolKey(ctx context.Context, pub []byte) ([]byte, error)
}

// MaxKeyChain is the most replacements SpoolKeyChain gives, and so the
// most statements the server chains for the devices (docs/API.md, "Spool
// keys"): the spool key and the 16 keys before it.
const MaxKeyChain = 16

// KeyLink is one replacement a store keeps: Key recorded over Previous
// (64 bytes each), and Sig, Key's Ed25519 signature of the statement
// (keys.SuccessionMessage(Key, Previous)), nil until a server started with
// Key records it (KeyChain.RecordSpoolKeySuccession).
type KeyLink struct {
	Seq           int64 // the replacement's place in the store's order
	Key, Previous []byte
	Sig           []byte
}

// KeyChain is a KeyHistory that keeps each replacement's signed statement,
// so that the server can give the devices the whole succession, each
// statement signed by the key that replaced the one before (docs/API.md,
// "Spool keys"). Both stores implement it.
type KeyChain interface {
	KeyHistory
	// RecordSpoolKeySuccession records sig as the statement of the latest
	// replacement recording pub over previous, if it holds none yet. A
	// statement is deterministic (Ed25519), so servers of one key write
	// the same bytes.
	RecordSpoolKeySuccession(ctx context.Context, pub, previous, sig []byte) error
	// SpoolKeyChain returns the replacements back from pub, newest
	// first, as ChainOf builds them from the store's records.
	SpoolKeyChain(ctx context.Context, pub []byte) ([]KeyLink, error)
}

// ChainOf builds the succession back from pub out of a store's
// replacements (any order): the latest replacement recording pub, then
// the latest one before it recording the key that one took out, and so on,
// each earlier than the one before in the store's order; at most
// MaxKeyChain, and it stops before a replacement that would take out a key
// the chain names already (a key replaced and later put back).
func ChainOf(links []KeyLink, pub []byte) []KeyLink {
	var chain []KeyLink
	seen := [][]byte{pub}
	cur, before := pub, int64(math.MaxInt64)
	for len(chain) < MaxKeyChain {
		best := -1
		for i, l := range links {
			if l.Seq < before && bytes.Equal(l.Key, cur) && (best < 0 || l.Seq > links[best].Seq) {
				best = i
			}
		}
		if best < 0 || slices.ContainsFunc(seen, func(k []byte) bool { return bytes.Equal(k, links[best].Previous) }) {
			break
		}
		l := links[best]
		chain = append(chain, l)
		seen = append(seen, l.Previous)
		cur, before = l.Previous, l.Seq
	}
	return chain
}

// NotPreviousKeyError: ReplaceSpoolKey was refused because the store
// records neither the previous key nor the new one. Nothing was recorded.
type NotPreviousKeyError struct {
	Recorded []byte // the key the store records (nil: none), 64 bytes
}

func (e *NotPreviousKeyError) Error() string {
	return fmt.Sprintf("spool: the store records the spool key with id %s, neither the previous key nor the new one: nothing recorded", KeyID(e.Recorded))
}

// ReplaceKey is KeyReplacer's rule, for the stores: given the key the
// store records (nil: none), it says whether to record pub over previous,
// or why not.
func ReplaceKey(recorded, previous, pub []byte) (record bool, err error) {
	switch {
	case len(pub) != 64:
		return false, fmt.Errorf("spool: a spool key of %d bytes, want 64", len(pub))
	case len(previous) != 64:
		return false, fmt.Errorf("spool: a previous spool key of %d bytes, want 64", len(previous))
	case bytes.Equal(previous, pub):
		return false, errors.New("spool: the previous spool key is the new one")
	case bytes.Equal(recorded, pub):
		return false, nil
	case bytes.Equal(recorded, previous):
		return true, nil
	}
	return false, &NotPreviousKeyError{Recorded: recorded}
}

// ReplacedBeforeError: ReplaceSpoolKey was refused because the store
// records the new key as one a replacement took out (KeyHistory): going
// back to a key replaced, perhaps because it leaked, or the two flags'
// files swapped. The store's servers would sign with it again, and state
// that it replaced the key devices trust now, which would move their
// records to it. Nothing was recorded.
type ReplacedBeforeError struct {
	Key        []byte // the new key given, 64 bytes
	ReplacedBy []byte // the key that replaced it, the latest such replacement's
}

func (e *ReplacedBeforeError) Error() string {
	return fmt.Sprintf("spool: the store records that the spool key with id %s was replaced, by the key with id %s: a key replaced is not taken back; nothing recorded",
		KeyID(e.Key), KeyID(e.ReplacedBy))
}

// LiveKeyError: HoldSpoolKey was refused because other open handles (other
// running servers or deliveries, in this process or others) hold another
// spool key on the store. Nothing was recorded.
type LiveKeyError struct {
	Live    []byte // the key they hold, the one the store records (nil: none recorded)
	Holders int    // how many hold it, when the store can tell (0: unknown)
}

func (e *LiveKeyError) Error() string {
	n := ""
	if e.Holders > 0 {
		n = fmt.Sprintf(" (%d)", e.Holders)
	}
	return fmt.Sprintf("spool: running processes%s hold the spool key with id %s on this store: nothing recorded", n, KeyID(e.Live))
}

// ErrHoldLost: the handle's hold on its spool key (KeyHolder) was lost,
// and not yet taken again; its appends are refused meanwhile, since another
// process could record another key. It comes with ErrUnavailable (LMTP 451,
// HTTP 503): the sender retries.
var ErrHoldLost = errors.New("spool: the hold on the spool key was lost")

// HoldLostError is an append refused by ErrHoldLost; Cause says why the
// hold could not be taken again (nil: not tried yet).
type HoldLostError struct {
	Cause error
}

func (e *HoldLostError) Error() string {
	if e.Cause == nil {
		return "spool: the hold on the spool key was lost; appends wait until it is held again"
	}
	return fmt.Sprintf("spool: the hold on the spool key was lost and cannot be taken again (%v); appends wait until it is", e.Cause)
}

// Unwrap makes errors.Is(err, ErrHoldLost) and errors.Is(err,
// ErrUnavailable) hold.
func (e *HoldLostError) Unwrap() []error { return []error{ErrHoldLost, ErrUnavailable} }

// KeepKey is KeyKeeper's rule, for the stores: given the key the store
// records (nil: none) and whether it holds any log, it says whether to
// record pub, or why not.
func KeepKey(recorded, pub []byte, logs bool) (record bool, err error) {
	switch {
	case len(pub) != 64:
		return false, fmt.Errorf("spool: a spool key of %d bytes, want 64", len(pub))
	case bytes.Equal(recorded, pub):
		return false, nil
	case recorded != nil && logs:
		return false, &OtherKeyError{Recorded: recorded}
	}
	return true, nil
}

// OtherKeyError: the store records another spool key than the one given
// (KeyKeeper).
type OtherKeyError struct {
	Recorded []byte // the public key's 64 bytes
}

func (e *OtherKeyError) Error() string {
	return fmt.Sprintf("spool: the store's deliveries are signed by the spool key %x, not the one given", e.Recorded)
}

// ErrKeyReplaced: the store records another spool key than the one the
// appending handle was bound to by KeepSpoolKey (KeyKeeper): another
// server or cspool deliver, started with another key on a store that held
// no log yet, recorded its own. Nothing was appended. It comes with
// ErrUnavailable: the sender keeps the message and retries, and the
// operator must stop the server that runs with the wrong key.
var ErrKeyReplaced = errors.New("spool: the store's spool key was replaced")

// KeyReplacedError is an append refused by ErrKeyReplaced.
type KeyReplacedError struct {
	Recorded []byte // the key the store records now (nil: none), 64 bytes
	Bound    []byte // the key the handle was bound to, 64 bytes
}

func (e *KeyReplacedError) Error() string {
	return fmt.Sprintf("spool key mismatch: the store records the spool key with id %s, but this process signs with the key with id %s "+
		"(a server or delivery started later with another key, before the store held a log, recorded its own; or the spool key was replaced): nothing appended",
		KeyID(e.Recorded), KeyID(e.Bound))
}

// Unwrap makes errors.Is(err, ErrKeyReplaced) and errors.Is(err,
// ErrUnavailable) hold.
func (e *KeyReplacedError) Unwrap() []error { return []error{ErrKeyReplaced, ErrUnavailable} }

// LogKeyReplaced writes the error line of appends refused for e, at most
// one per group commit: the operator must stop the process that runs with
// the key the store does not record. Key ids only, never a key.
func LogKeyReplaced(log *slog.Logger, e *KeyReplacedError) {
	log.Error("spool key mismatch: appends refused, nothing appended (temporary failures: LMTP 451, HTTP 503)",
		"recorded_key_id", KeyID(e.Recorded), "spool_key_id", KeyID(e.Bound),
		"hint", "another server or cspool deliver started with another --spool-key on this store before it held a log, and recorded its key over this one's, "+
			"or replaced it (--previous-spool-key) beside this process, which does not hold its key; "+
			"stop the servers whose spool_key_id is not the recorded one, or restart them with the spool key the store records")
}

// KeyID returns, in hex, the key id of the 64-byte public key pub: the one
// keys.PublicKey.KeyID gives (docs/FORMAT.md), which the server's start
// line prints as spool_key_id. The spool package stands on the floor of
// keys and cannot import it; TestKeyIDAgrees (cmd/cspool) holds them
// together. It names a key, never a secret: "none" for nil.
func KeyID(pub []byte) string {
	if pub == nil {
		return "none"
	}
	h := sha256.New()
	h.Write([]byte("cspool/v1 key id"))
	h.Write(pub)
	return hex.EncodeToString(h.Sum(nil)[:8])
}
