package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"cspool/internal/command"
)

// BodyFetcher supplies the bytes of the entries a Restore needs: it calls
// put once for each position in need, in any order. put checks the bytes
// against the snapshot's digest and stores them.
type BodyFetcher func(ctx context.Context, need []uint64, put func(pos uint64, raw []byte) error) error

// Restore replaces the whole replicated state with sn, in one transaction:
// a device that fell behind a compaction, or a new device, continues from
// sn.Position as if it had applied the log up to there. sn must extend what
// this store knows of the log, or Restore refuses it with a *Contradiction
// (checkHistory). Bodies the store
// already holds (same SHA-256) are reused; the others are asked of fetch.
// Local rejection records are kept. The Result lists, as Changes, how the
// state differs from before (so IMAP sessions see expunges, new messages
// and flag changes, and no UIDVALIDITY change where the mailbox is the same).
func (s *Store) Restore(ctx context.Context, sn *Snapshot, fetch BodyFetcher) (*Result, error) {
	res, _, err := s.restore(ctx, sn, fetch, false)
	return res, err
}

// restore is Restore, or Adopt when adopt is set (restoration.go).
func (s *Store) restore(ctx context.Context, sn *Snapshot, fetch BodyFetcher, adopt bool) (*Result, *Adoption, error) {
	if err := s.check(); err != nil {
		return nil, nil, err
	}
	if err := sn.check(); err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("starting restore: %w", err)
	}
	defer tx.Rollback()
	r := &restorer{ctx: ctx, tx: tx, parser: s.parser, sn: sn, adopt: adopt}
	var pos, uv int64
	if err := tx.QueryRowContext(ctx, "SELECT position, next_uidvalidity FROM state").Scan(&pos, &uv); err != nil {
		return nil, nil, fmt.Errorf("reading state: %w", err)
	}
	if !adopt && uint64(pos) >= sn.Position {
		return nil, nil, fmt.Errorf("%w: checkpoint at %d is not after position %d", ErrPosition, sn.Position, pos)
	}
	// Changes made on this device are taken back first: the checks and
	// the differences below are of the log's state (queue.go), and they
	// are applied again on top of the snapshot's.
	ov := &overlay{ctx: ctx, tx: tx, db: tx}
	if ov.rest, err = loadQueue(ctx, tx); err != nil {
		return nil, nil, err
	}
	if len(ov.rest) > 0 {
		if err := ov.takeBack(); err != nil {
			return nil, nil, err
		}
		if err := tx.QueryRowContext(ctx, "SELECT next_uidvalidity FROM state").Scan(&uv); err != nil {
			return nil, nil, fmt.Errorf("reading state: %w", err)
		}
	}
	if err := r.readOld(); err != nil {
		return nil, nil, err
	}
	cov, err := r.checkHistory(uint64(pos))
	if err != nil {
		return nil, nil, err
	}
	if uint64(uv) > uint64(sn.NextUIDValidity) {
		return nil, nil, &Contradiction{Pos: sn.Position, Detail: fmt.Sprintf(
			"the checkpoint at position %d would give out UIDVALIDITY %d again, which this device has already given out (its next is %d): its writer did not see this device's history",
			sn.Position, sn.NextUIDValidity, uv)}
	}
	ad := &Adoption{Crossed: cov.crossed, Lost: cov.lost}
	if adopt {
		if ad.Cleared, err = r.explainAlarms(cov.explainFrom); err != nil {
			return nil, nil, err
		}
	}
	if err := r.bodies(fetch); err != nil {
		return nil, nil, err
	}
	if err := r.replace(cov.crossed); err != nil {
		return nil, nil, err
	}
	upTo := sn.Position
	if cov.crossed {
		upTo = 1<<63 - 1 // every record is of the history the checkpoint supersedes
	}
	if err := forgetAppended(ctx, tx, upTo); err != nil {
		return nil, nil, err
	}
	res := r.diff()
	if ov.takenBack {
		// Queued changes the snapshot holds are in the log: they leave
		// the queue. The others apply again, on top.
		inLog := map[command.ID]bool{}
		for id := range listPositions(sn.Entries) {
			inLog[id] = true
		}
		for id := range listPositions(sn.Superseded) {
			inLog[id] = true
		}
		a := &applier{ctx: ctx, tx: tx, parser: s.parser, now: time.Now().UnixMilli(), stmts: map[string]*sql.Stmt{}}
		if err := tx.QueryRowContext(ctx, "SELECT next_uidvalidity FROM state").Scan(&a.nextUV); err != nil {
			return nil, nil, fmt.Errorf("reading state: %w", err)
		}
		if res.Changes, err = ov.reapply(a, sn.Position, inLog, res.Changes); err != nil {
			return nil, nil, err
		}
		// An appended entry of the superseded history that is still
		// queued is not lost: it is applied again and will be sent.
		ad.Lost = slices.DeleteFunc(ad.Lost, func(x Appended) bool {
			return slices.ContainsFunc(ov.rest, func(r queueRow) bool { return r.id == x.ID && !inLog[r.id] })
		})
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("committing restore to position %d: %w", sn.Position, err)
	}
	s.committed(ctx)
	return res, ad, nil
}

