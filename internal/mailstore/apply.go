package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"cspool/internal/chain"
	"cspool/internal/command"
	"cspool/internal/devicedb"
)

// SpoolSigned reports whether entries hold one signed by the spool key
// recorded (not by the previous one, Entry.Previous): applied, it makes
// the recorded key the log's (SpoolKeyUsed).
func SpoolSigned(entries []Entry) bool {
	return spoolSignedAt(entries) != 0
}

// spoolSignedAt is the position of the first of entries signed by the
// spool key recorded; 0: none.
func spoolSignedAt(entries []Entry) uint64 {
	i := slices.IndexFunc(entries, func(e Entry) bool { return e.Author == AuthorSpool && !e.Previous })
	if i < 0 {
		return 0
	}
	return entries[i].Pos
}

// rejection is returned by a command's apply step when the entry must be
// rejected; the entry's savepoint is rolled back, so it changed nothing.
type rejection struct {
	reason Reason
	detail string
}

func (r *rejection) Error() string { return string(r.reason) + ": " + r.detail }

func reject(reason Reason, format string, args ...any) error {
	return &rejection{reason: reason, detail: fmt.Sprintf(format, args...)}
}

// applier carries one Apply's transaction and what it has done so far.
// It lives for one call: ctx is that call's, the one tx was begun with,
// kept beside tx as database/sql keeps it in a Tx.
type applier struct {
	ctx    context.Context
	tx     *sql.Tx
	parser Parser
	nextUV int64 // next UIDVALIDITY to assign
	now    int64 // Unix ms, for rejection records only

	stmts map[string]*sql.Stmt // prepared on first use, closed with tx
	// writer, when tx is a transaction on the store's writer: its
	// statements are then prepared once for the store's life instead of
	// once per transaction (parsing SQL was most of a small Apply).
	// unprepared lists those not yet prepared there, for prepareAll
	// once tx is over.
	writer     *Store
	unprepared []string
	// conn is the connection tx runs on, when the applier has it: large
	// bodies are then stored in pieces (blob.go).
	conn *sql.Conn

	rebase *rebaseRules // inside a Rebase (restoration.go), else nil

	// inbox is INBOX's row while only deliveries apply one after the
	// other (they change its UIDNEXT and modseq, through nextUID, which
	// keeps the row up to date); any other command, and a rejection's
	// rollback, forget it.
	inbox *mailboxRow

	// per entry
	// wrote: the entry ran a statement other than a SELECT (apply
	// checks that an entry without a savepoint was not rejected after
	// one)
	wrote    bool
	pos      uint64
	entry    command.ID
	out      *Outcome
	changes  []Change
	prepared *Prepared // the entry's, if made before Apply
}

// Apply applies entries in order and records newPos as the last applied
// position, all in one SQLite transaction: after a crash or an error either
// everything is applied or nothing. Entries must have increasing positions
// after the current one, and newPos must be at least the last of them (it
// may be larger when the caller skipped positions, e.g. entries that would
// not open, which ApplyChained records). A rejected entry does not stop the
// batch: it is recorded and reported in the Result.
func (s *Store) Apply(ctx context.Context, entries []Entry, newPos uint64) (*Result, error) {
	return s.ApplyChained(ctx, entries, nil, newPos, nil)
}

// ApplyChained is Apply that also records, in the same transaction, the
// entries of the batch that would not open and the log's chain hash at each
// position the batch covers. unopened are the positions the caller skipped
// because their entries would not open (bad signature, unknown author,
// undecodable), each with its Reason and Detail (Entry and At are not
// read), after the old position and up to newPos: they are recorded as
// rejected, as RecordRejected does. chain[i] is the hash at position
// oldPos+1+i, for every position up to newPos (rejected and unreadable
// entries included), or nil to record none.
func (s *Store) ApplyChained(ctx context.Context, entries []Entry, unopened []Rejection, newPos uint64, chain []chain.Hash) (*Result, error) {
	res, err := s.applyChained(ctx, entries, unopened, newPos, chain)
	return res, devicedb.Explain(s.path, err)
}

