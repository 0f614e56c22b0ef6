package mailstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"cspool/internal/command"
	"cspool/internal/devicedb"
)

// Changes made on this device wait, in table queue, until the log has
// them, and are shown meanwhile as if applied (docs/MAILSTORE.md, "Changes
// made on this device"). Invariants:
//
//   - The state is the log applied up to the position, then every queued
//     change applied provisionally, in queue order: each at a virtual
//     position, the one the spool gave its entry if known, else the next
//     after the position and the changes before it. A provisional apply is
//     the deterministic apply, at that position; the position never counts
//     it.
//   - A provisional apply records, through triggers (undo.go), what undoes
//     it. An apply of the log first confirms the queued changes the batch
//     starts with, at the positions they were applied at: their
//     provisional apply was their apply (same state, entry and position),
//     so only their undo records and queue rows go. If anything else comes
//     first, the rest of the queue is taken back, the log applied, and the
//     rest applied again on top, all in the apply's transaction. IMAP
//     sessions hear the difference between the state before and after,
//     never the take-back.
//   - Entry ids of queued changes are in table entries while applied
//     provisionally; EntriesSeen and EntrySeen leave them out, so the
//     change arriving from the log is not taken for a replay.
//   - UIDs (RFC 9051 section 2.3.1.1, RFC 4315): a provisional message
//     takes its mailbox's UIDNEXT like any other. Sessions may only see a
//     UID go away, never come back or stand for another message, and
//     UIDNEXT never go down, while the mailbox keeps its UIDVALIDITY. An
//     apply that takes the queue back checks exactly that, mailbox by
//     mailbox, against how things were shown before it: a place that
//     shows another message, a message added below the UIDNEXT shown
//     before, or a UIDNEXT that went down (another device added to the
//     mailbox first, or a provisional move found its message gone) gives
//     the mailbox a new UIDVALIDITY on this device, above any the log
//     gives (uidvalidity_override, from 2^31 up), and its sessions see it
//     go away and come back. So does a provisional mailbox whose
//     UIDVALIDITY comes out otherwise, unless the new one is higher.

// Queued is a change waiting for the log.
type Queued struct {
	Seq int64      // its place in the queue
	ID  command.ID // its entry id, chosen when it was queued
	Cmd *command.Command
}

// queueRow is a queue row as the apply sees it.
type queueRow struct {
	seq     int64
	id      command.ID
	cmd     []byte
	vpos    sql.NullInt64
	outcome []byte
}

// ErrQueued: the store holds changes not yet in the log, so its state is
// not the log's (Snapshot refuses to write a checkpoint of it).
var ErrQueued = errors.New("mailstore: changes made on this device are not in the log yet")

// Enqueue queues cmd as entry id and applies it provisionally, in one
// transaction: when Enqueue returns, the change is on disk and shown. The
// result's outcome is the provisional one; a change that would be rejected
// is not queued (its outcome says why), so a client hears the refusal at
// once.
func (s *Store) Enqueue(ctx context.Context, id command.ID, cmd *command.Command) (*Result, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	enc, err := command.Encode(cmd)
	if err != nil {
		return nil, fmt.Errorf("queueing a change: %w", err)
	}
	// Apply what the log will carry: the command as decoded.
	dec, err := command.Decode(enc)
	if err != nil {
		return nil, fmt.Errorf("queueing a change: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	conn, tx, end, err := s.beginWrite(ctx)
	if err != nil {
		return nil, devicedb.Explain(s.path, fmt.Errorf("queueing a change: %w", err))
	}
	defer end()
	a, done := s.writeApplier(ctx, tx, conn, end)
	defer done()
	var pos int64
	var last sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity, (SELECT max(vpos) FROM queue) FROM state").Scan(&pos, &a.nextUV, &last); err != nil {
		return nil, fmt.Errorf("reading state: %w", err)
	}
	var seq int64
	if err := tx.QueryRowContext(ctx, "INSERT INTO queue (id, cmd) VALUES (?, ?) RETURNING seq", id[:], enc).Scan(&seq); err != nil {
		return nil, fmt.Errorf("queueing a change: %w", err)
	}
	vpos := uint64(max(pos, last.Int64)) + 1
	out, changes, err := a.provisional(seq, id, dec, vpos)
	if err != nil {
		return nil, err
	}
	res := &Result{Outcomes: []Outcome{out}}
	if out.Status == Rejected {
		return res, nil // rolled back: nothing queued
	}
	if err := placedValidities(ctx, a, res.Outcomes); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, devicedb.Explain(s.path, fmt.Errorf("committing a queued change: %w", err))
	}
	end() // boundWAL takes the writer
	s.committed(ctx)
	res.Changes = changes
	return res, nil
}

