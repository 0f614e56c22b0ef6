package spool

import (
	"context"
	"errors"
	"time"
)

// OnceAppender is a store that appends a request at most once however
// many times it arrives, on any handle on the same storage: the HTTP API
// appends the requests that name no head (deliveries over HTTP) through
// it, so that a load balancer retrying one on a second server process, or
// a captured one sent again to each, does not append it twice
// (docs/STORE.md, "Appends made once"). Both stores implement it.
//
// Invariants: the record of a request is written in the transaction of
// its append, where the append takes the user's lock, and never without
// it; so a request is either appended and recorded, or neither. While a
// record is kept, no second append of its ID commits on any handle: a
// second call waits for the first's transaction and then finds its
// record. A record is kept at least until its Expires; after that it may
// be dropped at any time (cheaply: each group of appends that records
// requests drops the expired among the few oldest records by ID, whose
// order is that of the requests' timestamps).
type OnceAppender interface {
	// AppendOnce is Append (AppendWithin with limit, if limit > 0) of the
	// request once names. If the store keeps a record of once.ID with the
	// same Digest, nothing is appended and the answer is the position the
	// recorded append got, with repeat true, whatever the limit; with
	// another Digest, nothing is appended and the error wraps
	// ErrOnceReused.
	AppendOnce(ctx context.Context, user string, once Once, limit int64, batch [][]byte) (first uint64, repeat bool, err error)
	// Appended returns the position and entry count of the append
	// recorded for once.ID, without appending: an error wrapping
	// ErrNotRecorded if there is none (not appended, failed, or its record
	// expired), ErrOnceReused if the record has another Digest.
	Appended(ctx context.Context, once Once) (first uint64, count int, err error)
}

// Once names a request that may reach the store more than once.
type Once struct {
	// ID is the request's name, unique while it is kept: the HTTP API's
	// timestamp (8 bytes, big-endian), key id (8 bytes) and nonce (16
	// bytes) of the signed request. The timestamp first keeps the records
	// of one moment together in the stores' indexes: a new record goes
	// where the last ones went, not to a random page.
	ID [32]byte
	// Digest is the SHA-256 of the whole request (the API's signed
	// message): a record of ID with another digest is another request
	// that reused the name.
	Digest [32]byte
	// Expires is when the record may be dropped: once no server can take
	// the request any more (its timestamp has left every window).
	Expires time.Time
}

var (
	// ErrOnceReused: a request's ID is recorded for another request
	// (another digest). Nothing was appended; the API answers it as a
	// replay (401).
	ErrOnceReused = errors.New("spool: request id recorded for another request")
	// ErrNotRecorded: no append is recorded for the request's ID.
	ErrNotRecorded = errors.New("spool: no append recorded for the request")
)

// OncePrune is how many of the oldest records (by ID, that is by
// timestamp) an append group looks at for each request it records, and
// drops those expired: more than it adds, so the records stay about as
// many as the requests of one window, and no group pays for a backlog at
// once.
const OncePrune = 4