func (s *Store) applyChained(ctx context.Context, entries []Entry, unopened []Rejection, newPos uint64, chain []chain.Hash) (*Result, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	settle := false // the commit left a checkpoint to make (wal.go, "After the apply")
	defer func() {
		if settle {
			s.settleAfter(ctx)
			return
		}
		s.mu.Unlock()
	}()
	if err := s.check(); err != nil {
		return nil, err
	}
	conn, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("starting apply: %w", err)
	}
	defer end()
	if err := s.writerForApply(ctx, tx); err != nil {
		return nil, err
	}
	var pos int64
	a, done := s.writeApplier(ctx, tx, conn, end)
	defer done()
	if err := tx.QueryRowContext(ctx, "SELECT position FROM state").Scan(&pos); err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	last, err := ascending(entries, uint64(pos))
	if err != nil {
		return nil, err
	}
	if newPos < last {
		return nil, fmt.Errorf("new position %d before entry position %d: %w", newPos, last, ErrPosition)
	}
	for _, r := range unopened {
		if r.Pos <= uint64(pos) || r.Pos > newPos {
			return nil, fmt.Errorf("unopened entry at position %d outside positions %d to %d: %w", r.Pos, pos+1, newPos, ErrPosition)
		}
	}
	spoolSigned := spoolSignedAt(entries)
	// Changes made on this device: those the batch starts with are
	// confirmed; before anything else, the rest is taken back (queue.go).
	ov, entries, err := openQueue(a, entries)
	if err != nil {
		return nil, err
	}
	res, err := a.applyAll(entries)
	if err != nil {
		return nil, err
	}
	for _, r := range unopened {
		if err := insertRejection(ctx, a, r.Pos, nil, r.Reason, r.Detail, a.now); err != nil {
			return nil, err
		}
	}
	if err := checkAppended(ctx, tx, newPos); err != nil {
		return nil, err
	}
	if chain != nil {
		if uint64(len(chain)) != newPos-uint64(pos) {
			return nil, fmt.Errorf("%d chain hashes for positions %d to %d: %w", len(chain), pos+1, newPos, ErrPosition)
		}
		if err := a.recordChain(pos+1, chain); err != nil {
			return nil, err
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE state SET position = ?, next_uidvalidity = ?", int64(newPos), a.nextUV); err != nil {
		return nil, fmt.Errorf("recording position %d: %w", newPos, err)
	}
	if spoolSigned != 0 {
		// The recorded spool key signed an entry of the log: it is the
		// log's (SpoolKeyUsed), and its first entry is the cutover after
		// which the previous key's are refused (SpoolKeyCutover). One
		// row, written once.
		if _, err := tx.ExecContext(ctx, "UPDATE local SET spool_key_used = 1, spool_key_cutover = ? WHERE spool_key_used = 0", int64(spoolSigned)); err != nil {
			return nil, fmt.Errorf("recording the spool key as used: %w", err)
		}
	}
	if err := ov.finish(a, newPos, res); err != nil {
		return nil, err
	}
	if err := placedValidities(ctx, a, res.Outcomes); err != nil {
		return nil, err
	}
	if err := a.setAutoCheckpoint(len(entries)+len(unopened) >= bulkEntries); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("committing apply up to position %d: %w", newPos, err)
	}
	end() // a checkpoint takes the writer
	s.commits.Add(1)
	settle = s.checkpointDue(ctx)
	return res, nil
}

// placedValidities sets the UIDVALIDITY of every placement in outs to
// its mailbox's as shown in the transaction q, read once the transaction
// has made all its changes: a take-back later in the same transaction may
// give the mailbox a new one, under which the UIDs stay. A placement in a
// mailbox gone by then keeps the log's UIDVALIDITY it was placed under
// (the log never gives a mailbox id another one, so its outcome is the
// same whatever the batches).
func placedValidities(ctx context.Context, q queryer, outs []Outcome) error {
	uvs := map[command.ID]int64{}
	for i := range outs {
		for j := range outs[i].Placed {
			p := &outs[i].Placed[j]
			uv, ok := uvs[p.Mailbox]
			if !ok {
				err := q.QueryRowContext(ctx, "SELECT "+validityOf+" FROM mailboxes WHERE id = ?", p.Mailbox[:]).Scan(&uv)
				if errors.Is(err, sql.ErrNoRows) {
					uv = -1
				} else if err != nil {
					return fmt.Errorf("reading the UIDVALIDITY of mailbox %s: %w", p.Mailbox, err)
				}
				uvs[p.Mailbox] = uv
			}
			if uv >= 0 {
				p.UIDValidity = uint32(uv)
			}
		}
	}
	return nil
}

