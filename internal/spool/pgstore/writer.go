package pgstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// appendReq is one Append call handed to the writer goroutine. It carries
// its caller's context, as a request does, so that the writer can answer
// a call whose caller gave up (Abandoned) instead of writing it.
type appendReq struct {
	ctx     context.Context
	user    string
	batch   [][]byte
	leaves  [][]byte
	payload string
	size    int64
	head    *uint64        // AppendAt: the head the log must have
	limit   int64          // AppendWithin, if > 0: the most the log may hold after
	key     []byte         // the spool key the store must record (nil: unchecked)
	once    *spool.Once    // AppendOnce: the request to record, or find
	done    chan appendRes // buffered: the writer never blocks on it
}

func (r *appendReq) Size() int64 { return r.size }

// Abandoned answers a call whose caller gave up before it was written.
func (r *appendReq) Abandoned() bool {
	if err := r.ctx.Err(); err != nil {
		r.done <- appendRes{err: err}
		return true
	}
	return false
}

type appendRes struct {
	first  uint64
	repeat bool // AppendOnce: the request was appended before, at first
	err    error
}

// writer is the goroutine that runs every Append of this Store. It takes the
// calls waiting at the moment (the unbuffered channel holds them blocked in
// send), up to Options.MaxGroupCount calls and Options.MaxGroupBytes bytes,
// and commits them in one transaction, hence one WAL flush.
func (s *Store) writer() {
	defer close(s.wDone)
	g := &spool.Grouper[*appendReq]{MaxCount: s.opts.MaxGroupCount, MaxBytes: s.opts.MaxGroupBytes,
		MaxLinger: s.opts.MaxGroupLinger}
	for {
		first, queued := g.Carried()
		if !queued {
			select {
			case first = <-s.reqs:
				queued = true
			default:
			}
		}
		if !queued {
			select {
			case first = <-s.reqs:
			case <-s.closed:
				return
			}
		}
		if group := g.Group(first, queued, s.reqs); len(group) > 0 {
			start := time.Now()
			s.commitGroup(group)
			g.Committed(time.Since(start))
		}
	}
}

// commitGroup writes the group and answers every call, after COMMIT has
// returned for those that succeeded.
func (s *Store) commitGroup(group []*appendReq) {
	// One lock order for every transaction of every process: the row locks
	// of users are taken in ascending order of name, so two groups cannot
	// wait for each other. Calls of one user keep their arrival order.
	sort.SliceStable(group, func(i, j int) bool { return group[i].user < group[j].user })
	firsts, errs, err := s.writeGroup(group)
	if err == nil {
		s.commits.Add(1)
	}
	logged := false // the group's key mismatch, logged once
	for i, r := range group {
		op := fmt.Sprintf("appending %d entries to %q", len(r.batch), r.user)
		switch {
		case err != nil:
			r.done <- appendRes{err: callErr(r.ctx, op, err)}
		case headMoved(errs[i]) != nil:
			moved := headMoved(errs[i])
			moved.Want = *r.head
			r.done <- appendRes{err: moved}
		case overQuota(errs[i]) != nil:
			over := overQuota(errs[i])
			over.Size, over.Limit = r.size, r.limit
			r.done <- appendRes{err: over}
		case repeated(errs[i]) != 0:
			r.done <- appendRes{first: repeated(errs[i]), repeat: true}
		case onceReused(errs[i]):
			r.done <- appendRes{err: fmt.Errorf("%s: %w", op, spool.ErrOnceReused)}
		case keyReplaced(errs[i]) != nil:
			kr := keyReplaced(errs[i])
			kr.Bound = r.key
			if !logged {
				spool.LogKeyReplaced(s.log, kr)
				logged = true
			}
			r.done <- appendRes{err: fmt.Errorf("%s: %w", op, kr)}
		case errs[i] != nil:
			r.done <- appendRes{err: callErr(r.ctx, op, errs[i])}
		default:
			r.done <- appendRes{first: firsts[i]}
			s.appends.Add(1)
			s.waiters.wake(r.user)
		}
	}
}

// errSkipped marks a call whose caller gave up before its turn in the group.
var errSkipped = errors.New("skipped")