type oldMessage struct {
	mailbox command.ID
	uid     UID
	flags   []string
	digest  [32]byte
}

// restorer is one Restore's transaction and what it read before it. It
// lives for one call: ctx is that call's, the one tx was begun with, kept
// beside tx as database/sql keeps it in a Tx.
type restorer struct {
	ctx    context.Context
	tx     *sql.Tx
	parser Parser
	sn     *Snapshot
	adopt  bool

	oldMailboxes map[command.ID]SnapMailbox
	oldMessages  map[command.ID]oldMessage
	oldSubs      map[string]bool
	bid          map[[32]byte]int64 // digest -> body row
}

func (r *restorer) readOld() error {
	r.oldMailboxes = map[command.ID]SnapMailbox{}
	r.oldMessages = map[command.ID]oldMessage{}
	r.oldSubs = map[string]bool{}
	r.bid = map[[32]byte]int64{}
	mids := map[int64]command.ID{}
	err := dumpRows(r.ctx, r.tx, "SELECT mid, id, name, special_use, uidvalidity, uidnext FROM mailboxes", func(sc scanner) error {
		var m SnapMailbox
		var mid int64
		if err := sc.Scan(&mid, &m.ID, &m.Name, &m.SpecialUse, &m.UIDValidity, &m.UIDNext); err != nil {
			return err
		}
		var id command.ID
		copy(id[:], m.ID)
		mids[mid] = id
		r.oldMailboxes[id] = m
		return nil
	})
	if err != nil {
		return err
	}
	err = dumpRows(r.ctx, r.tx, "SELECT m.id, m.mailbox, m.uid, m.flags, m.keywords, b.digest FROM messages m JOIN bodies b ON b.bid = m.body", func(sc scanner) error {
		var idb, digest []byte
		var mid, uid int64
		var f flagSet
		var kw string
		if err := sc.Scan(&idb, &mid, &uid, &f.bits, &kw, &digest); err != nil {
			return err
		}
		var id command.ID
		copy(id[:], idb)
		f.keywords = decodeKeywords(kw)
		m := oldMessage{mailbox: mids[mid], uid: UID(uid), flags: f.list()}
		copy(m.digest[:], digest)
		r.oldMessages[id] = m
		return nil
	})
	if err != nil {
		return err
	}
	subs, err := queryStrings(r.ctx, r.tx, "SELECT name FROM subscriptions")
	if err != nil {
		return err
	}
	for _, n := range subs {
		r.oldSubs[n] = true
	}
	return dumpRows(r.ctx, r.tx, "SELECT bid, digest FROM bodies", func(sc scanner) error {
		var bid int64
		var d []byte
		if err := sc.Scan(&bid, &d); err != nil {
			return err
		}
		var k [32]byte
		copy(k[:], d)
		r.bid[k] = bid
		return nil
	})
}

// coverage is what checkHistory found: how the snapshot holds this
// store's history.
type coverage struct {
	crossed     bool       // an entry this store applied (not superseded here already) is among the snapshot's superseded ones
	explainFrom uint64     // the lowest position of an entry applied or appended here that the snapshot supersedes (0: none)
	lost        []Appended // entries appended here that a snapshot superseding this history does not hold
}