// recordChain records the chain hashes of positions first, first+1, ...
// in one statement: the hashes travel as one blob, cut in SQL.
func (a *applier) recordChain(first int64, hashes []chain.Hash) error {
	if len(hashes) == 0 {
		return nil
	}
	all := make([]byte, 0, len(hashes)*len(chain.Hash{}))
	for _, h := range hashes {
		all = append(all, h[:]...)
	}
	const size = len(chain.Hash{})
	if _, err := a.ExecContext(a.ctx, `WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?)
		INSERT INTO chain (pos, hash) SELECT ? + n, substr(?, n * ? + 1, ?) FROM i`,
		len(hashes), first, all, size, size); err != nil {
		return fmt.Errorf("recording chain hashes: %w", err)
	}
	return nil
}

// ascending checks that entries come in strictly ascending positions, all
// after position after, and returns the last one (after, when there are
// none).
func ascending(entries []Entry, after uint64) (uint64, error) {
	last := after
	for _, e := range entries {
		if e.Pos <= last {
			return 0, fmt.Errorf("entry at position %d after position %d: %w", e.Pos, last, ErrPosition)
		}
		last = e.Pos
	}
	return last, nil
}

// applyAll reads the next UIDVALIDITY to assign and applies entries in
// order, gathering their outcomes and changes.
func (a *applier) applyAll(entries []Entry) (*Result, error) {
	if err := a.tx.QueryRowContext(a.ctx, "SELECT next_uidvalidity FROM state").Scan(&a.nextUV); err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	res := &Result{Outcomes: make([]Outcome, 0, len(entries))}
	for i := 0; i < len(entries); {
		if n := deliverRunLen(entries[i:]); n >= 2 && a.rebase == nil {
			// Outside a rebase (which applies each on its own), a run of
			// deliveries at once (apply_deliver.go).
			outs, changes, err := a.deliverRun(entries[i : i+n])
			if err != nil {
				return nil, fmt.Errorf("applying entries at positions %d to %d: %w", entries[i].Pos, entries[i+n-1].Pos, err)
			}
			res.Outcomes = append(res.Outcomes, outs...)
			res.Changes = append(res.Changes, changes...)
			i += n
			continue
		}
		e := entries[i]
		out, changes, err := a.apply(e)
		if err != nil {
			return nil, fmt.Errorf("applying entry at position %d: %w", e.Pos, err)
		}
		res.Outcomes = append(res.Outcomes, out)
		res.Changes = append(res.Changes, changes...)
		i++
	}
	return res, nil
}