// Queue returns the queued changes in order.
func (s *Store) Queue(ctx context.Context) ([]Queued, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT seq, id, cmd FROM queue ORDER BY seq")
	if err != nil {
		return nil, fmt.Errorf("reading the queue: %w", err)
	}
	defer rows.Close()
	var out []Queued
	for rows.Next() {
		var q Queued
		var id, enc []byte
		if err := rows.Scan(&q.Seq, &id, &enc); err != nil {
			return nil, fmt.Errorf("reading the queue: %w", err)
		}
		copy(q.ID[:], id)
		if q.Cmd, err = command.Decode(enc); err != nil {
			return nil, fmt.Errorf("reading queued change %d: %w", q.Seq, err)
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the queue: %w", err)
	}
	return out, nil
}

// QueueLen returns how many changes wait for the log.
func (s *Store) QueueLen(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM queue").Scan(&n); err != nil {
		return 0, fmt.Errorf("reading the queue: %w", err)
	}
	return n, nil
}

// provisional applies queued change seq at virtual position vpos with
// capture on, so the undo log records it, and keeps its outcome.
func (a *applier) provisional(seq int64, id command.ID, cmd *command.Command, vpos uint64) (Outcome, []Change, error) {
	if _, err := a.ExecContext(a.ctx, "UPDATE capture SET qseq = ?", seq); err != nil {
		return Outcome{}, nil, fmt.Errorf("applying a queued change: %w", err)
	}
	uv := a.nextUV
	out, changes, err := a.apply(Entry{Pos: vpos, ID: id, Author: AuthorUser, Cmd: cmd})
	if err != nil {
		return out, nil, fmt.Errorf("applying queued change %d: %w", seq, err)
	}
	if a.nextUV != uv {
		if _, err := a.ExecContext(a.ctx, "UPDATE state SET next_uidvalidity = ?", a.nextUV); err != nil {
			return out, nil, fmt.Errorf("applying queued change %d: %w", seq, err)
		}
	}
	if _, err := a.ExecContext(a.ctx, "UPDATE capture SET qseq = NULL"); err != nil {
		return out, nil, fmt.Errorf("applying a queued change: %w", err)
	}
	enc, err := json.Marshal(out)
	if err != nil {
		return out, nil, fmt.Errorf("applying queued change %d: %w", seq, err)
	}
	if _, err := a.ExecContext(a.ctx, "UPDATE queue SET vpos = ?, outcome = ? WHERE seq = ?", int64(vpos), enc, seq); err != nil {
		return out, nil, fmt.Errorf("applying queued change %d: %w", seq, err)
	}
	return out, changes, nil
}

func loadQueue(ctx context.Context, q queryer) ([]queueRow, error) {
	rows, err := q.QueryContext(ctx, "SELECT seq, id, cmd, vpos, outcome FROM queue ORDER BY seq")
	if err != nil {
		return nil, fmt.Errorf("reading the queue: %w", err)
	}
	defer rows.Close()
	var out []queueRow
	for rows.Next() {
		var r queueRow
		var id []byte
		if err := rows.Scan(&r.seq, &id, &r.cmd, &r.vpos, &r.outcome); err != nil {
			return nil, fmt.Errorf("reading the queue: %w", err)
		}
		copy(r.id[:], id)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the queue: %w", err)
	}
	return out, nil
}

// msgKey is a place a message can be shown at.
type msgKey struct {
	mb  command.ID
	uid UID
}

type msgVal struct {
	id    command.ID
	flags []string
}

type mbVal struct {
	name string
	uv   int64 // as shown (uidvalidity_override first)
}

