package mailstore

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"cspool/internal/chain"
	"cspool/internal/command"
)

// chainLog is a testLog that also keeps a chain hash per position (over
// the entry ids: the store does not look at what was hashed), so stores
// applying it record chain hashes as a device does.
type chainLog struct {
	testLog
	hashes []chain.Hash // hashes[p] is the chain hash at position p
}

func newChainLog() *chainLog { return &chainLog{hashes: []chain.Hash{{}}} }

// fork returns a log that shares l's first base positions and goes on
// differently.
func (l *chainLog) fork(base uint64) *chainLog {
	return &chainLog{testLog: testLog{pos: base}, hashes: slices.Clone(l.hashes[:base+1])}
}

// add hands out the next position for c by author a, with an id unique to
// this history (salt).
func (l *chainLog) add(a Author, c *command.Command, salt uint64) Entry {
	e := l.by(a, c)
	e.ID = entryID(e.Pos + salt<<32)
	l.hashes = append(l.hashes, chain.Next(l.hashes[len(l.hashes)-1], e.ID[:]))
	return e
}

// applyChain applies entries (in order, after the store's position) with
// their chain hashes.
func applyChain(t *testing.T, s *Store, l *chainLog, entries ...Entry) {
	t.Helper()
	pos, err := s.Position(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1].Pos
	if _, err := s.ApplyChained(context.Background(), entries, nil, last, l.hashes[pos+1:last+1]); err != nil {
		t.Fatalf("ApplyChained: %v", err)
	}
}