// apply applies one entry inside its own savepoint.
func (a *applier) apply(e Entry) (Outcome, []Change, error) {
	out := Outcome{Pos: e.Pos, Entry: e.ID}
	if e.Cmd != nil {
		out.Kind = e.Cmd.Kind
	}
	// The entry's id is recorded at its first position, so a later entry
	// with the same id is a replay. An invalid or forbidden entry served
	// again is rejected for the same reason; its id stays at its first
	// position.
	rej := a.authorize(e)
	fresh, err := a.markSeen(e)
	if err != nil {
		return out, nil, err
	}
	if rej == nil && !fresh {
		rej = a.replayed(e)
	}
	if rej != nil {
		return out, nil, a.recordRejection(&out, rej)
	}
	// Most entries are rejected, if at all, before they write anything
	// (writesAfterChecks; what fails after that fails the whole Apply):
	// they need no savepoint, which costs two statements and a copy of
	// every page the entry changes (the sub-journal), a fifth of a
	// delivery's apply. For an entry that changes many messages that copy
	// grew with each, and each statement that added to it walked SQLite's
	// in-memory journal from its start to truncate it at its end: an
	// EXPUNGE of 5,000 messages took 22.6 s and a DELETE of a mailbox of
	// 20,000 over ten minutes (TestBulkDeletesWithoutSavepoint); a COPY
	// of 20,000 took 25.5 s, a MOVE 16.9 s (TestBulkOpsWithoutSavepoint).
	savepoint := !writesAfterChecks[e.Cmd.Kind]
	if savepoint {
		if _, err := a.ExecContext(a.ctx, "SAVEPOINT entry"); err != nil {
			return out, nil, fmt.Errorf("savepoint: %w", err)
		}
	}
	a.pos, a.entry, a.out, a.changes, a.prepared = e.Pos, e.ID, &out, nil, e.Prepared
	a.wrote = false
	err = a.dispatch(e.Cmd)
	if errors.As(err, &rej) {
		if !savepoint && a.wrote {
			return out, nil, fmt.Errorf("entry at position %d rejected (%v) after it wrote without a savepoint", e.Pos, rej)
		}
		if savepoint {
			for _, q := range []string{"ROLLBACK TO entry", "RELEASE entry"} {
				if _, err := a.ExecContext(a.ctx, q); err != nil {
					return out, nil, fmt.Errorf("rolling back rejected entry: %w", err)
				}
			}
		}
		out.Skipped, out.Placed, out.Kept, a.inbox = nil, nil, nil, nil
		return out, nil, a.recordRejection(&out, rej)
	}
	if err != nil {
		return out, nil, err
	}
	if savepoint {
		if _, err := a.ExecContext(a.ctx, "RELEASE entry"); err != nil {
			return out, nil, fmt.Errorf("releasing savepoint: %w", err)
		}
	}
	if len(out.Skipped) > 0 || len(out.Kept) > 0 {
		out.Status = Partial
	}
	return out, a.changes, nil
}

// authorize returns the rejection of an entry that may not be applied at
// all: no valid command, an author beyond its rights, a replayed id.
func (a *applier) authorize(e Entry) *rejection {
	if e.Cmd == nil {
		return &rejection{ReasonInvalid, "entry without a command"}
	}
	if err := e.Cmd.Validate(); err != nil {
		return &rejection{ReasonInvalid, err.Error()}
	}
	switch e.Author {
	case AuthorUser:
	case AuthorSpool:
		if e.Cmd.Kind != command.Deliver {
			return &rejection{ReasonForbidden, "the spool may only deliver, not " + e.Cmd.Kind.String()}
		}
	default:
		return &rejection{ReasonForbidden, fmt.Sprintf("unknown author %d", int(e.Author))}
	}
	return nil
}

// writeApplier returns an applier for the write transaction tx on the
// writer's connection conn, and what to defer: end, then the statements
// first met in tx prepared on the writer, once the transaction is over
// and its connection given back.
func (s *Store) writeApplier(ctx context.Context, tx *sql.Tx, conn *sql.Conn, end func()) (*applier, func()) {
	a := &applier{ctx: ctx, tx: tx, parser: s.parser, now: time.Now().UnixMilli(), stmts: map[string]*sql.Stmt{}, writer: s, conn: conn}
	return a, func() {
		end()
		s.prepareAll(ctx, a.unprepared)
	}
}