// overlay is an apply's dealings with the queue, from openQueue to
// finish. It lives within one apply: ctx is the apply's, the one tx was
// begun with, kept beside tx as database/sql keeps it in a Tx.
type overlay struct {
	ctx       context.Context
	tx        *sql.Tx
	db        execQueryer // runs the statements in tx: the apply's applier, or tx
	confirmed []Outcome   // the queued changes the batch started with
	rest      []queueRow  // the queue after them
	takenBack bool        // rest was undone and must be applied again

	// What the taken-back changes touched, as shown before, and every
	// mailbox's UIDNEXT as shown before.
	msgs    map[msgKey]*msgVal
	mbs     map[command.ID]*mbVal
	uidNext map[command.ID]UID
	// placedIn are the mailboxes the taken-back changes put a message
	// in, at a UID of this device's that the log may give another.
	placedIn map[command.ID]bool
	// rewrite, if set, gives reapply the command to apply again for
	// queued change seq, entry id (UpgradeQueue).
	rewrite func(seq int64, id command.ID, cmd *command.Command) (*command.Command, error)
}

// openQueue confirms the queued changes entries start with and returns
// the entries left to apply. If any are left and the queue is not empty,
// the rest of the queue is taken back first. a is the apply's applier.
func openQueue(a *applier, entries []Entry) (*overlay, []Entry, error) {
	ctx, tx := a.ctx, a.tx
	ov := &overlay{ctx: ctx, tx: tx, db: a}
	q, err := loadQueue(ctx, a)
	if err != nil || len(q) == 0 {
		return ov, entries, err
	}
	k := 0
	for k < len(entries) && k < len(q) && entries[k].ID == q[k].id && q[k].vpos.Valid && uint64(q[k].vpos.Int64) == entries[k].Pos {
		k++
	}
	for _, r := range q[:k] {
		var out Outcome
		if err := json.Unmarshal(r.outcome, &out); err != nil {
			return nil, nil, fmt.Errorf("reading the outcome of queued change %d: %w", r.seq, err)
		}
		ov.confirmed = append(ov.confirmed, out)
	}
	if k > 0 {
		if _, err := a.ExecContext(ctx, "DELETE FROM undo WHERE qseq <= ?", q[k-1].seq); err != nil {
			return nil, nil, fmt.Errorf("confirming queued changes: %w", err)
		}
		if _, err := a.ExecContext(ctx, "DELETE FROM queue WHERE seq <= ?", q[k-1].seq); err != nil {
			return nil, nil, fmt.Errorf("confirming queued changes: %w", err)
		}
	}
	ov.rest, entries = q[k:], entries[k:]
	if len(ov.rest) > 0 && len(entries) > 0 {
		if err := ov.takeBack(); err != nil {
			return nil, nil, err
		}
	}
	return ov, entries, nil
}

// takeBack notes how the messages and mailboxes the rest of the queue
// touched are shown, then undoes it.
func (ov *overlay) takeBack() error {
	ctx, db := ov.ctx, ov.db
	first := ov.rest[0].seq
	rows, err := db.QueryContext(ctx, "SELECT mb1, uid1, mb2, uid2, mbox FROM undo WHERE qseq >= ?", first)
	if err != nil {
		return fmt.Errorf("reading the undo log: %w", err)
	}
	keys := map[msgKey]bool{}
	mbs := map[command.ID]bool{}
	ov.placedIn = map[command.ID]bool{}
	for rows.Next() {
		var mb1, mb2, mbox []byte
		var uid1, uid2 sql.NullInt64
		if err := rows.Scan(&mb1, &uid1, &mb2, &uid2, &mbox); err != nil {
			rows.Close()
			return fmt.Errorf("reading the undo log: %w", err)
		}
		for _, k := range []struct {
			mb  []byte
			uid sql.NullInt64
		}{{mb1, uid1}, {mb2, uid2}} {
			if len(k.mb) == command.IDSize && k.uid.Valid {
				var key msgKey
				copy(key.mb[:], k.mb)
				key.uid = UID(k.uid.Int64)
				keys[key] = true
			}
		}
		if len(mb2) == command.IDSize && uid2.Valid && (!bytes.Equal(mb1, mb2) || uid1 != uid2) {
			var id command.ID
			copy(id[:], mb2)
			ov.placedIn[id] = true
		}
		if len(mbox) == command.IDSize {
			var id command.ID
			copy(id[:], mbox)
			mbs[id] = true
		}
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("reading the undo log: %w", err)
	}
	if ov.msgs, err = shownMessages(ctx, db, keys); err != nil {
		return err
	}
	if ov.mbs, err = shownMailboxes(ctx, db, mbs); err != nil {
		return err
	}
	if ov.uidNext, err = uidNexts(ctx, db); err != nil {
		return err
	}
	if err := undoQueued(ctx, db, first); err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, "UPDATE queue SET vpos = NULL WHERE seq >= ?", first); err != nil {
		return fmt.Errorf("taking back queued changes: %w", err)
	}
	ov.takenBack = true
	return nil
}

