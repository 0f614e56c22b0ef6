package mailstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// extra is what Dump leaves out but an undo must put back too: bodies
// (reference counts, origins), keyword spellings and rejections.
type extra struct {
	Bodies   map[[32]byte][2]int64 // digest -> refs, origin
	Keywords map[string]string
	Rejected map[int64]string // pos -> entry and reason
}

func extraOf(t *testing.T, s *Store) extra {
	t.Helper()
	ctx := context.Background()
	x := extra{Bodies: map[[32]byte][2]int64{}, Keywords: map[string]string{}, Rejected: map[int64]string{}}
	rows, err := s.rdb.QueryContext(ctx, "SELECT digest, refs, origin FROM bodies")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d []byte
		var refs, origin int64
		if err := rows.Scan(&d, &refs, &origin); err != nil {
			t.Fatal(err)
		}
		x.Bodies[[32]byte(d)] = [2]int64{refs, origin}
	}
	rows.Close()
	rows, err = s.rdb.QueryContext(ctx, "SELECT fold, name FROM keywords")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var f, n string
		if err := rows.Scan(&f, &n); err != nil {
			t.Fatal(err)
		}
		x.Keywords[f] = n
	}
	rows.Close()
	rows, err = s.rdb.QueryContext(ctx, "SELECT pos, hex(entry), reason FROM rejected")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int64
		var e, r string
		if err := rows.Scan(&p, &e, &r); err != nil {
			t.Fatal(err)
		}
		x.Rejected[p] = e + " " + r
	}
	rows.Close()
	return x
}

// sameState fails unless got shows what want does (the position apart
// when ignorePos: provisional changes do not move it).
func sameState(t *testing.T, what string, got, want *Store, ignorePos bool) {
	t.Helper()
	g, w := dump(t, got), dump(t, want)
	if ignorePos {
		g.Position = w.Position
	}
	if d := Diff(g, w, 10); len(d) > 0 {
		t.Fatalf("%s: the state differs from the reference:\n%v", what, d)
	}
	if ge, we := extraOf(t, got), extraOf(t, want); !reflect.DeepEqual(ge, we) {
		t.Fatalf("%s: bodies, keywords or rejections differ from the reference:\n got %+v\nwant %+v", what, ge, we)
	}
}

// copyStore is a copy of s in a new file (VACUUM INTO), open.
func copyStore(t *testing.T, s *Store) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "copy.db")
	if _, err := s.wdb.Exec("VACUUM INTO ?", path); err != nil {
		t.Fatalf("copying the store: %v", err)
	}
	c, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatalf("opening the copy: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sessionModel is what an IMAP session that selected every mailbox knows,
// kept only from the changes the store reports, and checked against the
// store: UIDs never reused or decreasing while a mailbox keeps its
// UIDVALIDITY.
type sessionModel struct {
	uids map[command.ID][]UID
	max  map[command.ID]UID // highest UID ever shown
	uv   map[command.ID]uint32
}

func newSessionModel(t *testing.T, s *Store) *sessionModel {
	m := &sessionModel{uids: map[command.ID][]UID{}, max: map[command.ID]UID{}, uv: map[command.ID]uint32{}}
	m.reload(t, s)
	return m
}

func (m *sessionModel) reload(t *testing.T, s *Store) {
	t.Helper()
	mbs, err := s.Mailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		if _, ok := m.uids[mb.ID]; ok {
			continue
		}
		m.load(t, s, mb)
	}
}