// TestRebaseAndAdopt: a restore cut the log back to position 5; one device
// (a) had applied four more entries there, another (d) two of them, a
// third (e) five, and a fourth (l), behind at 5, went on with the log the
// spool served after the restore. a rebases its history with the spool's
// and writes the state: d and l adopt it and equal a; e, which holds an
// entry a never had, is refused and told to recover itself.
func TestRebaseAndAdopt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	common := newChainLog()
	var base []Entry
	for _, s := range []string{"m1", "m2", "m3"} {
		base = append(base, common.add(AuthorSpool, deliverCmd(simpleMessage(s)), 0))
	}
	base = append(base, common.add(AuthorUser, &command.Command{Kind: command.CreateMailbox, Mailbox: "Projects"}, 0))
	projects := base[3].ID
	base = append(base, common.add(AuthorUser, &command.Command{Kind: command.Append, Mailbox: "Projects", MailboxID: projects,
		Date: 1700000000000, Body: []byte(simpleMessage("plan"))}, 0))
	m1, m2, m3 := base[0].ID, base[1].ID, base[2].ID

	// The history the restore removed.
	oldLog := common.fork(5)
	old := []Entry{
		oldLog.add(AuthorSpool, deliverCmd(simpleMessage("m4")), 1),
		oldLog.add(AuthorUser, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{m1}}, 1),
		oldLog.add(AuthorUser, &command.Command{Kind: command.Move, Mailbox: "Archive", MailboxID: wellKnownID(6), IDs: []command.ID{m2}}, 1),
		oldLog.add(AuthorUser, &command.Command{Kind: command.Append, Mailbox: "Projects", MailboxID: projects,
			Date: 1700000000001, Body: []byte(simpleMessage("budget"))}, 1),
		oldLog.add(AuthorSpool, deliverCmd(simpleMessage("m5")), 1),
	}
	// The log the spool served after the restore.
	newLog := common.fork(5)
	nh := []Entry{
		newLog.add(AuthorSpool, deliverCmd(simpleMessage("n1")), 2),
		newLog.add(AuthorUser, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{m2}}, 2),
		newLog.add(AuthorUser, &command.Command{Kind: command.Expunge, IDs: []command.ID{m3}}, 2),
		newLog.add(AuthorUser, &command.Command{Kind: command.DeleteMailbox, Mailbox: "Projects", MailboxID: projects}, 2),
	}

	open := func(history []Entry, l *chainLog) *Store {
		s := openTest(t)
		applyChain(t, s, common, base...)
		if len(history) > 0 {
			applyChain(t, s, l, history...)
		}
		return s
	}
	a := open(old[:4], oldLog)
	d := open(old[:2], oldLog)
	e := open(old, oldLog)
	l := open(nh, newLog)
	before := dump(t, a)

	rb, err := a.BeginRebase(ctx, 5, common.hashes[5])
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	res, err := rb.Apply(nh, newLog.pos, newLog.hashes[6:])
	if err != nil {
		t.Fatal(err)
	}
	if o := res.Outcomes[3]; o.Status != Rejected || o.Reason != ReasonKept {
		t.Errorf("the deletion of Projects, which the superseded history changed: %+v, want rejected as kept", o)
	}
	// The bodies only the superseded history holds: m4's and the budget.
	digests, err := rb.MissingDigests()
	if err != nil {
		t.Fatal(err)
	}
	var missing [][]byte
	for _, d := range digests {
		raw, err := rb.Body(d)
		if err != nil {
			t.Fatal(err)
		}
		missing = append(missing, raw)
	}
	if len(missing) != 2 {
		t.Fatalf("%d bodies to put back, want 2 (m4, budget)", len(missing))
	}
	var carriers []Entry
	for _, raw := range missing {
		carriers = append(carriers, newLog.add(AuthorUser, &command.Command{Kind: command.Body, Body: raw}, 2))
	}
	if _, err := rb.Apply(carriers, newLog.pos, newLog.hashes[carriers[0].Pos:]); err != nil {
		t.Fatal(err)
	}
	if left, err := rb.MissingDigests(); err != nil || len(left) != 0 {
		t.Fatalf("%d bodies still missing (%v) after the Body entries", len(left), err)
	}
	sn, renewed, err := rb.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	checkRebaseStreamed(t, rb, sn, renewed)
	if err := rb.Close(); err != nil {
		t.Fatal(err)
	}
	if d := Diff(before, dump(t, a), 5); d != nil {
		t.Fatalf("the rebase changed the store: %v", d)
	}
	if !slices.Equal(renewed, []string{"Archive", "INBOX"}) {
		t.Errorf("renewed UIDVALIDITY of %q, want Archive and INBOX (changed on both sides)", renewed)
	}
	enc, err := EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	if sn, err = DecodeSnapshot(enc); err != nil {
		t.Fatal(err)
	}
	if len(sn.Superseded) != 4*24 || sn.Position != newLog.pos || !bytes.Equal(sn.Chain, newLog.hashes[newLog.pos][:]) {
		t.Fatalf("snapshot at %d with %d superseded entries; want %d, 4 and the new chain", sn.Position, len(sn.Superseded)/24, newLog.pos)
	}

	// The spool keeps what the state names: base, the new log, the bodies.
	bodies := bodiesOf(append(append(slices.Clone(base), nh...), carriers...))
	for _, c := range carriers {
		bodies[c.Pos] = c.Cmd.Body
	}
	adopt := func(s *Store) (*Adoption, error) {
		_, ad, err := s.Adopt(ctx, sn, fetchFrom(bodies, new(int)))
		return ad, err
	}
	if err := d.RaiseAlarm(ctx, 7, "the spool's head 5 is behind position 7, which this device already applied: the log was rolled back"); err != nil {
		t.Fatal(err)
	}
	if err := d.RaiseAlarm(ctx, 3, "an alarm about the history before the restore"); err != nil {
		t.Fatal(err)
	}
	dBefore := dump(t, d)
	_, err = adopt(d)
	var u *Unexplained
	if !errors.As(err, &u) || len(u.Alarms) != 1 || u.Alarms[0].Pos != 3 {
		t.Fatalf("adopting over an alarm at position 3, before the superseded history: %v, want *Unexplained naming it", err)
	}
	if diff := Diff(dBefore, dump(t, d), 5); diff != nil {
		t.Fatalf("the refused adoption changed the store: %v", diff)
	}
	if err := d.ClearAlarms(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.RaiseAlarm(ctx, 7, "the spool's head 5 is behind position 7"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		s       *Store
		crossed bool
		cleared int
	}{
		{"the writer itself", a, true, 0},
		{"a device that applied less of the superseded history", d, true, 1},
		{"a device that followed the spool after the restore", l, false, 0},
	} {
		ad, err := adopt(tc.s)
		if err != nil {
			t.Fatalf("%s: Adopt: %v", tc.name, err)
		}
		if ad.Crossed != tc.crossed || len(ad.Cleared) != tc.cleared {
			t.Errorf("%s: crossed %v, %d alarms cleared; want %v, %d", tc.name, ad.Crossed, len(ad.Cleared), tc.crossed, tc.cleared)
		}
		if diff := Diff(dump(t, a), dump(t, tc.s), 5); diff != nil {
			t.Errorf("%s differs from the writer after adopting: %v", tc.name, diff)
		}
		checkStreamed(t, tc.s) // superseded entries, renewed UIDVALIDITYs
		checkBodiesAt(t, tc.name, tc.s, sn)
		if alarms, _ := tc.s.Alarms(ctx); len(alarms) != 0 {
			t.Errorf("%s keeps alarms %v", tc.name, alarms)
		}
	}
	st := dump(t, a)
	flags := map[command.ID][]string{}
	where := map[command.ID]string{}
	for _, m := range st.Messages {
		flags[m.ID], where[m.ID] = m.Flags, mailboxName(st, m.Mailbox)
	}
	if !slices.Equal(flags[m1], []string{`\Flagged`}) || where[m2] != "Archive" || !slices.Equal(flags[m2], []string{`\Seen`}) {
		t.Errorf("m1 %v in %s, m2 %v in %s: want m1 flagged (before the restore), m2 in Archive (before) and seen (after)",
			flags[m1], where[m1], flags[m2], where[m2])
	}
	if _, ok := where[m3]; ok {
		t.Error("m3, expunged after the restore, is back")
	}
	if where[old[0].ID] != "INBOX" || where[nh[0].ID] != "INBOX" || where[old[3].ID] != "Projects" {
		t.Errorf("m4 in %q, n1 in %q, budget in %q: want INBOX, INBOX, Projects", where[old[0].ID], where[nh[0].ID], where[old[3].ID])
	}
	// a replays the superseded history's entries no more
	if res, err := a.ApplyChained(ctx, []Entry{{Pos: sn.Position + 1, ID: old[1].ID, Author: AuthorUser, Cmd: old[1].Cmd}},
		nil, sn.Position+1, []chain.Hash{{1}}); err != nil || res.Outcomes[0].Reason != ReasonReplay {
		t.Errorf("a superseded entry served again: %v %+v, want a replay", err, res)
	}

	// e applied m5, which a never had: e is told to recover itself.
	eBefore := dump(t, e)
	_, err = adopt(e)
	var c *Contradiction
	if !errors.As(err, &c) || !strings.Contains(c.Detail, "run cspool recover on this device") {
		t.Fatalf("adopting on a device that holds more: %v, want a Contradiction asking to recover it", err)
	}
	if diff := Diff(eBefore, dump(t, e), 5); diff != nil {
		t.Fatalf("the refused adoption changed the store: %v", diff)
	}

	// A device with changes queued writes the same restoration: they are
	// no part of the history rebased.
	aq := open(old[:4], oldLog)
	if res, err := aq.Enqueue(ctx, entryID(9000), &command.Command{Kind: command.SetFlags, Flags: []string{"$Queued"}, IDs: []command.ID{m1}}); err != nil || res.Outcomes[0].Status == Rejected {
		t.Fatalf("Enqueue: %+v, %v", res, err)
	}
	rbq, err := aq.BeginRebase(ctx, 5, common.hashes[5])
	if err != nil {
		t.Fatalf("rebasing with a change queued: %v", err)
	}
	if _, err := rbq.Apply(nh, newLog.pos-uint64(len(carriers)), newLog.hashes[6:6+len(nh)]); err != nil {
		t.Fatal(err)
	}
	if _, err := rbq.Apply(carriers, newLog.pos, newLog.hashes[carriers[0].Pos:]); err != nil {
		t.Fatal(err)
	}
	snq, _, err := rbq.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	rbq.Close()
	encq, err := EncodeSnapshot(snq)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encq, enc) {
		t.Error("the restoration written by a device with a change queued differs from the one without")
	}
	if n, err := aq.QueueLen(ctx); err != nil || n != 1 {
		t.Errorf("%d changes queued after the rebase (%v), want 1", n, err)
	}

	// A device with changes of its own waiting to be sent keeps them,
	// applied again on top of the restoration (queue.go).
	q := open(nh, newLog)
	queued := []Entry{
		{ID: entryID(9001), Author: AuthorUser, Cmd: &command.Command{Kind: command.SetFlags, Flags: []string{"$Queued"}, IDs: []command.ID{m1}}},
		{ID: entryID(9002), Author: AuthorUser, Cmd: &command.Command{Kind: command.CreateMailbox, Mailbox: "Offline"}},
	}
	for _, e := range queued {
		if res, err := q.Enqueue(ctx, e.ID, e.Cmd); err != nil || res.Outcomes[0].Status == Rejected {
			t.Fatalf("Enqueue: %+v, %v", res, err)
		}
	}
	if _, err := adopt(q); err != nil {
		t.Fatalf("adopting with changes queued: %v", err)
	}
	if n, err := q.QueueLen(ctx); err != nil || n != 2 {
		t.Fatalf("%d changes queued after adopting (%v), want 2", n, err)
	}
	ref := open(nh, newLog)
	if _, err := adopt(ref); err != nil {
		t.Fatal(err)
	}
	for i := range queued {
		queued[i].Pos = sn.Position + 1 + uint64(i)
	}
	mustApply(t, ref, queued...)
	got, want := dump(t, q), dump(t, ref)
	got.Position = want.Position
	if diff := Diff(want, got, 5); diff != nil {
		t.Errorf("adopting with changes queued: not the restoration with them applied on top: %v", diff)
	}
}