// writeGroup runs the group in one transaction on one connection, each call
// under its own savepoint. A non-nil err means nothing was committed;
// otherwise errs[i] tells whether call i was rolled back alone.
//
// The calls are pipelined: one round trip carries "RELEASE a; SAVEPOINT a;
// SELECT cspool_append(...)" for every remaining call. When a call fails,
// the server skips the rest of that round trip; the call's savepoint is
// rolled back and the calls after it are sent again.
func (s *Store) writeGroup(group []*appendReq) (firsts []uint64, errs []error, err error) {
	// The callers' contexts must not cut a group short: each round trip is
	// bounded by the statement timeout instead.
	rt := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), s.opts.StatementTimeout+2*time.Second)
	}
	ctx, cancel := rt()
	conn, err := s.pool.Acquire(ctx)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	defer conn.Release()
	ctx, cancel = rt()
	tx, err := conn.Begin(ctx)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			rctx, cancel := rt()
			tx.Rollback(rctx)
			cancel()
		}
	}()
	firsts = make([]uint64, len(group))
	errs = make([]error, len(group))
	started := false // a savepoint exists
	for next := 0; next < len(group); {
		b := &pgx.Batch{}
		var idx []int  // group index of each queued append
		var rel []bool // whether a RELEASE precedes its SAVEPOINT
		for i := next; i < len(group); i++ {
			r := group[i]
			if r.ctx.Err() != nil {
				errs[i] = errSkipped
				continue
			}
			rel = append(rel, started)
			if started {
				b.Queue("RELEASE a")
			}
			b.Queue("SAVEPOINT a")
			started = true
			var head, limit *int64
			if r.head != nil {
				h := int64(*r.head)
				head = &h
			}
			if r.limit > 0 {
				limit = &r.limit
			}
			var once, digest []byte
			var expires *int64
			if o := r.once; o != nil {
				e := o.Expires.Unix()
				once, digest, expires = o.ID[:], o.Digest[:], &e
			}
			b.Queue(appendSQL, []byte(r.user), head, limit, r.batch, r.leaves, r.payload, r.key, once, digest, expires)
			idx = append(idx, i)
		}
		if len(idx) == 0 {
			break
		}
		failed, ferr, err := runBatch(tx, rt, b, idx, rel, firsts)
		if err != nil {
			return nil, nil, err
		}
		if failed < 0 {
			break
		}
		errs[failed] = ferr
		ctx, cancel := rt()
		_, err = tx.Exec(ctx, "ROLLBACK TO a")
		cancel()
		if err != nil {
			return nil, nil, fmt.Errorf("rolling back to savepoint: %w", err)
		}
		next = failed + 1
	}
	ctx, cancel = rt()
	err = tx.Commit(ctx)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("committing: %w", err)
	}
	for i, e := range errs {
		if errors.Is(e, errSkipped) {
			errs[i] = group[i].ctx.Err()
		}
	}
	return firsts, errs, nil
}

// runBatch sends b and reads its results into firsts. It returns the group
// index of the append that failed (-1: none) and its error; err is a
// failure of the whole group (a SAVEPOINT or RELEASE failing, or the
// connection).
func runBatch(tx pgx.Tx, rt func() (context.Context, context.CancelFunc), b *pgx.Batch, idx []int, rel []bool, firsts []uint64) (failed int, ferr, err error) {
	ctx, cancel := rt()
	defer cancel()
	br := tx.SendBatch(ctx, b)
	failed = -1
	for k, i := range idx {
		if rel[k] {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return -1, nil, fmt.Errorf("releasing savepoint: %w", err)
			}
		}
		if _, err := br.Exec(); err != nil {
			br.Close()
			return -1, nil, fmt.Errorf("savepoint: %w", err)
		}
		var first int64
		if err := br.QueryRow().Scan(&first); err != nil {
			failed, ferr = i, err
			break
		}
		firsts[i] = uint64(first)
	}
	cerr := br.Close()
	if failed >= 0 {
		if tx.Conn().IsClosed() || !isServerError(ferr) {
			return -1, nil, ferr // the connection is gone: the group failed
		}
		return failed, ferr, nil
	}
	if cerr != nil {
		return -1, nil, cerr
	}
	return -1, nil, nil
}

// headMoved returns the refusal of a conditional append that found
// another head, or nil.
func headMoved(err error) *spool.HeadMovedError {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != headMovedCode {
		return nil
	}
	h, perr := strconv.ParseUint(pe.Message, 10, 64)
	if perr != nil {
		return nil
	}
	return &spool.HeadMovedError{Head: h}
}

// overQuota returns the refusal of an append beyond its limit, with the
// usage it found, or nil.
func overQuota(err error) *spool.OverQuotaError {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != overQuotaCode {
		return nil
	}
	u, perr := strconv.ParseInt(pe.Message, 10, 64)
	if perr != nil {
		return nil
	}
	return &spool.OverQuotaError{Usage: u}
}

// repeated returns the position of the append recorded for the request
// of a call whose record cspool_append_within found, or 0.
func repeated(err error) uint64 {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != repeatCode {
		return 0
	}
	pos, _, _ := strings.Cut(pe.Message, " ")
	first, perr := strconv.ParseUint(pos, 10, 64)
	if perr != nil {
		return 0
	}
	return first
}

// onceReused tells whether err is the refusal of a call whose request id
// is recorded for another request.
func onceReused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == onceReusedCode
}

// keyReplaced returns the refusal of an append whose spool key the store
// no longer records, with the key it records, or nil.
func keyReplaced(err error) *spool.KeyReplacedError {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != keyReplacedCode {
		return nil
	}
	kr := &spool.KeyReplacedError{}
	if pe.Message != "" {
		k, herr := hex.DecodeString(pe.Message)
		if herr != nil {
			return nil
		}
		kr.Recorded = k
	}
	return kr
}

// isServerError tells whether err is an error PostgreSQL sent for one
// statement (the transaction can go on after ROLLBACK TO), rather than a
// failure of the connection.
func isServerError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

// submit hands r to the writer and waits for the commit of its group.
func (s *Store) submit(r *appendReq) appendRes {
	select {
	case s.reqs <- r:
	case <-s.closed:
		return appendRes{err: spool.ErrClosed}
	case <-r.ctx.Done():
		return appendRes{err: r.ctx.Err()}
	}
	select {
	case res := <-r.done:
		return res
	case <-r.ctx.Done():
		// The group may still commit: the outcome is unknown to the caller.
		return appendRes{err: r.ctx.Err()}
	}
}