func (m *sessionModel) load(t *testing.T, s *Store, mb Mailbox) {
	t.Helper()
	uids, err := s.UIDs(context.Background(), mb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if old, ok := m.uv[mb.ID]; ok && mb.UIDValidity <= old {
		t.Fatalf("mailbox %s came back with UIDVALIDITY %d, not above %d", mb.Name, mb.UIDValidity, old)
	}
	m.uids[mb.ID], m.uv[mb.ID] = uids, mb.UIDValidity
	m.max[mb.ID] = max(mb.UIDNext-1, 0)
	if n := len(uids); n > 0 {
		m.max[mb.ID] = max(m.max[mb.ID], uids[n-1])
	}
}

// apply follows res's changes as imapd does, then compares with the store.
func (m *sessionModel) apply(t *testing.T, what string, s *Store, res *Result) {
	t.Helper()
	gone := map[command.ID]bool{}
	for _, c := range res.Changes {
		if _, known := m.uids[c.Mailbox]; !known {
			continue // not selected yet: a session loads it when it is
		}
		switch c.Kind {
		case MessageAdded:
			if c.UID <= m.max[c.Mailbox] {
				t.Fatalf("%s: UID %d added to %s, at or below %d already shown: a UID reused", what, c.UID, c.Name, m.max[c.Mailbox])
			}
			m.uids[c.Mailbox] = append(m.uids[c.Mailbox], c.UID)
			m.max[c.Mailbox] = c.UID
		case MessageExpunged:
			k := slices.Index(m.uids[c.Mailbox], c.UID)
			if k < 0 {
				t.Fatalf("%s: UID %d expunged from %s, which does not show it", what, c.UID, c.Mailbox)
			}
			m.uids[c.Mailbox] = slices.Delete(m.uids[c.Mailbox], k, k+1)
		case MailboxDeleted:
			delete(m.uids, c.Mailbox)
			gone[c.Mailbox] = true
		}
	}
	// Sessions of a deleted (or reset) mailbox select it again.
	mbs, err := s.Mailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		if _, ok := m.uids[mb.ID]; !ok {
			m.load(t, s, mb)
			continue
		}
		if mb.UIDValidity != m.uv[mb.ID] {
			t.Fatalf("%s: mailbox %s shows UIDVALIDITY %d, sessions were not told it changed from %d", what, mb.Name, mb.UIDValidity, m.uv[mb.ID])
		}
		uids, err := s.UIDs(context.Background(), mb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(uids, m.uids[mb.ID]) {
			t.Fatalf("%s: mailbox %s shows UIDs %v, the sessions heard of %v", what, mb.Name, uids, m.uids[mb.ID])
		}
		if mb.UIDNext <= m.max[mb.ID] {
			t.Fatalf("%s: mailbox %s has UIDNEXT %d, but UID %d was shown", what, mb.Name, mb.UIDNext, m.max[mb.ID])
		}
	}
}

// splitQueued splits the later entries of a log: this device writes
// some of the user's (mine, to queue), the rest come from other devices
// (and the spool) meanwhile. A device never queues an id twice, and
// nobody else can append an entry of its before it does: replays of
// those are left out of others.
func splitQueued(base, later []Entry, r *rand.Rand) (mine, others []Entry) {
	seen := map[command.ID]bool{}
	for _, e := range base {
		seen[e.ID] = true
	}
	for _, e := range later {
		if e.Author == AuthorUser && !seen[e.ID] && r.IntN(2) == 0 {
			mine = append(mine, e)
		} else {
			others = append(others, e)
		}
		seen[e.ID] = true
	}
	isMine := map[command.ID]bool{}
	for _, e := range mine {
		isMine[e.ID] = true
	}
	others = slices.DeleteFunc(others, func(e Entry) bool { return isMine[e.ID] })
	return mine, others
}

// TestQueueConverges: a device queues random changes while other devices'
// entries arrive, in random batches; after every step its state is the
// log applied and then the queue (as a fresh store computes it), what it
// told sessions matches what it shows with no UID reused, and once its own
// entries come back from the log the queue is empty and the state is the
// log's.
func TestQueueConverges(t *testing.T) {
	t.Parallel()
	// Three seeds with CSPOOL_HEAVY=1 (CI), else one: each takes minutes
	// under the race detector on a loaded 2-core machine.
	seeds := []uint64{1}
	if testproc.Heavy() {
		seeds = []uint64{1, 2, 4}
	}
	if *seedFlag != 0 {
		seeds = []uint64{*seedFlag}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			testQueueConverges(t, seed)
		})
	}
}