// checkHistory refuses a snapshot that does not extend what this store
// knows of the log at its position pos: every entry it applied must be in
// the snapshot's entries, or among the entries of a history a restoration
// superseded, at the same position; every entry this device appended at
// or below the snapshot's position too; and a message it holds under an id
// the snapshot also holds must have the same bytes. Anything else means
// the snapshot's writer was shown another history than this device (a
// fork), or the spool dropped this device's entry. Once the store's
// history is superseded (a restoration replaced it), an appended entry the
// snapshot does not hold is lost with that history (coverage.lost): this
// device never applied it, so no client was told it was done.
func (r *restorer) checkHistory(pos uint64) (*coverage, error) {
	cp := r.sn.Position
	in := listPositions(r.sn.Entries)
	old := listPositions(r.sn.Superseded)
	cov := &coverage{}
	superseded := func(p uint64) {
		if cov.explainFrom == 0 || p < cov.explainFrom {
			cov.explainFrom = p
		}
	}
	// what the snapshot holds at p, for the alarm
	at := func(p uint64) string {
		for id, q := range in {
			if q == p {
				return "entry " + id.String()
			}
		}
		return "no entry"
	}
	var c *Contradiction
	err := dumpRows(r.ctx, r.tx, "SELECT id, pos, old FROM entries ORDER BY pos", func(sc scanner) error {
		var idb []byte
		var p, wasOld int64
		if err := sc.Scan(&idb, &p, &wasOld); err != nil {
			return err
		}
		id := command.ID(idb)
		if q, ok := in[id]; ok && q == uint64(p) && wasOld == 0 {
			return nil
		}
		if q, ok := old[id]; ok && q == uint64(p) {
			if wasOld == 0 {
				// history this store applied, superseded now
				cov.crossed = true
				superseded(uint64(p))
			}
			return nil
		}
		detail := fmt.Sprintf(
			"the checkpoint at position %d does not hold entry %s at position %d, where this device (at position %d) applied it, but %s: the spool showed the checkpoint's writer a different history than this device (fork)",
			cp, id, p, pos, at(uint64(p)))
		if len(old) > 0 {
			detail = fmt.Sprintf(
				"the restoration at position %d neither holds nor supersedes entry %s, which this device applied at position %d: this device holds history the device that wrote the restoration did not have; run cspool recover on this device to put it back",
				cp, id, p)
		}
		c = &Contradiction{Pos: uint64(p), Detail: detail}
		return c // stops the scan
	})
	if c != nil {
		return nil, c
	}
	if err != nil {
		return nil, err
	}
	appended, err := queryAppended(r.ctx, r.tx, "SELECT id, pos FROM appended ORDER BY pos")
	if err != nil {
		return nil, err
	}
	for _, a := range appended {
		if q, ok := in[a.ID]; ok && q == a.Pos {
			continue
		}
		if q, ok := old[a.ID]; ok && q == a.Pos {
			superseded(a.Pos)
			continue
		}
		switch {
		case cov.crossed:
			cov.lost = append(cov.lost, a)
		case a.Pos <= cp:
			return nil, &Contradiction{Pos: a.Pos, Detail: fmt.Sprintf(
				"this device appended entry %s and the spool answered that it is at position %d, but the checkpoint at position %d holds %s there: the spool dropped the entry, or showed the checkpoint's writer a different history (fork)",
				a.ID, a.Pos, cp, at(a.Pos))}
		}
	}
	for _, m := range r.sn.Messages {
		old, ok := r.oldMessages[command.ID(m.ID)]
		if ok && !bytes.Equal(old.digest[:], m.Digest) {
			return nil, &Contradiction{Pos: m.Body, Detail: fmt.Sprintf(
				"the checkpoint at position %d holds message %x with other bytes than this device holds under that id: the spool showed the checkpoint's writer a different delivery than this device (fork)",
				cp, m.ID)}
		}
	}
	if !cov.crossed && r.sn.Chain != nil {
		// The same history: at the snapshot's position, the same chain.
		var mine []byte
		err := r.tx.QueryRowContext(r.ctx, "SELECT hash FROM chain WHERE pos = ?", int64(cp)).Scan(&mine)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("reading chain hash at %d: %w", cp, err)
		}
		if mine != nil && !bytes.Equal(mine, r.sn.Chain) {
			return nil, &Contradiction{Pos: cp, Detail: fmt.Sprintf(
				"the checkpoint at position %d was written over a history whose chain hash there (%x) is not this device's (%x): the spool showed its writer a different history (fork)",
				cp, r.sn.Chain[:6], mine[:6])}
		}
	}
	return cov, nil
}

