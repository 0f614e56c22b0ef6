package pgstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
)

// NotifyChannel is the LISTEN/NOTIFY channel appends announce themselves
// on (cspool_append in schema/0002.sql names it too). The payload is the user name in lower-case hex, or empty ("some log
// changed") when that would exceed PostgreSQL's payload limit.
const NotifyChannel = "cspool_append"

// maxNotifyName is the longest user name whose hex fits in a NOTIFY payload
// (limit 8000 bytes).
const maxNotifyName = 3900

// appendSQL appends a batch in one statement by calling
// cspool_append_within (schema/0007.sql, after schema/0002.sql to 0005):
// if $7 is not NULL, it first checks, under a shared advisory lock held
// to the group's commit, that cspool_spool_key holds $7, or fails with
// SQLSTATE keyReplacedCode, its message the recorded key in hex; then
// its update of the log's usage locks the user's row until the group's
// transaction commits (serialising appenders of that user across every
// connection); then it reads the head and the chain hash at it
// (cspool_tip); the entries take head+1..head+n, with their chain hashes,
// computed from the one at the head and the leaves ($5, SHA-256 of each
// entry). The notice is delivered to listeners at commit. On conditions:
// the head before the batch must be $2 (AppendAt, schema/0003.sql), or the
// call fails with SQLSTATE headMovedCode, its message the head found; the
// usage after it must be at most $3 (AppendWithin), or it fails with
// overQuotaCode, its message the usage before. NULL: no condition.
//
// With $8 not NULL (AppendOnce, schema/0008.sql), after reading the tip it
// records the request ($8 its id, $9 its digest, $10 when the record may
// go) in cspool_once, unless a record of $8 is there: then it fails with
// repeatCode, its message the position and count recorded, or with
// onceReusedCode if the record has another digest.
const appendSQL = `SELECT cspool_append_within($1, $2, $3, $4::bytea[], $5::bytea[], $6, $7::bytea, $8::bytea, $9::bytea, $10::bigint)`

// headMovedCode is the SQLSTATE cspool_append_at raises for another head,
// overQuotaCode the one cspool_append_within raises beyond the limit,
// keyReplacedCode the one it raises when cspool_spool_key holds another
// key than the append's.
const (
	headMovedCode   = "CSP02"
	overQuotaCode   = "CSP03"
	keyReplacedCode = "CSP04"
	repeatCode      = "CSP05"
	onceReusedCode  = "CSP06"
)

// SpoolKeyLockKey is the advisory lock an append bound to a spool key
// holds shared to its commit, and KeepSpoolKey exclusively while it reads
// and records the key ("cSp2" in ASCII; schema/0007.sql).
const SpoolKeyLockKey int64 = 0x63537032

// Append durably appends batch to user's log, atomically, and returns the
// position of its first entry. The writer goroutine runs it together with
// the other Appends waiting at the moment, in one transaction under a
// savepoint of its own (writer.go); Append returns after that COMMIT.
func (s *Store) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	res := s.append(ctx, user, batch, nil, 0, nil)
	return res.first, res.err
}

// AppendAt implements spool.HeadAppender: cspool_append_within compares
// the head under the log's row lock, inside the group's transaction.
func (s *Store) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	res := s.append(ctx, user, batch, &head, 0, nil)
	return res.first, res.err
}

// AppendWithin implements spool.Quotas: cspool_append_within compares the
// usage under the log's row lock, inside the group's transaction.
func (s *Store) AppendWithin(ctx context.Context, user string, limit int64, batch [][]byte) (uint64, error) {
	res := s.append(ctx, user, batch, nil, limit, nil)
	return res.first, res.err
}

// AppendOnce implements spool.OnceAppender: cspool_append_within looks
// for the request's record and writes it under the log's row lock, inside
// the group's transaction (schema/0008.sql).
func (s *Store) AppendOnce(ctx context.Context, user string, once spool.Once, limit int64, batch [][]byte) (uint64, bool, error) {
	res := s.append(ctx, user, batch, nil, limit, &once)
	return res.first, res.repeat, res.err
}

func (s *Store) append(ctx context.Context, user string, batch [][]byte, head *uint64, limit int64, once *spool.Once) appendRes {
	size, err := spool.CheckAppend(user, batch)
	if err != nil {
		return appendRes{err: err}
	}
	if size > s.opts.MaxAppendBytes {
		return appendRes{err: fmt.Errorf("appending %d bytes to %q (limit %d): %w", size, user, s.opts.MaxAppendBytes, spool.ErrTooLarge)}
	}
	select {
	case <-s.closed:
		return appendRes{err: spool.ErrClosed}
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
	var key []byte
	if k := s.spoolKey.Load(); k != nil {
		key = *k
		if lost := s.holdLost.Load(); lost != nil {
			return appendRes{err: fmt.Errorf("appending to %q: %w", user, lost)}
		}
	}
	return s.submit(&appendReq{ctx: ctx, user: user, batch: batch, leaves: leaves, payload: payload,
		size: size, head: head, limit: limit, key: key, once: once, done: make(chan appendRes, 1)})
}

// Appended implements spool.OnceAppender.
func (s *Store) Appended(ctx context.Context, once spool.Once) (uint64, int, error) {
	var digest []byte
	var pos int64
	var n int
	err := s.pool.QueryRow(ctx, "SELECT digest, pos, n FROM cspool_once WHERE id = $1", once.ID[:]).Scan(&digest, &pos, &n)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, 0, fmt.Errorf("looking up a request: %w", spool.ErrNotRecorded)
	case err != nil:
		return 0, 0, fmt.Errorf("looking up a request: %w", classify(err))
	case !bytes.Equal(digest, once.Digest[:]):
		return 0, 0, fmt.Errorf("looking up a request: %w", spool.ErrOnceReused)
	}
	return uint64(pos), n, nil
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