func testQueueConverges(t *testing.T, seed uint64) {
	ctx := context.Background()
	log := generateLog(seed, 240)
	base, later := log[:80], log[80:]
	r := rand.New(rand.NewPCG(seed, 77))
	mine, others := splitQueued(base, later, r)
	s := openTest(t)
	mustApply(t, s, base...)
	model := newSessionModel(t, s)
	var queued []Entry // mine, as queued (some refused at once)
	othersDone := 0
	// The reference is the log as the spool will have it: base, the
	// others' entries applied so far, then the queued ones. fullReference
	// applies it to a new store in one Apply. Along the way the checks
	// use reference, which is cheaper (a new store for every check made
	// the test quadratic): sofar holds base and the others' entries so
	// far, applied in the batches s got them in (an apply gives the same
	// state whatever its batches: TestDeterminism), and a copy of it takes
	// the queued entries.
	queuedAfter := func(pos uint64) []Entry {
		var es []Entry
		for _, e := range queued {
			pos++
			es = append(es, Entry{Pos: pos, ID: e.ID, Author: e.Author, Cmd: e.Cmd})
		}
		return es
	}
	fullReference := func() *Store {
		ref := openTest(t)
		mustApply(t, ref, base...)
		pos := base[len(base)-1].Pos
		var es []Entry
		for _, e := range others[:othersDone] {
			pos++
			es = append(es, Entry{Pos: pos, ID: e.ID, Author: e.Author, Cmd: e.Cmd})
		}
		es = append(es, queuedAfter(pos)...)
		if len(es) > 0 {
			mustApply(t, ref, es...)
		}
		return ref
	}
	sofar := openTest(t)
	mustApply(t, sofar, base...)
	checkReference := func(what string) {
		t.Helper()
		ref := copyStore(t, sofar)
		defer ref.Close()
		if es := queuedAfter(base[len(base)-1].Pos + uint64(othersDone)); len(es) > 0 {
			mustApply(t, ref, es...)
		}
		sameState(t, what, s, ref, true)
	}
	pos := base[len(base)-1].Pos
	applyOthers := func(n int) {
		var es []Entry
		for _, e := range others[othersDone : othersDone+n] {
			pos++
			es = append(es, Entry{Pos: pos, ID: e.ID, Author: e.Author, Cmd: e.Cmd})
		}
		res, err := s.Apply(ctx, es, pos)
		if err != nil {
			t.Fatalf("applying others' entries %d..%d: %v", othersDone, othersDone+n, err)
		}
		mustApply(t, sofar, es...)
		othersDone += n
		model.apply(t, fmt.Sprintf("after others' entries up to %d", othersDone), s, res)
		checkReference(fmt.Sprintf("after others' entries up to %d", othersDone))
	}
	for i, e := range mine {
		res, err := s.Enqueue(ctx, e.ID, e.Cmd)
		if err != nil {
			t.Fatalf("Enqueue %d (%s): %v", i, e.Cmd.Kind, err)
		}
		if res.Outcomes[0].Status != Rejected {
			queued = append(queued, e)
		}
		model.apply(t, fmt.Sprintf("after queueing %d (%s)", i, e.Cmd.Kind), s, res)
		if r.IntN(3) == 0 && othersDone < len(others) {
			applyOthers(1 + r.IntN(min(5, len(others)-othersDone)))
		}
	}
	sameState(t, "all queued", s, fullReference(), true)
	for othersDone < len(others) {
		applyOthers(1 + r.IntN(min(8, len(others)-othersDone)))
	}
	if n, _ := s.QueueLen(ctx); n != len(queued) {
		t.Fatalf("queue holds %d, want %d", n, len(queued))
	}
	// The spool takes them: they come back right after the others, in
	// batches, and are confirmed.
	for i := 0; i < len(queued); {
		n := 1 + r.IntN(min(6, len(queued)-i))
		var es []Entry
		for _, e := range queued[i : i+n] {
			pos++
			es = append(es, Entry{Pos: pos, ID: e.ID, Author: e.Author, Cmd: e.Cmd})
		}
		res, err := s.Apply(ctx, es, pos)
		if err != nil {
			t.Fatalf("applying my own entries: %v", err)
		}
		if len(res.Changes) != 0 {
			t.Fatalf("confirming my own entries told sessions of %d changes, want none: they saw them already", len(res.Changes))
		}
		for j, o := range res.Outcomes {
			if o.Entry != es[j].ID || o.Pos != es[j].Pos {
				t.Fatalf("outcome %d: entry %s at %d, want %s at %d", j, o.Entry, o.Pos, es[j].ID, es[j].Pos)
			}
		}
		i += n
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("queue holds %d after the log has them all", n)
	}
	sameState(t, "after the log has everything", s, fullReference(), false)
	var undo int
	if err := s.rdb.QueryRow("SELECT count(*) FROM undo").Scan(&undo); err != nil || undo != 0 {
		t.Fatalf("%d undo records are still kept (%v)", undo, err)
	}
}

