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
// reflect, ListingAt their flags, sizes and dates too.
func TestSelectReads(t *testing.T) {
	t.Parallel()
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
	plan := queryPlan(t, s.rdb, "EXPLAIN QUERY PLAN "+mailboxKeywordsQuery, inbox[:])
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

	// ListingAt: the same UIDs and position, each message's flags, size
	// and date as Fetch gives them, one list for messages with the same
	// flags.
	mustApply(t, s, l.user(&command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{entries[0].ID, entries[2].ID}}))
	listing, pos, err := s.ListingAt(ctx, InboxID())
	if err != nil || !slices.Equal(listing.UIDs, []UID{1, 2, 3, 5}) || pos != l.pos {
		t.Fatalf("ListingAt(INBOX) = %v at %d, %v; want [1 2 3 5] at %d", listing, pos, err, l.pos)
	}
	if mb, err := s.MailboxIdentity(ctx, InboxName); err != nil || listing.UIDNext != mb.UIDNext || mb.UIDNext != 6 || listing.UIDValidity != mb.UIDValidity {
		t.Errorf("ListingAt(INBOX): UIDNext %d, UIDVALIDITY %d; MailboxIdentity: %+v, %v; want UIDNext 6", listing.UIDNext, listing.UIDValidity, mb, err)
	}
	k := 0
	err = s.Fetch(ctx, InboxID(), UIDSet{{Start: 1, Stop: 0}}, 0, func(m *Message) error {
		if got := listing.Lists[listing.Flags[k]]; !slices.Equal(got, m.Flags) || int64(listing.Sizes[k]) != m.Size || listing.Dates[k] != m.InternalDate.UnixMilli() {
			t.Errorf("ListingAt(INBOX) message %d: flags %q, size %d, date %d; Fetch: %q, %d, %d", k, got, listing.Sizes[k], listing.Dates[k], m.Flags, m.Size, m.InternalDate.UnixMilli())
		}
		k++
		return nil
	})
	if err != nil || k != 4 {
		t.Fatalf("Fetch(INBOX): %d messages, %v", k, err)
	}
	if len(listing.Lists) != 3 || listing.Flags[0] != listing.Flags[2] {
		t.Errorf("ListingAt(INBOX): lists %q for flags %v, want 3 lists, messages 1 and 3 sharing one", listing.Lists, listing.Flags)
	}
	if l, _, err := s.ListingAt(ctx, mailboxID(t, s, "Archive")); err != nil || len(l.UIDs) != 0 {
		t.Errorf("ListingAt(Archive) = %+v, %v; want an empty listing", l, err)
	}
}