// listPositions maps the ids of an encoded entry list to their positions.
func listPositions(list []byte) map[command.ID]uint64 {
	out := make(map[command.ID]uint64, len(list)/24)
	for b := list; len(b) >= 24; b = b[24:] {
		out[command.ID(b[:16])] = binary.BigEndian.Uint64(b[16:24])
	}
	return out
}

// bodies makes sure every body the snapshot names is stored, asking fetch
// for the missing ones.
func (r *restorer) bodies(fetch BodyFetcher) error {
	want := map[uint64][32]byte{} // position -> digest, for the missing
	for _, m := range r.sn.Messages {
		var d [32]byte
		copy(d[:], m.Digest)
		if _, ok := r.bid[d]; ok {
			continue
		}
		if prev, ok := want[m.Body]; ok && prev != d {
			return fmt.Errorf("%w: entry %d named with two digests", ErrSnapshot, m.Body)
		}
		want[m.Body] = d
	}
	if len(want) == 0 {
		return nil
	}
	need := make([]uint64, 0, len(want))
	for p := range want {
		need = append(need, p)
	}
	sort.Slice(need, func(i, j int) bool { return need[i] < need[j] })
	got := map[uint64]bool{}
	a := &applier{ctx: r.ctx, tx: r.tx, parser: r.parser, stmts: map[string]*sql.Stmt{}}
	put := func(pos uint64, raw []byte) error {
		d, ok := want[pos]
		if !ok || got[pos] {
			return fmt.Errorf("%w: entry %d was not asked for", ErrSnapshot, pos)
		}
		if sha256.Sum256(raw) != d {
			return fmt.Errorf("%w: entry %d does not hold the bytes the checkpoint names", ErrSnapshot, pos)
		}
		a.pos = pos
		bid, err := a.storeBody(raw)
		if err != nil {
			return err
		}
		r.bid[d] = bid
		got[pos] = true
		return nil
	}
	if err := fetch(r.ctx, need, put); err != nil {
		return fmt.Errorf("fetching message bodies: %w", err)
	}
	if len(got) != len(need) {
		return fmt.Errorf("%w: %d of %d bodies could not be fetched", ErrSnapshot, len(need)-len(got), len(need))
	}
	return nil
}

