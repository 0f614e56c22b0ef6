package mailstore

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"cspool/internal/command"
)

// keywordedInbox is a store whose INBOX holds n messages, every one with
// keywords as a mail client leaves them: $NotJunk on all, $label1 on every
// other, Work on every seventh and one keyword of its own on the last.
func keywordedInbox(tb testing.TB, n int) *Store {
	tb.Helper()
	s := openTest(tb)
	var l testLog
	var ids []command.ID
	for i := 0; i < n; i += 500 {
		var batch []Entry
		for j := i; j < min(i+500, n); j++ {
			e := l.spool(deliverCmd(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", j, j)))
			ids = append(ids, e.ID)
			batch = append(batch, e)
		}
		mustApply(tb, s, batch...)
	}
	every := func(k int) []command.ID {
		var out []command.ID
		for i := 0; i < n; i += k {
			out = append(out, ids[i])
		}
		return out
	}
	mustApply(tb, s,
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{"$NotJunk"}, IDs: every(1)}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{"$label1"}, IDs: every(2)}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{"Work"}, IDs: every(7)}),
		l.user(&command.Command{Kind: command.SetFlags, Flags: []string{"zeta"}, IDs: ids[n-1:]}))
	return s
}

// TestMailboxKeywordsLooseScan: the keywords in use read by stepping from
// one distinct list to the next in the index are those of every message,
// as SELECT DISTINCT over them all gives them, in a mailbox with many
// messages per list, in an empty one and in one that does not exist.
func TestMailboxKeywordsLooseScan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := keywordedInbox(t, 3000)
	got, err := s.MailboxKeywords(ctx, InboxID())
	if err != nil {
		t.Fatal(err)
	}
	inbox := InboxID()
	lists, err := queryColumn[string](ctx, s.rdb, `SELECT DISTINCT m.keywords FROM messages m JOIN mailboxes mb ON m.mailbox = mb.mid
WHERE mb.id = ? AND m.keywords != ''`, inbox[:])
	if err != nil {
		t.Fatal(err)
	}
	var all flagSet
	for _, kw := range lists {
		all = all.union(flagSet{keywords: decodeKeywords(kw)})
	}
	if !slices.Equal(got, all.keywords) || !slices.Equal(got, []string{"$label1", "$NotJunk", "Work", "zeta"}) {
		t.Errorf("MailboxKeywords(INBOX) = %q; every message's: %q", got, all.keywords)
	}
	if len(lists) != 5 {
		t.Errorf("%d distinct lists, want 5 (the test's mailbox)", len(lists))
	}
	var other command.ID
	other[0] = 9
	if got, err := s.MailboxKeywords(ctx, other); err != nil || len(got) != 0 {
		t.Errorf("MailboxKeywords of a mailbox that does not exist = %q, %v; want none", got, err)
	}
	l := testLog{pos: 100000}
	mustApply(t, s, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Empty"}))
	if got, err := s.MailboxKeywords(ctx, mailboxID(t, s, "Empty")); err != nil || len(got) != 0 {
		t.Errorf("MailboxKeywords of an empty mailbox = %q, %v; want none", got, err)
	}
}

// BenchmarkMailboxKeywords reads the keywords in use in a mailbox of
// 20,000 messages that all have some (five distinct lists), as every
// SELECT and every STORE of a keyword does.
//
//	go test ./internal/mailstore -run - -bench MailboxKeywords
func BenchmarkMailboxKeywords(b *testing.B) {
	s := keywordedInbox(b, 20000)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if kw, err := s.MailboxKeywords(ctx, InboxID()); err != nil || len(kw) != 4 {
			b.Fatalf("MailboxKeywords = %q, %v", kw, err)
		}
	}
}