// TestQueueUndo: taking the whole queue back gives the state before it,
// table for table.
func TestQueueUndo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := generateLog(9, 200)
	s := openTest(t)
	mustApply(t, s, log[:100]...)
	before := openTest(t)
	mustApply(t, before, log[:100]...)
	for _, e := range log[100:] {
		if e.Author != AuthorUser {
			continue
		}
		if _, err := s.Enqueue(ctx, e.ID, e.Cmd); err != nil {
			t.Fatal(err)
		}
	}
	takeBackQueue(t, s)
	sameState(t, "after undoing the whole queue", s, before, false)
}

// TestQueueUIDConflict: a message appended while offline is shown at the
// next UID; another device's delivery takes that UID in the log first.
// The mailbox gets a new UIDVALIDITY (from 2^31 up), its sessions hear it
// went away and came back, and the appended message ends at the UID the
// log gives it.
func TestQueueUIDConflict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var l testLog
	s := openTest(t)
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))))
	inbox := mailboxID(t, s, "INBOX")
	mine := entryID(1000)
	res, err := s.Enqueue(ctx, mine, &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: inbox, Date: 5, Body: []byte(simpleMessage("mine"))})
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Outcomes[0].Placed; len(p) != 1 || p[0].UID != 2 {
		t.Fatalf("provisional placement %+v, want UID 2", p)
	}
	mb, _ := s.MailboxByID(ctx, inbox)
	if mb.UIDValidity != 1 || mb.UIDNext != 3 {
		t.Fatalf("INBOX UIDVALIDITY %d UIDNEXT %d, want 1 and 3", mb.UIDValidity, mb.UIDNext)
	}
	// A flag change elsewhere does not disturb it.
	res = mustApply(t, s, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{entryID(1)}}))
	if mb, _ := s.MailboxByID(ctx, inbox); mb.UIDValidity != 1 {
		t.Fatalf("UIDVALIDITY %d after an unrelated change, want 1", mb.UIDValidity)
	}
	if len(res.Changes) != 1 || res.Changes[0].Kind != FlagsChanged {
		t.Fatalf("changes %+v, want the flag change only", res.Changes)
	}
	// Another delivery takes UID 2 in the log.
	res = mustApply(t, s, l.spool(deliverCmd(simpleMessage("two"))))
	mb, _ = s.MailboxByID(ctx, inbox)
	if mb.UIDValidity < 1<<31 {
		t.Fatalf("UIDVALIDITY %d after the log gave UID 2 to another message, want one of this device's (>= 2^31)", mb.UIDValidity)
	}
	kinds := []ChangeKind{}
	for _, c := range res.Changes {
		if c.Mailbox == inbox {
			kinds = append(kinds, c.Kind)
		}
	}
	if !slices.Equal(kinds, []ChangeKind{MailboxDeleted, MailboxCreated}) {
		t.Fatalf("INBOX changes %v, want deleted then created", kinds)
	}
	if u := uidsOf(t, s, "INBOX"); !slices.Equal(u, []UID{1, 2, 3}) {
		t.Fatalf("INBOX UIDs %v, want 1 2 3 (the delivery at 2, mine again at 3)", u)
	}
	// The log takes mine at the next position: confirmed, nothing more
	// changes, and the UIDVALIDITY stays this device's.
	res, err = s.Apply(ctx, []Entry{{Pos: 4, ID: mine, Author: AuthorUser, Cmd: &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: inbox, Date: 5, Body: []byte(simpleMessage("mine"))}}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 {
		t.Fatalf("confirming: changes %+v, want none", res.Changes)
	}
	if m, err := s.Message(ctx, inbox, 3, 0); err != nil || m.ID != mine {
		t.Fatalf("UID 3 is %v (%v), want mine", m, err)
	}
	if mb2, _ := s.MailboxByID(ctx, inbox); mb2.UIDValidity != mb.UIDValidity {
		t.Fatalf("UIDVALIDITY moved from %d to %d when the log confirmed", mb.UIDValidity, mb2.UIDValidity)
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("queue holds %d", n)
	}
}

