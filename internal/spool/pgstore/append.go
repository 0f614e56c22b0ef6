package pgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"cspool/internal/spool"
)

// NotifyChannel is the LISTEN/NOTIFY channel appends announce themselves
// on (cspool_append in schema/0002.sql names it too). The payload is the user name in lower-case hex, or empty ("some log
// changed") when that would exceed PostgreSQL's payload limit.
const NotifyChannel = "cspool_append"

// maxNotifyName is the longest user name whose hex fits in a NOTIFY payload
// (limit 8000 bytes).
const maxNotifyName = 3900

// appendSQL appends a batch in one statement by calling cspool_append
// (schema/0002.sql): the upsert locks the user's row until the group's
// transaction commits (serialising appenders of that user across every
// connection) and advances head; the entries take head-n+1..head; their chain hashes are
// computed from the hash on the row and the leaves ($3, SHA-256 of each
// entry) and stored with them; the notice is delivered to listeners at
// commit.
const appendSQL = `SELECT cspool_append($1, $2::bytea[], $3::bytea[], $4)`

// appendAtSQL is appendSQL on a condition (schema/0003.sql): the head
// before the batch must be $5, or the call fails with SQLSTATE
// headMovedCode, its message the head found.
const appendAtSQL = `SELECT cspool_append_at($1, $5, $2::bytea[], $3::bytea[], $4)`

// headMovedCode is the SQLSTATE cspool_append_at raises for another head.
const headMovedCode = "CSP02"

// Append durably appends batch to user's log, atomically, and returns the
// position of its first entry. The writer goroutine runs it together with
// the other Appends waiting at the moment, in one transaction under a
// savepoint of its own (writer.go); Append returns after that COMMIT.
func (s *Store) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return s.append(ctx, user, batch, nil)
}

// AppendAt implements spool.HeadAppender: cspool_append_at compares the
// head under the log's row lock, inside the group's transaction.
func (s *Store) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	return s.append(ctx, user, batch, &head)
}

func (s *Store) append(ctx context.Context, user string, batch [][]byte, head *uint64) (uint64, error) {
	size, err := spool.CheckAppend(user, batch)
	if err != nil {
		return 0, err
	}
	if size > s.opts.MaxAppendBytes {
		return 0, fmt.Errorf("appending %d bytes to %q (limit %d): %w", size, user, s.opts.MaxAppendBytes, spool.ErrTooLarge)
	}
	select {
	case <-s.closed:
		return 0, spool.ErrClosed
	default:
	}
	payload := ""
	if len(user) <= maxNotifyName {
		payload = hex.EncodeToString([]byte(user))
	}
	batch = nonNil(batch)
	leaves := make([][]byte, len(batch))
	for i, d := range batch {
		l := sha256.Sum256(d)
		leaves[i] = l[:]
	}
	return s.submit(&appendReq{ctx: ctx, user: user, batch: batch, leaves: leaves, payload: payload,
		size: size, head: head, done: make(chan appendRes, 1)})
}

// nonNil returns batch with nil entries (NULL to PostgreSQL) replaced by
// empty ones, copying it only when needed: the caller's slice is not ours.
func nonNil(batch [][]byte) [][]byte {
	for i, d := range batch {
		if d != nil {
			continue
		}
		out := append([][]byte(nil), batch...)
		for j := i; j < len(out); j++ {
			if out[j] == nil {
				out[j] = []byte{}
			}
		}
		return out
	}
	return batch
}
