package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cspool/internal/spool"
)

// appendReq is one Append call handed to the writer goroutine. It carries
// its caller's context, as a request does, so that the writer can answer
// a call whose caller gave up (Abandoned) instead of writing it.
type appendReq struct {
	ctx   context.Context
	user  string
	batch [][]byte
	size  int64
	done  chan appendRes // buffered: the writer never blocks on it
	// onHead: append only if the user's head is head (AppendAt).
	onHead bool
	head   uint64
	// limit > 0: append only within this usage (AppendWithin).
	limit int64
	// once: append only if no append of this request is recorded, and
	// record it (AppendOnce).
	once *spool.Once
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

// Append implements spool.Store. It hands the batch to the writer goroutine
// and waits for the commit of the group it joined.
func (s *Store) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	return s.append(ctx, &appendReq{user: user, batch: batch})
}

// AppendAt implements spool.HeadAppender: the head is compared inside the
// group's transaction, under the write lock, right before the batch would
// be written.
func (s *Store) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	return s.append(ctx, &appendReq{user: user, batch: batch, onHead: true, head: head})
}

// AppendWithin implements spool.Quotas: the usage is compared inside the
// group's transaction, under the write lock, right before the batch would
// be written.
func (s *Store) AppendWithin(ctx context.Context, user string, limit int64, batch [][]byte) (uint64, error) {
	return s.append(ctx, &appendReq{user: user, batch: batch, limit: limit})
}

// AppendOnce implements spool.OnceAppender: the record is looked for and
// written inside the group's transaction, under the write lock, right
// before the batch would be written.
func (s *Store) AppendOnce(ctx context.Context, user string, once spool.Once, limit int64, batch [][]byte) (uint64, bool, error) {
	res := s.submit(ctx, &appendReq{user: user, batch: batch, limit: limit, once: &once})
	return res.first, res.repeat, res.err
}

func (s *Store) append(ctx context.Context, r *appendReq) (uint64, error) {
	res := s.submit(ctx, r)
	return res.first, res.err
}

// submit hands r to the writer and waits for the commit of its group.
func (s *Store) submit(ctx context.Context, r *appendReq) appendRes {
	user, batch := r.user, r.batch
	size, err := spool.CheckAppend(user, batch)
	if err != nil {
		return appendRes{err: err}
	}
	if size > s.opts.MaxAppendBytes {
		return appendRes{err: fmt.Errorf("appending %d bytes (limit %d): %w", size, s.opts.MaxAppendBytes, spool.ErrTooLarge)}
	}
	if err := s.check(); err != nil {
		return appendRes{err: err}
	}
	r.ctx, r.size, r.done = ctx, size, make(chan appendRes, 1)
	select {
	case s.reqs <- r:
	case <-s.quit:
		return appendRes{err: spool.ErrClosed}
	case <-ctx.Done():
		return appendRes{err: ctx.Err()}
	}
	select {
	case res := <-r.done:
		return res
	case <-ctx.Done():
		// The group may still commit: the outcome is unknown to the caller.
		return appendRes{err: ctx.Err()}
	}
}