// TestQueueRestore: a device with changes queued falls behind a compaction
// and rebuilds from a checkpoint (Restore). The queue is taken back, the
// snapshot restored, and the queue applied again on top, but for the
// changes the checkpoint holds already (sent before the connection was
// lost), which leave it; the state is the reference's, sessions hear what
// the store shows, nothing is taken for a fork, and the rest of the queue
// is confirmed when it lands.
func TestQueueRestore(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			testQueueRestore(t, seed)
		})
	}
}

func testQueueRestore(t *testing.T, seed uint64) {
	ctx := context.Background()
	log := generateLog(seed, 240)
	base, later := log[:80], log[80:]
	r := rand.New(rand.NewPCG(seed, 78))
	var mine, others []Entry
	seen := map[command.ID]bool{}
	for _, e := range base {
		seen[e.ID] = true
	}
	for _, e := range later {
		if e.Author == AuthorUser && !seen[e.ID] && r.IntN(2) == 0 {
			mine = append(mine, e)
		} else {
			others = append(others, e)
		}
		seen[e.ID] = true
	}
	isMine := map[command.ID]bool{}
	for _, e := range mine {
		isMine[e.ID] = true
	}
	others = slices.DeleteFunc(others, func(e Entry) bool { return isMine[e.ID] })

	s := openTest(t)
	mustApply(t, s, base...)
	indexAll(t, s)
	model := newSessionModel(t, s)
	var queued []Entry
	for i, e := range mine {
		res, err := s.Enqueue(ctx, e.ID, e.Cmd)
		if err != nil {
			t.Fatalf("Enqueue %d (%s): %v", i, e.Cmd.Kind, err)
		}
		if res.Outcomes[0].Status != Rejected {
			queued = append(queued, e)
		}
		model.apply(t, fmt.Sprintf("after queueing %d", i), s, res)
	}
	if len(queued) < 3 {
		t.Fatalf("only %d changes queued: the test needs more", len(queued))
	}
	// The queued changes' bodies indexed, and the rows of those they
	// deleted taken out, for the restore to take them back.
	indexAll(t, s)
	checkIndexRows(t, "with the changes queued", s)
	// The log as the spool has it: others' entries, with the first of the
	// queued changes among them.
	k := len(queued) / 3
	pos := base[len(base)-1].Pos
	renumber := func(es ...Entry) []Entry {
		out := make([]Entry, len(es))
		for i, e := range es {
			pos++
			out[i] = Entry{Pos: pos, ID: e.ID, Author: e.Author, Cmd: e.Cmd}
		}
		return out
	}
	half := len(others) / 2
	spool := append(append(renumber(others[:half]...), renumber(queued[:k]...)...), renumber(others[half:]...)...)
	writer := openTest(t)
	mustApply(t, writer, base...)
	mustApply(t, writer, spool...)
	sn, err := writer.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	res, err := s.Restore(ctx, sn, fetchFrom(bodiesOf(append(append([]Entry{}, base...), spool...)), &asked))
	if err != nil {
		t.Fatalf("Restore with %d changes queued: %v", len(queued), err)
	}
	model.apply(t, "after the restore", s, res)
	checkIndexRows(t, "after the restore", s)
	rest := renumber(queued[k:]...)
	// The reference: a device at the same position without a queue that
	// rebuilt from the same checkpoint (so it keeps the same rejection
	// records and bodies), then applied the rest of the queue as entries.
	ref := openTest(t)
	mustApply(t, ref, base...)
	if _, err := ref.Restore(ctx, sn, fetchFrom(bodiesOf(append(append([]Entry{}, base...), spool...)), &asked)); err != nil {
		t.Fatal(err)
	}
	mustApply(t, ref, rest...)
	sameState(t, "after the restore", s, ref, true)
	if n, _ := s.QueueLen(ctx); n != len(queued)-k {
		t.Fatalf("queue holds %d after the restore, want %d", n, len(queued)-k)
	}
	res, err = s.Apply(ctx, rest, pos)
	if err != nil {
		t.Fatalf("applying the rest of the queue from the log: %v", err)
	}
	if len(res.Changes) != 0 {
		t.Fatalf("confirming the rest told sessions of %d changes, want none", len(res.Changes))
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("queue holds %d after the log has it all", n)
	}
	sameState(t, "after the log has everything", s, ref, false)
	checkIndexRows(t, "after the log has everything", s)
	indexAll(t, s)
	checkIndexRows(t, "indexed after the log has everything", s)
}

