package mailstore

import (
	"context"
	"reflect"
	"testing"

	"cspool/internal/command"
)

// step is one entry of a test log; cmd may refer to earlier entries' ids.
type step struct {
	author Author
	cmd    func(id func(pos uint64) command.ID) *command.Command
}

func user(c func(id func(uint64) command.ID) *command.Command) step    { return step{AuthorUser, c} }
func bySpool(c func(id func(uint64) command.ID) *command.Command) step { return step{AuthorSpool, c} }
func fixed(c *command.Command) func(func(uint64) command.ID) *command.Command {
	return func(func(uint64) command.ID) *command.Command { return c }
}

func deliverStep(subject string) step { return bySpool(fixed(deliverCmd(simpleMessage(subject)))) }

func appendCmd(mailbox string, flags ...string) *command.Command {
	return &command.Command{Kind: command.Append, Mailbox: mailbox, Flags: flags, Date: 1700000001000, Body: []byte(simpleMessage("appended"))}
}

func idsCmd(kind command.Kind, mailbox string, flags []string, positions ...uint64) func(func(uint64) command.ID) *command.Command {
	return func(id func(uint64) command.ID) *command.Command {
		c := &command.Command{Kind: kind, Mailbox: mailbox, Flags: flags}
		for _, p := range positions {
			c.IDs = append(c.IDs, id(p))
		}
		return c
	}
}

func mailboxCmd(kind command.Kind, name, newName string) func(func(uint64) command.ID) *command.Command {
	return fixed(&command.Command{Kind: kind, Mailbox: name, NewName: newName})
}

type msgWant struct {
	uid   UID
	flags []string
}

