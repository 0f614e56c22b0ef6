package mailstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"cspool/internal/command"
)

// TestSelectReads checks what a SELECT reads from the store: the keywords in
// use come from the partial index of the messages that have any (not a scan
// of the mailbox's messages), MailboxIdentity gives MailboxByName's fields
// without the counts, and UIDsAt gives the UIDs with the position they
// reflect.
func TestSelectReads(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	var entries []Entry
	for i := range 5 {
		entries = append(entries, l.spool(deliverCmd(simpleMessage(string(rune('a'+i))))))
	}
	mustApply(t, s, entries...)
	mustApply(t, s, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{"Work"}, IDs: []command.ID{entries[1].ID}}),
		l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{entries[3].ID}}))

	inbox := InboxID()
	rows, err := s.rdb.QueryContext(ctx, "EXPLAIN QUERY PLAN "+mailboxKeywordsQuery, inbox[:])
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	rows.Close()
	joined := strings.Join(plan, "; ")
	if !strings.Contains(joined, "messages_keywords") || strings.Contains(joined, "SCAN m") {
		t.Errorf("the keywords of a mailbox are read by %q, want the index messages_keywords and no scan of messages", joined)
	}
	if kw, err := s.MailboxKeywords(ctx, InboxID()); err != nil || !slices.Equal(kw, []string{"Work"}) {
		t.Errorf("MailboxKeywords(INBOX) = %q, %v; want [Work]", kw, err)
	}

	full, err := s.MailboxByName(ctx, "inbox")
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.MailboxIdentity(ctx, "inbox")
	if err != nil {
		t.Fatal(err)
	}
	want := *full
	want.Messages, want.Unseen, want.Size = 0, 0, 0
	if *id != want || full.Messages != 4 {
		t.Errorf("MailboxIdentity(inbox) = %+v, want %+v (MailboxByName's %d messages not counted)", *id, want, full.Messages)
	}
	if _, err := s.MailboxIdentity(ctx, "nowhere"); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("MailboxIdentity(nowhere): %v, want ErrNoMailbox", err)
	}

	uids, pos, err := s.UIDsAt(ctx, InboxID())
	if err != nil || !slices.Equal(uids, []UID{1, 2, 3, 5}) || pos != l.pos {
		t.Errorf("UIDsAt(INBOX) = %v at %d, %v; want [1 2 3 5] at %d", uids, pos, err, l.pos)
	}
	if uids, _, err := s.UIDsAt(ctx, mailboxID(t, s, "Archive")); err != nil || uids == nil || len(uids) != 0 {
		t.Errorf("UIDsAt(Archive) = %#v, %v; want an empty list", uids, err)
	}
	if _, _, err := s.UIDsAt(ctx, entryID(999)); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("UIDsAt(unknown mailbox): %v, want ErrNoMailbox", err)
	}
}