// writer is the only goroutine that writes. It collects the Append calls
// waiting at the moment (the unbuffered channel holds them blocked in send)
// into a group and commits the group in one transaction. Between groups it
// runs other write jobs (compactions), one at a time, each in its own
// transaction.
func (s *Store) writer() {
	defer s.bg.Done()
	g := &spool.Grouper[*appendReq]{MaxCount: s.opts.MaxGroupCount, MaxBytes: s.opts.MaxGroupBytes,
		MaxLinger: s.opts.MaxGroupLinger}
	for {
		first, queued := g.Carried()
		if !queued {
			// A call that queued during the last commit (a job as
			// likely, when both wait).
			select {
			case first = <-s.reqs:
				queued = true
			case j := <-s.jobs:
				j.run(s.wdb)
				close(j.done)
				continue
			default:
			}
		}
		if !queued {
			select {
			case first = <-s.reqs:
			case j := <-s.jobs:
				j.run(s.wdb)
				close(j.done)
				continue
			case <-s.quit:
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

// commitGroup writes the group in one transaction with a savepoint per call,
// answers every call and then wakes waiters here and in other processes.
func (s *Store) commitGroup(group []*appendReq) {
	firsts, errs, err := s.writeGroup(group)
	if err != nil {
		var kr *spool.KeyReplacedError
		if errors.As(err, &kr) {
			spool.LogKeyReplaced(s.log, kr)
		}
		err = s.dbErr("appending to spool", err)
		for _, r := range group {
			r.done <- appendRes{err: err}
		}
		return
	}
	s.stats.commits.Add(1)
	heads := map[string]uint64{}
	for i, r := range group {
		var moved *spool.HeadMovedError
		if errors.As(errs[i], &moved) {
			r.done <- appendRes{err: moved}
			continue
		}
		var over *spool.OverQuotaError
		if errors.As(errs[i], &over) {
			r.done <- appendRes{err: over}
			continue
		}
		if errs[i] == errRepeat {
			r.done <- appendRes{first: firsts[i], repeat: true}
			continue
		}
		if errors.Is(errs[i], spool.ErrOnceReused) {
			r.done <- appendRes{err: errs[i]}
			continue
		}
		if errs[i] != nil {
			r.done <- appendRes{err: s.dbErr("appending to spool", errs[i])}
			continue
		}
		s.stats.appends.Add(1)
		s.stats.entries.Add(int64(len(r.batch)))
		r.done <- appendRes{first: firsts[i]}
		heads[r.user] = max(heads[r.user], firsts[i]+uint64(len(r.batch))-1)
	}
	users := make([]string, 0, len(heads))
	for u, h := range heads {
		s.waiters.advance(u, h)
		users = append(users, u)
	}
	if s.notify != nil && len(users) > 0 {
		s.notify.send(users)
	}
}

// The statements of an append group, prepared once on the write
// connection: parsing them again for every group was an eighth of the
// writer's time, and the writer is what every delivery waits for.
const (
	savepointSQL  = "SAVEPOINT a"
	releaseSQL    = "RELEASE a"
	rollbackToSQL = "ROLLBACK TO a"
	// A user's row is read, and only for a user without one made by the
	// upsert: the upsert's no-op update wrote the row (and opened a
	// statement journal) for every append, which setHead writes again.
	getUserSQL = "SELECT id, head, chain, bytes FROM users WHERE name = ?"
	// A new row has had no read: every read of its log is recorded from
	// here, so its ReadersSince times start at the epoch (schema 8).
	upsertUserSQL = `INSERT INTO users (name, reads3_since, reads4_since) VALUES (?, 0, 0) ON CONFLICT (name) DO UPDATE SET head = head RETURNING id, head, chain, bytes`
	insEntrySQL   = "INSERT INTO entries (user_id, pos, size, data) VALUES (?, ?, ?, ?)"
	insChainSQL   = "INSERT INTO chain (user_id, pos, hash) VALUES (?, ?, ?)"
	setHeadSQL    = "UPDATE users SET head = ?, chain = ?, bytes = bytes + ? WHERE id = ?"
	spoolKeySQL   = "SELECT key FROM spool_key"
	// AppendOnce's record, the one it finds instead, and the expired
	// records a group drops (spool.OncePrune for each it records).
	insOnceSQL   = "INSERT INTO once (id, digest, pos, n, expires) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
	getOnceSQL   = "SELECT digest, pos, n FROM once WHERE id = ?"
	pruneOnceSQL = "DELETE FROM once WHERE id IN (SELECT id FROM (SELECT id, expires FROM once ORDER BY id LIMIT ?) WHERE expires < ?)"
)

// writeStmts are the prepared statements of an append group, on the write
// connection, or bound to one transaction (in).
type writeStmts struct {
	savepoint, release, rollbackTo, getUser, insEntry, insChain, setHead, spoolKey *sql.Stmt
	insOnce, getOnce, pruneOnce                                                    *sql.Stmt
	// upsertUser is bound to a transaction only when a group appends for
	// a user without a row (newUser).
	upsertUser *sql.Stmt
	tx         *sql.Tx     // the transaction bound to, for newUser
	base       *writeStmts // the statements on the connection, for newUser
}

func (w *writeStmts) all() []**sql.Stmt {
	return []**sql.Stmt{&w.savepoint, &w.release, &w.rollbackTo, &w.getUser, &w.insEntry, &w.insChain, &w.setHead, &w.spoolKey,
		&w.insOnce, &w.getOnce, &w.pruneOnce}
}

func prepareWrite(ctx context.Context, db *sql.DB) (*writeStmts, error) {
	w := &writeStmts{}
	st, err := db.PrepareContext(ctx, upsertUserSQL)
	if err != nil {
		return nil, fmt.Errorf("preparing %q: %w", upsertUserSQL, classify(err))
	}
	w.upsertUser = st
	for i, q := range []string{savepointSQL, releaseSQL, rollbackToSQL, getUserSQL, insEntrySQL, insChainSQL, setHeadSQL, spoolKeySQL,
		insOnceSQL, getOnceSQL, pruneOnceSQL} {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			w.close()
			return nil, fmt.Errorf("preparing %q: %w", q, classify(err))
		}
		*w.all()[i] = st
	}
	return w, nil
}

// onceStmts is how many of all() (the last) only AppendOnce's calls use.
const onceStmts = 3

// in returns the statements bound to tx (on the same connection: no
// statement is prepared again); AppendOnce's only with once, so that a
// group without such calls binds no more than before.
func (w *writeStmts) in(ctx context.Context, tx *sql.Tx, once bool) *writeStmts {
	b := &writeStmts{tx: tx, base: w}
	all, bound := w.all(), b.all()
	if !once {
		all = all[:len(all)-onceStmts]
	}
	for i, p := range all {
		*bound[i] = tx.StmtContext(ctx, *p)
	}
	return b
}

// newUser is the upsert of a user's row, bound to w's transaction.
func (w *writeStmts) newUser(ctx context.Context) *sql.Stmt {
	if w.upsertUser == nil {
		w.upsertUser = w.tx.StmtContext(ctx, w.base.upsertUser)
	}
	return w.upsertUser
}

func (w *writeStmts) close() error {
	var errs []error
	for _, p := range append(w.all(), &w.upsertUser) {
		if *p != nil {
			errs = append(errs, (*p).Close())
		}
	}
	return errors.Join(errs...)
}

// writeGroup runs the transaction. A non-nil err means nothing was
// committed; otherwise errs[i] tells whether call i was rolled back alone.
// A Store bound to a spool key (KeepSpoolKey) first reads the recorded
// one, under the write lock that every writer of the file, in any
// process, takes for the whole transaction: if it is another, the group
// fails with a *spool.KeyReplacedError and nothing is written.
func (s *Store) writeGroup(group []*appendReq) (firsts []uint64, errs []error, err error) {
	ctx := context.Background()        // callers' contexts must not cut a commit short
	tx, err := s.wdb.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return nil, nil, fmt.Errorf("starting transaction: %w", err)
	}
	defer tx.Rollback()
	once := 0
	for _, r := range group {
		if r.once != nil {
			once++
		}
	}
	st := s.wstmts.in(ctx, tx, once > 0)
	if key := s.spoolKey.Load(); key != nil {
		var recorded []byte
		err := st.spoolKey.QueryRowContext(ctx).Scan(&recorded)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, nil, fmt.Errorf("reading the spool key: %w", err)
		}
		if !bytes.Equal(recorded, *key) {
			return nil, nil, &spool.KeyReplacedError{Recorded: recorded, Bound: *key}
		}
	}
	if once > 0 {
		if _, err := st.pruneOnce.ExecContext(ctx, once*spool.OncePrune, steadyNow(s.opened, time.Since(s.opened), time.Now())); err != nil {
			return nil, nil, fmt.Errorf("dropping expired request records: %w", err)
		}
	}
	firsts = make([]uint64, len(group))
	errs = make([]error, len(group))
	for i, r := range group {
		if _, err := st.savepoint.ExecContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("savepoint: %w", err)
		}
		firsts[i], errs[i] = appendOne(ctx, st, r)
		if errs[i] != nil {
			if _, err := st.rollbackTo.ExecContext(ctx); err != nil {
				return nil, nil, fmt.Errorf("rolling back to savepoint: %w", err)
			}
		}
		if _, err := st.release.ExecContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("releasing savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("committing: %w", err)
	}
	return firsts, errs, nil
}

// appendOne appends one call's batch after the user's head, with the chain
// hash of every entry computed from the hash kept on the user's row. The
// write transaction serialises it with every other append, in this process
// and in others, so the chain stays dense and follows the positions.
func appendOne(ctx context.Context, st *writeStmts, r *appendReq) (uint64, error) {
	name := []byte(r.user)
	var id int64
	var head uint64
	var prev []byte
	var usage int64
	err := st.getUser.QueryRowContext(ctx, name).Scan(&id, &head, &prev, &usage)
	if errors.Is(err, sql.ErrNoRows) {
		err = st.newUser(ctx).QueryRowContext(ctx, name).Scan(&id, &head, &prev, &usage)
	}
	if err != nil {
		return 0, fmt.Errorf("finding user: %w", err)
	}
	if r.once != nil {
		if pos, err := recordOnce(ctx, st, r, head+1); err != nil {
			return pos, err
		}
	}
	if r.limit > 0 && usage+r.size > r.limit {
		// The savepoint's rollback also takes back a row just created.
		return 0, &spool.OverQuotaError{Usage: usage, Size: r.size, Limit: r.limit}
	}
	var h spool.Hash
	if len(prev) != len(h) {
		return 0, fmt.Errorf("user's chain hash has %d bytes", len(prev))
	}
	copy(h[:], prev)
	if r.onHead && head != r.head {
		return 0, &spool.HeadMovedError{Want: r.head, Head: head}
	}
	first := head + 1
	for i, d := range r.batch {
		if d == nil {
			d = []byte{} // NOT NULL: an empty entry is a zero-length blob
		}
		if _, err := st.insEntry.ExecContext(ctx, id, first+uint64(i), len(d), d); err != nil {
			return 0, fmt.Errorf("inserting entry %d: %w", first+uint64(i), err)
		}
	}
	h, err = chainRows(ctx, st.insChain, id, first, h, r.batch)
	if err != nil {
		return 0, err
	}
	last := first + uint64(len(r.batch)) - 1
	if _, err := st.setHead.ExecContext(ctx, last, h[:], r.size, id); err != nil {
		return 0, fmt.Errorf("advancing head: %w", err)
	}
	return first, nil
}

// errRepeat: appendOne found the request's record (AppendOnce); its
// position was returned with it.
var errRepeat = errors.New("the request was appended before")

// recordOnce records r's request as appended at first, or returns the
// position of the append recorded for it before with errRepeat (or
// spool.ErrOnceReused): then the call's savepoint is rolled back.
func recordOnce(ctx context.Context, st *writeStmts, r *appendReq, first uint64) (uint64, error) {
	o := r.once
	res, err := st.insOnce.ExecContext(ctx, o.ID[:], o.Digest[:], first, len(r.batch), o.Expires.Unix())
	if err != nil {
		return 0, fmt.Errorf("recording the request: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return 0, err
	}
	var digest []byte
	var pos uint64
	var count int
	if err := st.getOnce.QueryRowContext(ctx, o.ID[:]).Scan(&digest, &pos, &count); err != nil {
		return 0, fmt.Errorf("reading the request's record: %w", err)
	}
	if !bytes.Equal(digest, o.Digest[:]) {
		return 0, fmt.Errorf("appending to log: %w", spool.ErrOnceReused)
	}
	return pos, errRepeat
}

// Appended implements spool.OnceAppender.
func (s *Store) Appended(ctx context.Context, once spool.Once) (uint64, int, error) {
	if err := s.check(); err != nil {
		return 0, 0, err
	}
	var digest []byte
	var pos uint64
	var count int
	err := s.rdb.QueryRowContext(ctx, getOnceSQL, once.ID[:]).Scan(&digest, &pos, &count)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, 0, fmt.Errorf("looking up a request: %w", spool.ErrNotRecorded)
	case err != nil:
		return 0, 0, s.dbErr("looking up a request", err)
	case !bytes.Equal(digest, once.Digest[:]):
		return 0, 0, fmt.Errorf("looking up a request: %w", spool.ErrOnceReused)
	}
	return pos, count, nil
}

// steadyNow is the time by which request records are dropped (Unix
// seconds): the wall clock's reading now, but never ahead of the store's
// opening plus the time since by the monotonic clock (elapsed). A wall
// clock stepped forward dropped every record at once; stepped back again,
// a request captured before was within the API's window, and nothing
// remembered that its delivery was appended. A clock set right forward
// keeps records longer by the step, until the next start.
func steadyNow(opened time.Time, elapsed time.Duration, wall time.Time) int64 {
	return min(wall.Unix(), opened.Add(elapsed).Unix())
}