func TestApplyCommands(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		steps    []step
		statuses []Status             // per entry; nil: all Applied
		reasons  map[int]Reason       // entry index -> rejection reason
		boxes    map[string][]msgWant // mailbox -> messages in UID order
		absent   []string             // mailboxes that must not exist
		check    func(*testing.T, *Store, *Result)
	}{
		{
			name:  "deliver into INBOX",
			steps: []step{deliverStep("one"), deliverStep("two")},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{}}, {2, []string{}}}},
		},
		{
			name: "duplicate and missing Message-ID both appear",
			steps: []step{
				bySpool(fixed(deliverCmd("Message-ID: <same@x>\r\nSubject: a\r\n\r\nA\r\n"))),
				bySpool(fixed(deliverCmd("Message-ID: <same@x>\r\nSubject: b\r\n\r\nB\r\n"))),
				bySpool(fixed(deliverCmd("Subject: no id\r\n\r\nC\r\n"))),
				bySpool(fixed(deliverCmd("Subject: no id\r\n\r\nC\r\n"))), // identical bytes too
			},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{}}, {2, []string{}}, {3, []string{}}, {4, []string{}}}},
			check: func(t *testing.T, s *Store, _ *Result) {
				st := dump(t, s)
				if st.Messages[0].ID == st.Messages[1].ID {
					t.Error("two messages share an id")
				}
			},
		},
		{
			name:  "append with flags into Sent",
			steps: []step{user(fixed(appendCmd("Sent", `\Seen`, "$Label1")))},
			boxes: map[string][]msgWant{"Sent": {{1, []string{`\Seen`, "$Label1"}}}, "INBOX": nil},
		},
		{
			name:  "append into a missing mailbox recreates it",
			steps: []step{user(fixed(appendCmd("Gone/Sub")))},
			boxes: map[string][]msgWant{"Gone/Sub": {{1, []string{}}}, "Gone": nil},
		},
		{
			name: "append by mailbox id follows a rename",
			steps: []step{
				user(mailboxCmd(command.CreateMailbox, "Work", "")),
				user(mailboxCmd(command.RenameMailbox, "Work", "Job")),
				user(func(id func(uint64) command.ID) *command.Command {
					c := appendCmd("Work")
					c.MailboxID = id(1)
					return c
				}),
			},
			boxes:  map[string][]msgWant{"Job": {{1, []string{}}}},
			absent: []string{"Work"},
		},
		{
			name: "flags: set, clear, replace, keywords case-insensitive and spelled as first written",
			steps: []step{
				deliverStep("one"),
				user(idsCmd(command.SetFlags, "", []string{`\Seen`, "$Label1"}, 1)),
				user(idsCmd(command.SetFlags, "", []string{"$LABEL1", "Work"}, 1)),
				user(idsCmd(command.ClearFlags, "", []string{"$label1"}, 1)),
				user(idsCmd(command.SetFlags, "", []string{`\Flagged`, "$LaBeL1"}, 1)),
				user(idsCmd(command.ReplaceFlags, "", []string{`\Answered`, "work", "$label1"}, 1)),
			},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{`\Answered`, "$Label1", "Work"}}}},
			check: func(t *testing.T, s *Store, res *Result) {
				kw, err := s.Keywords(context.Background())
				if err != nil || !reflect.DeepEqual(kw, []string{"$Label1", "Work"}) {
					t.Errorf("Keywords: expected [$Label1 Work], got %q, %v", kw, err)
				}
			},
		},
		{
			name: "a mailbox's keywords are those set on its messages now",
			steps: []step{
				deliverStep("one"),
				deliverStep("two"),
				user(fixed(appendCmd("Sent", "Elsewhere"))),
				user(idsCmd(command.SetFlags, "", []string{"$Label1", "Work"}, 1)),
				user(idsCmd(command.SetFlags, "", []string{"work", "Zebra"}, 2)),
				user(idsCmd(command.ClearFlags, "", []string{"$label1"}, 1)),
			},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{"Work"}}, {2, []string{"Work", "Zebra"}}},
				"Sent": {{1, []string{"Elsewhere"}}}},
			check: func(t *testing.T, s *Store, res *Result) {
				kw, err := s.MailboxKeywords(context.Background(), InboxID())
				if err != nil || !reflect.DeepEqual(kw, []string{"Work", "Zebra"}) {
					t.Errorf("MailboxKeywords(INBOX): expected [Work Zebra], got %q, %v", kw, err)
				}
			},
		},
		{
			name: "flag change that changes nothing reports nothing",
			steps: []step{
				deliverStep("one"),
				user(idsCmd(command.SetFlags, "", []string{`\Seen`}, 1)),
				user(idsCmd(command.SetFlags, "", []string{`\Seen`}, 1)),
			},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{`\Seen`}}}},
			check: func(t *testing.T, s *Store, res *Result) {
				n := 0
				for _, c := range res.Changes {
					if c.Kind == FlagsChanged {
						n++
					}
				}
				if n != 1 {
					t.Errorf("expected 1 FlagsChanged, got %d", n)
				}
			},
		},
		{
			name: "copy names copies by index, skipped ids consume theirs",
			steps: []step{
				deliverStep("one"),
				deliverStep("two"),
				user(idsCmd(command.Expunge, "", nil, 1)),
				user(idsCmd(command.SetFlags, "", []string{`\Seen`}, 2)),
				user(idsCmd(command.Copy, "Archive", nil, 1, 2)),
			},
			statuses: []Status{Applied, Applied, Applied, Applied, Partial},
			boxes:    map[string][]msgWant{"INBOX": {{2, []string{`\Seen`}}}, "Archive": {{1, []string{`\Seen`}}}},
			check: func(t *testing.T, s *Store, res *Result) {
				o := res.Outcomes[4]
				want := command.DeriveID(entryID(5), 1)
				if len(o.Placed) != 1 || o.Placed[0].ID != want || o.Placed[0].Source != entryID(2) || o.Placed[0].UID != 1 {
					t.Errorf("copy placement: expected id %s from %s uid 1, got %+v", want, entryID(2), o.Placed)
				}
				if len(o.Skipped) != 1 || o.Skipped[0] != entryID(1) {
					t.Errorf("copy skipped: expected [%s], got %v", entryID(1), o.Skipped)
				}
				var bodies int
				if err := s.rdb.QueryRow("SELECT count(*) FROM bodies").Scan(&bodies); err != nil || bodies != 1 {
					t.Errorf("copy shares the body: expected 1 stored body, got %d, %v", bodies, err)
				}
			},
		},
		{
			name: "move keeps the id, takes a new UID, expunges the source",
			steps: []step{
				deliverStep("one"),
				deliverStep("two"),
				user(fixed(appendCmd("Trash"))),
				user(idsCmd(command.Move, "Trash", nil, 2)),
			},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{}}}, "Trash": {{1, []string{}}, {2, []string{}}}},
			check: func(t *testing.T, s *Store, res *Result) {
				p, err := s.Locate(context.Background(), entryID(2))
				if err != nil || p.Mailbox != mailboxID(t, s, "Trash") || p.UID != 2 {
					t.Errorf("Locate moved message: expected Trash uid 2, got %s %d %v", p.Mailbox, p.UID, err)
				}
				got := res.ByMailbox()
				inbox := got[InboxID()]
				if last := inbox[len(inbox)-1]; last.Kind != MessageExpunged || last.UID != 2 {
					t.Errorf("expected INBOX's last change to be the expunge of uid 2, got %+v", last)
				}
			},
		},
		{
			name: "UIDs are never reused",
			steps: []step{
				deliverStep("one"),
				deliverStep("two"),
				user(idsCmd(command.Expunge, "", nil, 2)),
				deliverStep("three"),
			},
			boxes: map[string][]msgWant{"INBOX": {{1, []string{}}, {3, []string{}}}},
		},
		{
			name:     "expunge of a missing id is partial",
			steps:    []step{deliverStep("one"), user(idsCmd(command.Expunge, "", nil, 1, 7))},
			statuses: []Status{Applied, Partial},
			boxes:    map[string][]msgWant{"INBOX": nil},
		},
		{
			name:  "create makes missing parents",
			steps: []step{user(mailboxCmd(command.CreateMailbox, "a/b/c", ""))},
			boxes: map[string][]msgWant{"a": nil, "a/b": nil, "a/b/c": nil},
		},
		{
			name: "create of an existing name is rejected",
			steps: []step{
				user(mailboxCmd(command.CreateMailbox, "Lists", "")),
				user(mailboxCmd(command.CreateMailbox, "Lists", "")),
				user(mailboxCmd(command.CreateMailbox, "inbox", "")),
			},
			statuses: []Status{Applied, Rejected, Rejected},
			reasons:  map[int]Reason{1: ReasonMailboxExists, 2: ReasonMailboxExists},
		},
		{
			name: "rename carries children and subscriptions",
			steps: []step{
				user(mailboxCmd(command.CreateMailbox, "A/x", "")),
				user(mailboxCmd(command.Subscribe, "A/x", "")),
				user(fixed(appendCmd("A/x"))),
				user(mailboxCmd(command.RenameMailbox, "A", "B/C")),
			},
			boxes:  map[string][]msgWant{"B/C": nil, "B/C/x": {{1, []string{}}}, "B": nil},
			absent: []string{"A", "A/x"},
			check: func(t *testing.T, s *Store, res *Result) {
				mb, _ := s.MailboxByName(context.Background(), "B/C/x")
				if mb == nil || !mb.Subscribed {
					t.Errorf("B/C/x: expected subscribed, got %+v", mb)
				}
			},
		},
		{
			name: "rename onto an existing name is rejected and changes nothing",
			steps: []step{
				user(mailboxCmd(command.CreateMailbox, "A/x", "")),
				user(mailboxCmd(command.CreateMailbox, "B/x", "")),
				user(mailboxCmd(command.RenameMailbox, "A", "B")),
			},
			statuses: []Status{Applied, Applied, Rejected},
			reasons:  map[int]Reason{2: ReasonMailboxExists},
			boxes:    map[string][]msgWant{"A": nil, "A/x": nil, "B": nil, "B/x": nil},
		},
		{
			name: "rename INBOX moves its messages, INBOX stays",
			steps: []step{
				deliverStep("one"),
				deliverStep("two"),
				user(mailboxCmd(command.CreateMailbox, "INBOX/child", "")),
				user(mailboxCmd(command.RenameMailbox, "INBOX", "Old")),
				deliverStep("three"),
			},
			boxes: map[string][]msgWant{"INBOX": {{3, []string{}}}, "Old": {{1, []string{}}, {2, []string{}}}, "INBOX/child": nil},
		},
		{
			name: "delete INBOX is rejected, delete of others drops messages",
			steps: []step{
				deliverStep("one"),
				user(mailboxCmd(command.DeleteMailbox, "INBOX", "")),
				user(fixed(appendCmd("Junk"))),
				user(mailboxCmd(command.DeleteMailbox, "Junk", "")),
				user(mailboxCmd(command.DeleteMailbox, "Nope", "")),
			},
			statuses: []Status{Applied, Rejected, Applied, Applied, Rejected},
			reasons:  map[int]Reason{1: ReasonInbox, 4: ReasonNoMailbox},
			boxes:    map[string][]msgWant{"INBOX": {{1, []string{}}}},
			absent:   []string{"Junk"},
			check: func(t *testing.T, s *Store, _ *Result) {
				if n := len(dump(t, s).Messages); n != 1 {
					t.Errorf("expected 1 message left, got %d", n)
				}
			},
		},
		{
			name: "a recreated mailbox gets a new UIDVALIDITY",
			steps: []step{
				user(mailboxCmd(command.DeleteMailbox, "Archive", "")),
				user(mailboxCmd(command.CreateMailbox, "Archive", "")),
			},
			check: func(t *testing.T, s *Store, _ *Result) {
				mb, err := s.MailboxByName(context.Background(), "Archive")
				if err != nil || mb.UIDValidity != 7 {
					t.Errorf("recreated Archive: expected UIDVALIDITY 7, got %+v, %v", mb, err)
				}
			},
		},
		{
			name: "spool may only deliver",
			steps: []step{
				deliverStep("one"),
				bySpool(idsCmd(command.Expunge, "", nil, 1)),
				bySpool(fixed(appendCmd("INBOX"))),
				bySpool(mailboxCmd(command.CreateMailbox, "Evil", "")),
			},
			statuses: []Status{Applied, Rejected, Rejected, Rejected},
			reasons:  map[int]Reason{1: ReasonForbidden, 2: ReasonForbidden, 3: ReasonForbidden},
			boxes:    map[string][]msgWant{"INBOX": {{1, []string{}}}},
			absent:   []string{"Evil"},
		},
		{
			name: "unsubscribe and subscribe a name without a mailbox",
			steps: []step{
				user(mailboxCmd(command.Unsubscribe, "Junk", "")),
				user(mailboxCmd(command.Subscribe, "Nowhere", "")),
			},
			check: func(t *testing.T, s *Store, _ *Result) {
				subs, err := s.Subscriptions(context.Background())
				want := []string{"Archive", "Drafts", "INBOX", "Nowhere", "Sent", "Trash"}
				if err != nil || !reflect.DeepEqual(subs, want) {
					t.Errorf("Subscriptions: expected %q, got %q, %v", want, subs, err)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			var l testLog
			var entries []Entry
			for _, st := range tc.steps {
				entries = append(entries, l.by(st.author, st.cmd(entryID)))
			}
			res := mustApply(t, s, entries...)
			for i, o := range res.Outcomes {
				want := Applied
				if tc.statuses != nil {
					want = tc.statuses[i]
				}
				if o.Status != want {
					t.Errorf("entry %d (%s): expected %s, got %s (%s %s)", i, o.Kind, want, o.Status, o.Reason, o.Detail)
				}
				if r, ok := tc.reasons[i]; ok && o.Reason != r {
					t.Errorf("entry %d: expected reason %q, got %q", i, r, o.Reason)
				}
			}
			for name, want := range tc.boxes {
				mb, err := s.MailboxByName(context.Background(), name)
				if err != nil {
					t.Errorf("mailbox %q: %v", name, err)
					continue
				}
				var got []msgWant
				err = s.Scan(context.Background(), mb.ID, 0, func(m *Message) error {
					got = append(got, msgWant{m.UID, m.Flags})
					return nil
				})
				if err != nil {
					t.Fatalf("Scan(%q): %v", name, err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("mailbox %q: expected %v, got %v", name, want, got)
				}
				if int(mb.Messages) != len(want) {
					t.Errorf("mailbox %q: expected count %d, got %d", name, len(want), mb.Messages)
				}
			}
			for _, name := range tc.absent {
				if mb, err := s.MailboxByName(context.Background(), name); err == nil {
					t.Errorf("mailbox %q: expected absent, got %+v", name, mb)
				}
			}
			if tc.check != nil {
				tc.check(t, s, res)
			}
		})
	}
}