// takeBackQueue undoes every queued change of s and empties the queue, in
// one transaction, as a take-back of the whole queue does.
func takeBackQueue(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := undoQueued(ctx, tx, 0); err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	if _, err := tx.Exec("DELETE FROM queue"); err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestPlacedUIDValidity: every placement carries the UIDVALIDITY its
// mailbox has as the transaction that placed it commits, also when a
// take-back later in that transaction gives the mailbox a new one (the
// delivery's UID 2 is of the new UIDVALIDITY, never of the old one), and
// when a confirmation reports a placement recorded under the old one.
func TestPlacedUIDValidity(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var l testLog
	s := openTest(t)
	inbox := InboxID()
	placed := func(what string, res *Result, want UID) Placement {
		t.Helper()
		var all []Placement
		for _, o := range res.Outcomes {
			all = append(all, o.Placed...)
		}
		if len(all) != 1 || all[0].Mailbox != inbox || all[0].UID != want {
			t.Fatalf("%s: placements %+v, want INBOX's UID %d", what, all, want)
		}
		mb, err := s.MailboxByID(ctx, inbox)
		if err != nil {
			t.Fatal(err)
		}
		if all[0].UIDValidity != mb.UIDValidity {
			t.Errorf("%s: placed under UIDVALIDITY %d, INBOX has %d", what, all[0].UIDValidity, mb.UIDValidity)
		}
		return all[0]
	}
	placed("a delivery", mustApply(t, s, l.spool(deliverCmd(simpleMessage("one")))), 1)
	mine := entryID(1000)
	cmd := &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: inbox, Date: 5, Body: []byte(simpleMessage("mine"))}
	res, err := s.Enqueue(ctx, mine, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if p := placed("an append queued", res, 2); p.UIDValidity != 1 {
		t.Errorf("an append queued: UIDVALIDITY %d, want 1", p.UIDValidity)
	}
	// The log gives UID 2 to a delivery: INBOX is made again, in the
	// same transaction, with a UIDVALIDITY of this device's.
	if p := placed("a delivery before the queued append", mustApply(t, s, l.spool(deliverCmd(simpleMessage("two")))), 2); p.UIDValidity < 1<<31 {
		t.Errorf("the delivery before the queued append: UIDVALIDITY %d, want this device's (>= 2^31)", p.UIDValidity)
	}
	l.pos++
	res, err = s.Apply(ctx, []Entry{{Pos: l.pos, ID: mine, Author: AuthorUser, Cmd: cmd}}, l.pos)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 0 {
		t.Fatalf("the queued append confirmed: changes %+v, want none", res.Changes)
	}
	placed("the queued append confirmed", res, 3)
	// A placement in a mailbox gone by the commit keeps the log's
	// UIDVALIDITY it was placed under, whatever the batches.
	res = mustApply(t, s, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Gone"}))
	if len(res.Outcomes) != 1 || res.Outcomes[0].Status != Applied {
		t.Fatalf("CREATE Gone: %+v", res.Outcomes)
	}
	gone := mailboxID(t, s, "Gone")
	es := []Entry{
		l.user(&command.Command{Kind: command.Append, Mailbox: "Gone", MailboxID: gone, Date: 5, Body: []byte(simpleMessage("gone"))}),
		l.user(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Gone", MailboxID: gone}),
	}
	mb, err := s.MailboxByID(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	res, err = s.Apply(ctx, es, es[len(es)-1].Pos)
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Outcomes[0].Placed; len(p) != 1 || p[0].UIDValidity != mb.UIDValidity {
		t.Errorf("an append to a mailbox deleted in the same batch: placements %+v, want one with UIDVALIDITY %d", p, mb.UIDValidity)
	}
}