// shownMessages returns the message shown at each key (nil: none).
func shownMessages(ctx context.Context, q queryer, keys map[msgKey]bool) (map[msgKey]*msgVal, error) {
	out := make(map[msgKey]*msgVal, len(keys))
	for k := range keys {
		var id []byte
		var f flagSet
		var kw string
		err := q.QueryRowContext(ctx, "SELECT m.id, m.flags, m.keywords FROM messages m JOIN mailboxes b ON b.mid = m.mailbox WHERE b.id = ? AND m.uid = ?",
			k.mb[:], int64(k.uid)).Scan(&id, &f.bits, &kw)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			out[k] = nil
		case err != nil:
			return nil, fmt.Errorf("reading a message shown: %w", err)
		default:
			v := &msgVal{}
			copy(v.id[:], id)
			f.keywords = decodeKeywords(kw)
			v.flags = f.list()
			out[k] = v
		}
	}
	return out, nil
}

// shownMailboxes returns each mailbox's name and UIDVALIDITY as shown
// (nil: it does not exist).
func shownMailboxes(ctx context.Context, q queryer, ids map[command.ID]bool) (map[command.ID]*mbVal, error) {
	out := make(map[command.ID]*mbVal, len(ids))
	for id := range ids {
		v := &mbVal{}
		err := q.QueryRowContext(ctx, "SELECT b.name, coalesce(o.uidvalidity, b.uidvalidity) FROM mailboxes b LEFT JOIN uidvalidity_override o ON o.mailbox = b.id WHERE b.id = ?",
			id[:]).Scan(&v.name, &v.uv)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			out[id] = nil
		case err != nil:
			return nil, fmt.Errorf("reading a mailbox shown: %w", err)
		default:
			out[id] = v
		}
	}
	return out, nil
}

// finish ends an apply's dealings with the queue, after the log's entries
// were applied (res holds their outcomes and changes) and the position
// moved to newPos: queued changes the log applied leave the queue, the
// rest is applied again if it was taken back, and res gets the changes
// sessions must hear.
func (ov *overlay) finish(a *applier, newPos uint64, res *Result) error {
	res.Outcomes = append(ov.confirmed, res.Outcomes...)
	if !ov.takenBack {
		// Confirmed only (and the log's entries after them, if the queue
		// is empty now): what sessions saw is what the log did.
		return nil
	}
	applied := map[command.ID]bool{}
	for _, o := range res.Outcomes {
		applied[o.Entry] = true
	}
	changes, err := ov.reapply(a, newPos, applied, res.Changes)
	if err != nil {
		return err
	}
	res.Changes = changes
	return nil
}

// reapply applies the taken-back queue again on top of the state at
// newPos, but for the changes the log has applied meanwhile (applied),
// which leave the queue, and returns what sessions must hear: the net of
// logChanges, what the log did meanwhile, and of applying the queue again
// (netChanges).
func (ov *overlay) reapply(a *applier, newPos uint64, applied map[command.ID]bool, logChanges []Change) ([]Change, error) {
	ctx, db := ov.ctx, ov.db
	var redo []Change
	vpos := newPos
	for _, r := range ov.rest {
		if applied[r.id] {
			// Sent, and applied with the log after another device's
			// entries.
			if _, err := db.ExecContext(ctx, "DELETE FROM queue WHERE seq = ?", r.seq); err != nil {
				return nil, fmt.Errorf("leaving the queue: %w", err)
			}
			continue
		}
		cmd, err := command.Decode(r.cmd)
		if err != nil {
			return nil, fmt.Errorf("reading queued change %d: %w", r.seq, err)
		}
		if ov.rewrite != nil {
			if cmd, err = ov.rewrite(r.seq, r.id, cmd); err != nil {
				return nil, err
			}
		}
		p, known, err := appendedAt(ctx, db, r.id)
		if err != nil {
			return nil, err
		}
		if known && p > vpos {
			vpos = p
		} else {
			vpos++
		}
		_, changes, err := a.provisional(r.seq, r.id, cmd, vpos)
		if err != nil {
			return nil, err
		}
		redo = append(redo, changes...)
	}
	changes, err := ov.netChanges(logChanges, redo)
	if err != nil {
		return nil, err
	}
	for i := range changes {
		changes[i].Pos = newPos
	}
	return changes, nil
}

