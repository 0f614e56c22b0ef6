package mailstore

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// The commands of version 2 wait for what their author saw. Each case is
// the log two devices write when one of them was offline: the other's
// change lands between what the offline device saw and its command.
//
//   - A DELETE names the messages in the mailbox: one another device moved
//     into it meanwhile stays, and so does the mailbox, with just that
//     message (version 1 took it with the mailbox: lost on every device).
//   - A DELETE whose mailbox another device deleted and made again falls
//     back to the name, as in version 1, but the mailbox it finds is not
//     the one its author saw: it is refused, and the new mailbox stays
//     with what was filed there, or empty.
//   - A DELETE of a mailbox its own device's APPEND made again takes the
//     appended message: the author saw it.
//   - An EXPUNGE names \Deleted and its mailbox: a message another device
//     took \Deleted off meanwhile stays, and so does one it filed
//     elsewhere with \Deleted still on (version 1 removed both, wherever
//     they were).
func TestVersion2WaitsForAuthorsView(t *testing.T) {
	ctx := context.Background()
	v2 := func(c *command.Command) *command.Command { c.Version = command.Version2; return c }

	t.Run("delete keeps what was moved in", func(t *testing.T) {
		s := openTest(t)
		l := &testLog{}
		d1, d2 := l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two")))
		mustApply(t, s, d1, d2, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Old"}),
			l.user(&command.Command{Kind: command.Move, Mailbox: "Old", IDs: []command.ID{d1.ID}}))
		old := mailboxID(t, s, "Old")
		seen := idsIn(t, s, "Old") // what the offline device shows: one
		// The other device files "two" into Old; then the DELETE lands.
		mustApply(t, s, l.user(&command.Command{Kind: command.Move, Mailbox: "Old", MailboxID: old, IDs: []command.ID{d2.ID}}))
		res := mustApply(t, s, l.user(v2(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Old", MailboxID: old, IDs: seen})))
		o := res.Outcomes[0]
		if o.Status != Partial || !slices.Equal(o.Kept, []command.ID{d2.ID}) {
			t.Fatalf("outcome %+v, want partial, keeping %s", o, d2.ID)
		}
		if got := idsIn(t, s, "Old"); !slices.Equal(got, []command.ID{d2.ID}) {
			t.Fatalf("Old holds %v, want only the message moved in, %s", got, d2.ID)
		}
		if m, _ := s.MessageByID(ctx, d1.ID, 0); m != nil {
			t.Fatal("the message the author saw is still there")
		}
		var expunged bool
		for _, c := range res.Changes {
			expunged = expunged || (c.Kind == MessageExpunged && c.Message == d1.ID)
			if c.Kind == MailboxDeleted {
				t.Fatal("the mailbox was reported deleted")
			}
		}
		if !expunged {
			t.Fatal("no EXPUNGE change for the message taken")
		}
	})

	t.Run("delete by name takes nothing of a new mailbox", func(t *testing.T) {
		for _, filed := range []bool{true, false} {
			s := openTest(t)
			l := &testLog{}
			d1 := l.spool(deliverCmd(simpleMessage("one")))
			mustApply(t, s, d1, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Box"}))
			first := mailboxID(t, s, "Box")
			// The other device deletes Box, makes it again (as an
			// archive), and files d1 there or not.
			mustApply(t, s, l.user(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Box", MailboxID: first}),
				l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Box", SpecialUse: `\Archive`}))
			var want []command.ID
			if filed {
				mustApply(t, s, l.user(&command.Command{Kind: command.Move, Mailbox: "Box", IDs: []command.ID{d1.ID}}))
				want = []command.ID{d1.ID}
			}
			// The offline device's DELETE of the Box it saw, empty: the
			// one of that name now is another, and stays, even empty.
			res := mustApply(t, s, l.user(v2(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Box", MailboxID: first})))
			if o := res.Outcomes[0]; o.Status != Rejected || o.Reason != ReasonNoMailbox {
				t.Fatalf("filed %v: outcome %+v, want rejected, no-mailbox", filed, o)
			}
			mb, err := s.MailboxByName(ctx, "Box")
			if err != nil || mb.SpecialUse != `\Archive` {
				t.Fatalf("filed %v: Box after the DELETE: %+v, %v; want the new one", filed, mb, err)
			}
			if got := idsIn(t, s, "Box"); !slices.Equal(got, want) {
				t.Fatalf("filed %v: Box holds %v, want %v", filed, got, want)
			}
		}
	})

	t.Run("delete takes its own device's append", func(t *testing.T) {
		s := openTest(t)
		l := &testLog{}
		mustApply(t, s, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Box"}))
		first := mailboxID(t, s, "Box")
		mustApply(t, s, l.user(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Box", MailboxID: first}))
		// The offline device appended into Box (by its old id) and then
		// deleted it: the append makes it again, the DELETE names the
		// message appended, and both go.
		app := l.user(&command.Command{Kind: command.Append, Mailbox: "Box", MailboxID: first, Date: 1, Body: []byte(simpleMessage("draft"))})
		del := l.user(v2(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Box", MailboxID: first, IDs: []command.ID{app.ID}}))
		res := mustApply(t, s, app, del)
		if o := res.Outcomes[1]; o.Status != Applied || len(o.Kept) != 0 {
			t.Fatalf("outcome %+v, want applied", o)
		}
		if _, err := s.MailboxByName(ctx, "Box"); err == nil {
			t.Fatal("Box is still there")
		}
	})

	t.Run("expunge keeps what lost \\Deleted", func(t *testing.T) {
		s := openTest(t)
		l := &testLog{}
		d1, d2, d3 := l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))), l.spool(deliverCmd(simpleMessage("three")))
		mustApply(t, s, d1, d2, d3, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{d1.ID, d2.ID, d3.ID}}))
		// The other device takes \Deleted off d2 and files it, and files
		// d3 with \Deleted on; then the offline device's EXPUNGE of all
		// three in INBOX lands.
		mustApply(t, s, l.user(&command.Command{Kind: command.ClearFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{d2.ID}}),
			l.user(&command.Command{Kind: command.Move, Mailbox: "Keep", IDs: []command.ID{d2.ID, d3.ID}}))
		res := mustApply(t, s, l.user(v2(&command.Command{Kind: command.Expunge, IDs: []command.ID{d1.ID, d2.ID, d3.ID},
			Flags: []string{`\Deleted`}, MailboxID: InboxID()})))
		if o := res.Outcomes[0]; o.Status != Partial || !slices.Equal(o.Kept, []command.ID{d2.ID, d3.ID}) {
			t.Fatalf("outcome %+v, want partial, keeping %s and %s", o, d2.ID, d3.ID)
		}
		if got := idsIn(t, s, "Keep"); !slices.Equal(got, []command.ID{d2.ID, d3.ID}) {
			t.Fatalf("Keep holds %v, want %s and %s", got, d2.ID, d3.ID)
		}
		if m, _ := s.MessageByID(ctx, d1.ID, 0); m != nil {
			t.Fatal("the message still \\Deleted is there")
		}
		// Version 1 is unchanged: whatever its flags, wherever it is.
		mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{d2.ID, d3.ID}}))
		if got := idsIn(t, s, "Keep"); len(got) != 0 {
			t.Fatalf("an EXPUNGE of version 1 left %v in Keep", got)
		}
	})
}

// A device of the release before queued an EXPUNGE and a DELETE of
// version 1 while held back (or offline), or this release did while the
// spool said a device of the user reads only up to format 3. Once the
// spool says every device reads format 4 (SetReaders), they are rewritten
// with the view they were made in before they are sent (UpgradeQueue);
// not before, when version 2 would stop that device. The other device's
// changes then land first in the log, and the rewritten changes keep what
// it filed: as version 1 they took it.
func TestUpgradeQueue(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	l := &testLog{}
	d1, d2, d3 := l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))), l.spool(deliverCmd(simpleMessage("three")))
	mustApply(t, s, d1, d2, d3, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Old"}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{d3.ID}}))
	old := mailboxID(t, s, "Old")
	mustApply(t, s, l.user(&command.Command{Kind: command.Move, Mailbox: "Old", MailboxID: old, IDs: []command.ID{d1.ID}}))
	// Queued as the release before wrote them.
	expunge, del := entryID(1001), entryID(1002)
	if _, err := s.Enqueue(ctx, expunge, &command.Command{Kind: command.Expunge, IDs: []command.ID{d3.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Enqueue(ctx, del, &command.Command{Kind: command.DeleteMailbox, Mailbox: "Old", MailboxID: old}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s)
	if v, err := s.Readers(ctx); err != nil || v != 0 || s.WritesVersion2(ctx) {
		t.Fatalf("a new store: Readers %d, %v; want 0, and version 1 written", v, err)
	}
	if n, err := s.SetReaders(ctx, 3); err != nil || n != 0 {
		t.Fatalf("SetReaders(3): %d rewritten, %v; want none", n, err)
	}
	if q, err := s.Queue(ctx); err != nil || len(q) != 2 || q[0].Cmd.Version != 0 || q[1].Cmd.Version != 0 {
		t.Fatalf("the queue after SetReaders(3): %v, %v; want both of version 1", q, err)
	}
	n, err := s.SetReaders(ctx, 4)
	if err != nil || n != 2 {
		t.Fatalf("SetReaders(4): %d, %v; want 2 rewritten", n, err)
	}
	if after := dump(t, s); !reflect.DeepEqual(before, after) {
		t.Fatal("the state shown changed with the rewrite")
	}
	commits := s.Commits()
	if n, err := s.SetReaders(ctx, 4); err != nil || n != 0 || s.Commits() != commits {
		t.Fatalf("SetReaders(4) again: %d, %v, %d commits; want nothing written", n, err, s.Commits()-commits)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(s.Path(), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if !s.WritesVersion2(ctx) {
		t.Fatal("the readers recorded were not kept over a reopen")
	}
	q, err := s.Queue(ctx)
	if err != nil || len(q) != 2 {
		t.Fatalf("queue %v, %v", q, err)
	}
	wantX := &command.Command{Kind: command.Expunge, Version: command.Version2, IDs: []command.ID{d3.ID}, Flags: []string{`\Deleted`}, MailboxID: InboxID()}
	wantD := &command.Command{Kind: command.DeleteMailbox, Version: command.Version2, Mailbox: "Old", MailboxID: old, IDs: []command.ID{d1.ID}}
	if !command.Equal(q[0].Cmd, wantX) || !command.Equal(q[1].Cmd, wantD) {
		t.Fatalf("queue rewritten to %+v and %+v, want %+v and %+v", q[0].Cmd, q[1].Cmd, wantX, wantD)
	}
	if n, err := s.UpgradeQueue(ctx); err != nil || n != 0 {
		t.Fatalf("UpgradeQueue again: %d, %v; want nothing to do", n, err)
	}
	// The other device: d2 filed into Old, d3 filed into Old with
	// \Deleted still on. Then the queue, as the log carries it.
	mustApply(t, s, l.user(&command.Command{Kind: command.Move, Mailbox: "Old", MailboxID: old, IDs: []command.ID{d2.ID, d3.ID}}))
	res, err := s.Apply(ctx, []Entry{{Pos: 8, ID: expunge, Author: AuthorUser, Cmd: q[0].Cmd}, {Pos: 9, ID: del, Author: AuthorUser, Cmd: q[1].Cmd}}, 9)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := s.QueueLen(ctx); n != 0 {
		t.Fatalf("%d changes still queued after the log applied them", n)
	}
	for _, o := range res.Outcomes {
		if o.Status != Partial {
			t.Errorf("outcome %+v, want partial", o)
		}
	}
	if got := idsIn(t, s, "Old"); !slices.Equal(got, []command.ID{d2.ID, d3.ID}) {
		t.Fatalf("Old holds %v, want what the other device filed, %s and %s", got, d2.ID, d3.ID)
	}
}

// idsIn lists the ids of the messages in mailbox name, nil if there is
// none of that name.
func idsIn(t *testing.T, s *Store, name string) []command.ID {
	t.Helper()
	ctx := context.Background()
	var ids []command.ID
	mb, err := s.MailboxByName(ctx, name)
	if err != nil {
		return nil
	}
	if err := s.Scan(ctx, mb.ID, 0, func(m *Message) error { ids = append(ids, m.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// flagSet.has, what an Expunge of version 2 checks each message with:
// every system flag and every keyword of the command (keywords without
// regard to case, as IMAP compares them).
func TestFlagSetHas(t *testing.T) {
	m := flagSet{bits: bitSeen | bitDeleted, keywords: []string{"$Junk", "Work"}}
	for _, tc := range []struct {
		g    flagSet
		want bool
	}{
		{flagSet{}, true},
		{flagSet{bits: bitDeleted}, true},
		{flagSet{bits: bitDeleted | bitSeen, keywords: []string{"work"}}, true},
		{flagSet{bits: bitFlagged}, false},
		{flagSet{bits: bitDeleted, keywords: []string{"Home"}}, false},
	} {
		if got := m.has(tc.g); got != tc.want {
			t.Errorf("%v has %v: %v, want %v", m, tc.g, got, tc.want)
		}
	}
}

// The rewrite shows nothing: queued changes that made a mailbox and placed
// messages in it, before a queued EXPUNGE of version 1, come back from
// UpgradeQueue's reapply as they were shown, the mailbox under its
// UIDVALIDITY and its messages at their UIDs. A new UIDVALIDITY there made
// a client that keeps state (mbsync) fail for good on that folder, on that
// device only.
func TestUpgradeQueueShowsNothing(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	l := &testLog{}
	d1, d2, d3 := l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))), l.spool(deliverCmd(simpleMessage("three")))
	mustApply(t, s, d1, d2, d3, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{d3.ID}}))
	for i, c := range []*command.Command{
		{Kind: command.CreateMailbox, Mailbox: "Offline"},
		{Kind: command.Copy, Mailbox: "Offline", IDs: []command.ID{d1.ID}},
		{Kind: command.Append, Mailbox: "Offline", Date: 5, Body: []byte(simpleMessage("a0"))},
		{Kind: command.Expunge, IDs: []command.ID{d3.ID}},
	} {
		if _, err := s.Enqueue(ctx, entryID(uint64(2001+i)), c); err != nil {
			t.Fatalf("queueing %v: %v", c.Kind, err)
		}
	}
	before := dump(t, s)
	if n, err := s.SetReaders(ctx, 4); err != nil || n != 1 {
		t.Fatalf("SetReaders(4): %d, %v; want 1 rewritten", n, err)
	}
	if d := Diff(before, dump(t, s), 10); len(d) > 0 {
		t.Fatalf("the rewrite changed what is shown:\n%s", strings.Join(d, "\n"))
	}
}

// A change sent already (the spool gave it a position, RecordAppended) is
// in the log as it was written, and applies so: the rewrite leaves it.
// Rewritten, this device applied it by another rule than every other.
func TestUpgradeQueueLeavesWhatWasSent(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	l := &testLog{}
	d1 := l.spool(deliverCmd(simpleMessage("one")))
	mustApply(t, s, d1)
	sent := entryID(3001)
	if _, err := s.Enqueue(ctx, sent, &command.Command{Kind: command.Expunge, IDs: []command.ID{d1.ID}}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAppended(ctx, []Appended{{ID: sent, Pos: 2}}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.SetReaders(ctx, 4); err != nil || n != 0 {
		t.Fatalf("SetReaders(4): %d rewritten, %v; want none", n, err)
	}
	if q, err := s.Queue(ctx); err != nil || len(q) != 1 || q[0].Cmd.Version != 0 {
		t.Fatalf("the queue: %v, %v; want the change sent, of version 1", q, err)
	}
}