// checkBodiesAt fails unless s, having restored or adopted sn, names each
// message's body where sn does: its checkpoints name the entries that now
// hold the bytes (a Body entry put back for them), not the positions they
// had in a history sn supersedes.
func checkBodiesAt(t *testing.T, name string, s *Store, sn *Snapshot) {
	t.Helper()
	got, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatalf("%s: Snapshot: %v", name, err)
	}
	at := map[string]uint64{}
	for _, m := range sn.Messages {
		at[string(m.ID)] = m.Body
	}
	for _, m := range got.Messages {
		if want, ok := at[string(m.ID)]; ok && m.Body != want {
			t.Errorf("%s names message %x's body at %d, the state it adopted at %d", name, m.ID, m.Body, want)
		}
	}
}

func mailboxName(st *State, id command.ID) string {
	for _, mb := range st.Mailboxes {
		if mb.ID == id {
			return mb.Name
		}
	}
	return ""
}

// TestSupersededCanonical: the superseded list is checked like entries,
// and no id may be both applied and superseded.
func TestSupersededCanonical(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	mustApply(t, s, (&testLog{}).spool(deliverCmd(simpleMessage("x"))))
	sn, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rec := func(id command.ID, pos byte) []byte {
		return append(id[:], 0, 0, 0, 0, 0, 0, 0, pos)
	}
	cases := []struct {
		name string
		list []byte
		ok   bool
	}{
		{"a position beyond the snapshot's", rec(entryID(9), 40), true},
		{"position 0", rec(entryID(9), 0), false},
		{"not a multiple of 24", rec(entryID(9), 4)[:23], false},
		{"an id applied too", sn.Entries, false},
		{"unsorted", append(rec(command.ID{2}, 4), rec(command.ID{1}, 4)...), false},
	}
	for _, tc := range cases {
		c := *sn
		c.Superseded = tc.list
		enc, err := EncodeSnapshot(&c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeSnapshot(enc); (err == nil) != tc.ok {
			t.Errorf("%s: DecodeSnapshot: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