// replace writes the snapshot's state over the old one. crossed: the old
// state was of a history the snapshot supersedes, so its chain hashes are
// of that history and go.
func (r *restorer) replace(crossed bool) error {
	exec := func(q string, args ...any) error {
		if _, err := r.tx.ExecContext(r.ctx, q, args...); err != nil {
			return fmt.Errorf("restoring: %w", err)
		}
		return nil
	}
	for _, q := range []string{"DELETE FROM messages", "DELETE FROM mailboxes", "DELETE FROM subscriptions",
		"DELETE FROM keywords", "DELETE FROM entries"} {
		if err := exec(q); err != nil {
			return err
		}
	}
	mids := make([]int64, len(r.sn.Mailboxes))
	for i, mb := range r.sn.Mailboxes {
		err := r.tx.QueryRowContext(r.ctx, `INSERT INTO mailboxes (id, name, special_use, uidvalidity, uidnext, highest_modseq)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING mid`, mb.ID, mb.Name, mb.SpecialUse, mb.UIDValidity, mb.UIDNext, int64(mb.ModSeq)).Scan(&mids[i])
		if err != nil {
			return fmt.Errorf("restoring mailbox %q: %w", mb.Name, err)
		}
	}
	for _, n := range r.sn.Subscriptions {
		if err := exec("INSERT INTO subscriptions (name) VALUES (?)", n); err != nil {
			return err
		}
	}
	for _, k := range r.sn.Keywords {
		if err := exec("INSERT INTO keywords (fold, name) VALUES (?, ?)", foldKeyword(k), k); err != nil {
			return err
		}
	}
	ins, err := r.tx.PrepareContext(r.ctx, `INSERT INTO messages (id, mailbox, uid, body, date, size, flags, keywords, modseq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("restoring: %w", err)
	}
	defer ins.Close()
	for _, m := range r.sn.Messages {
		var d [32]byte
		copy(d[:], m.Digest)
		if _, err := ins.ExecContext(r.ctx, m.ID, mids[m.Mailbox], m.UID, r.bid[d], m.Date, m.Size, m.Flags, m.Keywords, int64(m.ModSeq)); err != nil {
			return fmt.Errorf("restoring message %x: %w", m.ID, err)
		}
	}
	if err := recount(r.ctx, r.tx); err != nil {
		return fmt.Errorf("restoring: %w", err)
	}
	for old, list := range [][]byte{r.sn.Entries, r.sn.Superseded} {
		for ents := list; len(ents) >= 24; ents = ents[24:] {
			if err := exec("INSERT INTO entries (id, pos, old) VALUES (?, ?, ?)", ents[:16], int64(binary.BigEndian.Uint64(ents[16:24])), old); err != nil {
				return err
			}
		}
	}
	if crossed {
		if err := exec("DELETE FROM chain"); err != nil {
			return err
		}
	}
	if r.sn.Chain != nil {
		if err := exec("INSERT OR REPLACE INTO chain (pos, hash) VALUES (?, ?)", int64(r.sn.Position), r.sn.Chain); err != nil {
			return err
		}
	}
	if r.adopt {
		return exec("UPDATE state SET position = ?, next_uidvalidity = ?, restorations = restorations + 1",
			int64(r.sn.Position), int64(r.sn.NextUIDValidity))
	}
	return exec("UPDATE state SET position = ?, next_uidvalidity = ?", int64(r.sn.Position), int64(r.sn.NextUIDValidity))
}

// diff lists, as Changes at the snapshot's position, how the new state
// differs from the old: mailboxes created first, then per mailbox the
// expunged, added (UID order) and re-flagged messages, then deleted
// mailboxes and subscription changes.
func (r *restorer) diff() *Result {
	pos := r.sn.Position
	res := &Result{}
	add := func(c Change) {
		c.Pos = pos
		res.Changes = append(res.Changes, c)
	}
	newMB := map[command.ID]SnapMailbox{}
	var created, kept []command.ID
	for _, mb := range r.sn.Mailboxes {
		var id command.ID
		copy(id[:], mb.ID)
		newMB[id] = mb
		old, ok := r.oldMailboxes[id]
		switch {
		case !ok:
			created = append(created, id)
		case old.UIDValidity != mb.UIDValidity:
			add(Change{Kind: MailboxDeleted, Mailbox: id, Name: old.Name})
			created = append(created, id)
		default:
			kept = append(kept, id)
			if old.Name != mb.Name {
				add(Change{Kind: MailboxRenamed, Mailbox: id, Name: mb.Name, OldName: old.Name})
			}
		}
	}
	for _, id := range created {
		add(Change{Kind: MailboxCreated, Mailbox: id, Name: newMB[id].Name})
	}
	keptSet := map[command.ID]bool{}
	for _, id := range kept {
		keptSet[id] = true
	}
	type msgKey struct {
		mb  command.ID
		uid UID
	}
	// Each message's index in the state, not a copy of it.
	newAt := make(map[msgKey]int32, len(r.sn.Messages))
	for i := range r.sn.Messages {
		m := &r.sn.Messages[i]
		var mb command.ID
		copy(mb[:], r.sn.Mailboxes[m.Mailbox].ID)
		newAt[msgKey{mb, UID(m.UID)}] = int32(i)
	}
	oldAt := map[msgKey]command.ID{}
	var expunged []msgKey
	for id, m := range r.oldMessages {
		k := msgKey{m.mailbox, m.uid}
		oldAt[k] = id
		if !keptSet[m.mailbox] {
			continue // its mailbox went or was replaced: no per-message changes
		}
		if n, ok := newAt[k]; !ok || !bytes.Equal(r.sn.Messages[n].ID, id[:]) {
			expunged = append(expunged, k)
		}
	}
	sort.Slice(expunged, func(i, j int) bool { return expunged[i].uid < expunged[j].uid })
	for _, k := range expunged {
		add(Change{Kind: MessageExpunged, Mailbox: k.mb, UID: k.uid, Message: oldAt[k], Name: newMB[k.mb].Name})
	}
	var added, reflagged []Change
	for k, i := range newAt {
		m := &r.sn.Messages[i]
		var id command.ID
		copy(id[:], m.ID)
		flags := flagSet{bits: m.Flags, keywords: decodeKeywords(m.Keywords)}.list()
		old, had := oldAt[k]
		switch {
		case !keptSet[k.mb] && !containsID(created, k.mb):
		case !had || old != id:
			added = append(added, Change{Kind: MessageAdded, Mailbox: k.mb, UID: k.uid, Message: id, Flags: flags, Name: newMB[k.mb].Name})
		case !equalStrings(r.oldMessages[id].flags, flags):
			reflagged = append(reflagged, Change{Kind: FlagsChanged, Mailbox: k.mb, UID: k.uid, Message: id, Flags: flags, Name: newMB[k.mb].Name})
		}
	}
	sort.Slice(added, func(i, j int) bool { return added[i].UID < added[j].UID })
	sort.Slice(reflagged, func(i, j int) bool { return reflagged[i].UID < reflagged[j].UID })
	res.Changes = slices.Grow(res.Changes, len(added)+len(reflagged)+len(r.oldMailboxes)+len(r.sn.Subscriptions)+len(r.oldSubs))
	for _, c := range added {
		add(c)
	}
	for _, c := range reflagged {
		add(c)
	}
	for id, old := range r.oldMailboxes {
		if _, ok := newMB[id]; !ok {
			add(Change{Kind: MailboxDeleted, Mailbox: id, Name: old.Name})
		}
	}
	newSubs := map[string]bool{}
	for _, n := range r.sn.Subscriptions {
		newSubs[n] = true
		if !r.oldSubs[n] {
			add(Change{Kind: SubscriptionChanged, Name: n, Subscribed: true})
		}
	}
	for n := range r.oldSubs {
		if !newSubs[n] {
			add(Change{Kind: SubscriptionChanged, Name: n})
		}
	}
	return res
}

// recountRange is how many body rows one statement of recount covers.
const recountRange = 4096

// recount makes every body's reference count the number of messages that
// use it and removes the bodies nobody uses, a range of rows at a time,
// writing only the rows that change. A statement that changes many rows
// keeps the original of every page it writes in memory until it ends (its
// statement journal, in memory with temp_store = memory; the undo
// triggers make SQLite keep one for every statement on bodies): one
// UPDATE of every body's count held a copy of the whole table, about
// 750 bytes a body, 22 MB at 30,000 (docs/MAILSTORE.md, "File and
// durability").
func recount(ctx context.Context, tx *sql.Tx) error {
	var top sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT max(bid) FROM bodies").Scan(&top); err != nil {
		return err
	}
	for lo := int64(0); lo <= top.Int64; lo += recountRange {
		hi := lo + recountRange - 1
		for _, q := range []string{
			"DELETE FROM blobs WHERE bid BETWEEN ?1 AND ?2 AND NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)",
			"DELETE FROM bodies WHERE bid BETWEEN ?1 AND ?2 AND NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)",
			`UPDATE bodies SET refs = (SELECT count(*) FROM messages WHERE body = bid)
				WHERE bid BETWEEN ?1 AND ?2 AND refs != (SELECT count(*) FROM messages WHERE body = bid)`,
		} {
			if _, err := tx.ExecContext(ctx, q, lo, hi); err != nil {
				return err
			}
		}
	}
	return nil
}

func containsID(created []command.ID, id command.ID) bool {
	for _, c := range created {
		if c == id {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