// markSeen records the entry id at the entry's position unless it was
// seen before; fresh reports whether it was recorded now (one statement
// for the lookup and the record).
func (a *applier) markSeen(e Entry) (fresh bool, err error) {
	r, err := a.ExecContext(a.ctx, "INSERT OR IGNORE INTO entries (id, pos) VALUES (?, ?)", e.ID[:], int64(e.Pos))
	if err != nil {
		return false, fmt.Errorf("recording entry id: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("recording entry id: %w", err)
	}
	return n == 1, nil
}

// replayed is the rejection of an entry whose id was seen before.
func (a *applier) replayed(e Entry) *rejection {
	var pos int64
	if err := a.QueryRowContext(a.ctx, "SELECT pos FROM entries WHERE id = ?", e.ID[:]).Scan(&pos); err != nil {
		return &rejection{ReasonReplay, fmt.Sprintf("entry id %s already seen", e.ID)}
	}
	return &rejection{ReasonReplay, fmt.Sprintf("entry id %s already seen at position %d", e.ID, pos)}
}

func (a *applier) recordRejection(out *Outcome, rej *rejection) error {
	out.Status, out.Reason, out.Detail = Rejected, rej.reason, rej.detail
	return insertRejection(a.ctx, a, out.Pos, &out.Entry, rej.reason, rej.detail, a.now)
}

func (a *applier) dispatch(c *command.Command) error {
	if c.Kind != command.Deliver {
		a.inbox = nil
	}
	switch c.Kind {
	case command.Deliver:
		return a.deliver(c)
	case command.Append:
		return a.appendMessage(c)
	case command.SetFlags, command.ClearFlags, command.ReplaceFlags:
		return a.flags(c)
	case command.Copy:
		return a.copyMessages(c)
	case command.Move:
		return a.moveMessages(c)
	case command.Expunge:
		return a.expunge(c)
	case command.CreateMailbox:
		return a.createMailbox(c)
	case command.RenameMailbox:
		return a.renameMailbox(c)
	case command.DeleteMailbox:
		return a.deleteMailbox(c)
	case command.Subscribe, command.Unsubscribe:
		return a.subscribe(c)
	case command.Checkpoint:
		return nil // a marker in the log; the state does not change
	case command.Body:
		return a.bodyBack(c)
	case command.Restoration:
		// The syncer adopts its state (Adopt) before applying it; here it
		// only takes its place in the log, right after the position its
		// state is at, or it is stale.
		if c.Position+1 != a.pos {
			return reject(ReasonInvalid, "a restoration of the state at position %d is stale at position %d", c.Position, a.pos)
		}
		return nil
	}
	return reject(ReasonInvalid, "unknown command kind %d", c.Kind)
}

// writesAfterChecks are the command kinds whose apply rejects an entry,
// if at all, before its first write, and so runs without a savepoint:
// newMessage looks a Deliver's id up first; an Expunge and a flag change
// reject nothing; deleteMailbox checks the mailbox first; a Copy or Move
// creates its target, if missing, before it places a message, and
// createWithParents checks every id it will take before it creates
// anything (checkCreate), as renameMailbox does before it renames.
var writesAfterChecks = map[command.Kind]bool{
	command.Deliver: true, command.Expunge: true, command.DeleteMailbox: true,
	command.SetFlags: true, command.ClearFlags: true, command.ReplaceFlags: true,
	command.Copy: true, command.Move: true, command.RenameMailbox: true,
}

func (a *applier) change(c Change) {
	c.Pos = a.pos
	a.changes = append(a.changes, c)
}

// stmt returns the prepared form of query, preparing it on first use: an
// Apply runs the same few statements thousands of times.
func (a *applier) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if a.writer != nil && a.writer.traceStmt != nil {
		a.writer.traceStmt(query)
	}
	if !a.wrote && !strings.HasPrefix(strings.TrimSpace(query), "SELECT") {
		a.wrote = true
	}
	if st, ok := a.stmts[query]; ok {
		return st, nil
	}
	var st *sql.Stmt
	if a.writer != nil {
		if ws, ok := a.writer.prepared.Load(query); ok {
			// Bound to tx's connection, where database/sql prepared it
			// once (again only on a new connection).
			st = a.tx.StmtContext(ctx, ws.(*sql.Stmt))
		} else {
			a.unprepared = append(a.unprepared, query)
		}
	}
	if st == nil {
		var err error
		if st, err = a.tx.PrepareContext(ctx, query); err != nil {
			return nil, err
		}
	}
	a.stmts[query] = st
	return st, nil
}

// prepareAll prepares queries on the writer for the transactions to come,
// with s.mu held and no transaction open (the writer has one connection:
// preparing on it inside a transaction would wait for itself). A query
// that does not prepare is left for each transaction to prepare again.
func (s *Store) prepareAll(ctx context.Context, queries []string) {
	for _, q := range queries {
		if _, ok := s.prepared.Load(q); ok {
			continue
		}
		if st, err := s.wdb.PrepareContext(ctx, q); err == nil {
			s.prepared.Store(q, st)
		}
	}
}

// ExecContext, QueryContext and QueryRowContext run prepared statements in
// the Apply's transaction; with them an applier is a queryer.
func (a *applier) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := a.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (a *applier) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := a.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (a *applier) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := a.stmt(ctx, query)
	if err != nil {
		// A Row carrying the error: preparing again on the transaction
		// reports it through Scan.
		return a.tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}