// appendedAt returns the position the spool gave entry id, if known.
func appendedAt(ctx context.Context, q queryer, id command.ID) (uint64, bool, error) {
	var p int64
	err := q.QueryRowContext(ctx, "SELECT pos FROM appended WHERE id = ?", id[:]).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading appended entries: %w", err)
	}
	return uint64(p), true, nil
}

// uidNexts returns every mailbox's UIDNEXT.
func uidNexts(ctx context.Context, q queryer) (map[command.ID]UID, error) {
	rows, err := q.QueryContext(ctx, "SELECT id, uidnext FROM mailboxes")
	if err != nil {
		return nil, fmt.Errorf("reading mailboxes: %w", err)
	}
	defer rows.Close()
	out := map[command.ID]UID{}
	for rows.Next() {
		var b []byte
		var n int64
		if err := rows.Scan(&b, &n); err != nil {
			return nil, fmt.Errorf("reading mailboxes: %w", err)
		}
		var id command.ID
		copy(id[:], b)
		out[id] = UID(n)
	}
	return out, rows.Err()
}

// netChanges returns what sessions must hear after a take-back: for the
// places and mailboxes the taken-back changes touched, the difference
// between how they were shown before and how they are now; for the rest,
// the log's changes and those of applying the queue again, one net change
// a place. A mailbox whose UIDs shown cannot stay (see the package's
// invariants) is told as gone and back, with a new UIDVALIDITY.
func (ov *overlay) netChanges(logChanges, redo []Change) ([]Change, error) {
	ctx, tx := ov.ctx, ov.db
	keys := map[msgKey]bool{}
	for k := range ov.msgs {
		keys[k] = true
	}
	after, err := shownMessages(ctx, tx, keys)
	if err != nil {
		return nil, err
	}
	uidNext, err := uidNexts(ctx, tx)
	if err != nil {
		return nil, err
	}
	resets := map[command.ID]bool{}
	var expunged, flagged, added []Change
	// The places the taken-back changes touched.
	for k := range keys {
		b, a := ov.msgs[k], after[k]
		switch {
		case b == nil && a == nil:
		case b != nil && a == nil:
			expunged = append(expunged, Change{Kind: MessageExpunged, Mailbox: k.mb, UID: k.uid, Message: b.id})
		case b == nil:
			added = append(added, Change{Kind: MessageAdded, Mailbox: k.mb, UID: k.uid, Message: a.id, Flags: a.flags})
		case b.id != a.id:
			resets[k.mb] = true // another message at a UID shown
		case !equalStrings(b.flags, a.flags):
			flagged = append(flagged, Change{Kind: FlagsChanged, Mailbox: k.mb, UID: k.uid, Message: a.id, Flags: a.flags})
		}
	}
	// The rest as they came, but one net change a place: a message added
	// and expunged within the batch was never shown.
	var mbChanges []Change
	net := map[msgKey]*Change{}
	var order []msgKey
	for _, c := range append(append([]Change{}, logChanges...), redo...) {
		k := msgKey{c.Mailbox, c.UID}
		switch {
		case c.Kind == SubscriptionChanged || c.Kind == MailboxRestored:
			mbChanges = append(mbChanges, c)
		case c.Kind != MessageAdded && c.Kind != MessageExpunged && c.Kind != FlagsChanged:
			if _, known := ov.mbs[c.Mailbox]; !known {
				mbChanges = append(mbChanges, c)
			}
		case keys[k]:
		case net[k] == nil:
			c := c
			net[k] = &c
			order = append(order, k)
		case net[k].Kind == MessageAdded && c.Kind == MessageExpunged:
			net[k].Kind = 0 // never shown
		case net[k].Kind == MessageAdded && c.Kind == FlagsChanged:
			net[k].Flags = c.Flags
		default:
			*net[k] = c
		}
	}
	for _, k := range order {
		switch c := net[k]; c.Kind {
		case MessageAdded:
			added = append(added, *c)
		case MessageExpunged:
			expunged = append(expunged, *c)
		case FlagsChanged:
			flagged = append(flagged, *c)
		}
	}
	// A message added below the UIDNEXT shown, or a UIDNEXT gone down,
	// would let a UID shown come back for another message.
	for _, c := range added {
		if c.UID < ov.uidNext[c.Mailbox] {
			resets[c.Mailbox] = true
		}
	}
	for id, was := range ov.uidNext {
		if now, ok := uidNext[id]; ok && now < was {
			resets[id] = true
		}
	}
	// Mailboxes: as they were shown and are now.
	ids := map[command.ID]bool{}
	for id := range ov.mbs {
		ids[id] = true
	}
	for id := range resets {
		ids[id] = true
	}
	before := map[command.ID]*mbVal{}
	missing := map[command.ID]bool{}
	for id := range ids {
		if v, ok := ov.mbs[id]; ok {
			before[id] = v
		} else {
			missing[id] = true // reset for what the log did: shown as it is
		}
	}
	now, err := shownMailboxes(ctx, tx, missing)
	if err != nil {
		return nil, err
	}
	for id, v := range now {
		before[id] = v
	}
	mbAfter, err := shownMailboxes(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	gone := map[command.ID]bool{} // mailboxes whose message changes are moot
	var sorted []command.ID
	for id := range ids {
		sorted = append(sorted, id)
	}
	sort.Slice(sorted, func(i, j int) bool { return string(sorted[i][:]) < string(sorted[j][:]) })
	for _, id := range sorted {
		b, a := before[id], mbAfter[id]
		switch {
		case b != nil && a == nil:
			mbChanges = append(mbChanges, Change{Kind: MailboxDeleted, Mailbox: id, Name: b.name})
			gone[id] = true
		case b == nil && a != nil:
			// Deleted by a change taken back, and not again (a DELETE of
			// version 2 that the log kept): its sessions saw it go, and see
			// it come back. Under its UIDVALIDITY if every UID they saw in
			// it was the log's, which gives none twice, so that a client
			// (mbsync, OfflineIMAP) takes up its state of it again; a new
			// one if a taken-back change placed a message in it, at a UID
			// the log may have given another.
			if ov.placedIn[id] {
				if err := newUIDValidity(ctx, tx, id); err != nil {
					return nil, err
				}
			}
			mbChanges = append(mbChanges, Change{Kind: MailboxCreated, Mailbox: id, Name: a.name})
		case b != nil && (resets[id] || a.uv != b.uv):
			if a.uv <= b.uv {
				if err := newUIDValidity(ctx, tx, id); err != nil {
					return nil, err
				}
			}
			mbChanges = append(mbChanges,
				Change{Kind: MailboxDeleted, Mailbox: id, Name: b.name},
				Change{Kind: MailboxCreated, Mailbox: id, Name: a.name})
			gone[id] = true
		case b != nil && a.name != b.name:
			mbChanges = append(mbChanges, Change{Kind: MailboxRenamed, Mailbox: id, Name: a.name, OldName: b.name})
		}
	}
	byUID := func(cs []Change) []Change {
		cs = slices.DeleteFunc(cs, func(c Change) bool { return gone[c.Mailbox] })
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].UID < cs[j].UID })
		for i := range cs {
			if a := mbAfter[cs[i].Mailbox]; a != nil {
				cs[i].Name = a.name
			}
		}
		return cs
	}
	out := append(mbChanges, byUID(expunged)...)
	out = append(out, byUID(flagged)...)
	return append(out, byUID(added)...), nil
}

// newUIDValidity gives mailbox id a UIDVALIDITY of this device's, above
// any the log gives and any given here before.
func newUIDValidity(ctx context.Context, tx execQueryer, id command.ID) error {
	var uv int64
	if err := tx.QueryRowContext(ctx, "UPDATE local SET next_uidvalidity = next_uidvalidity + 1 RETURNING next_uidvalidity - 1").Scan(&uv); err != nil {
		return fmt.Errorf("giving out a UIDVALIDITY: %w", err)
	}
	if uv >= 1<<32 {
		return fmt.Errorf("giving out a UIDVALIDITY: this device has used up its %d", uint64(1<<31))
	}
	if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO uidvalidity_override (mailbox, uidvalidity) VALUES (?, ?)", id[:], uv); err != nil {
		return fmt.Errorf("giving out a UIDVALIDITY: %w", err)
	}
	return nil
}
