package mailstore

import (
	"context"
	"errors"
	"testing"

	"cspool/internal/command"
)

// TestBulkDeletesWithoutSavepoint: an EXPUNGE of many messages and the
// DELETE of a mailbox holding many run without the entry's savepoint, and
// an expunge sets its mailbox's modseq once. Under the savepoint SQLite
// copied every page the entry changed (all of the messages' bodies) into
// its in-memory sub-journal, and each statement that added to it walked
// the journal from its start: an EXPUNGE of 5,000 messages took 22.6 s
// and 117 MB, one of 20,000 over ten minutes, with the device's sync and
// every other change waiting on it.
func TestBulkDeletesWithoutSavepoint(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	var l testLog
	ids := deliverMany(t, s, &l, 120, "bulk")
	mustApply(t, s, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: "Old"}),
		l.user(&command.Command{Kind: command.Move, Mailbox: "Old", IDs: ids[60:]}))
	if n := len(uidsOf(t, s, "Old")); n != 60 {
		t.Fatalf("Old holds %d messages, want 60", n)
	}

	tr := traceStatements(s)
	count := tr.count

	res := mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[:60]}))
	if res.Outcomes[0].Status != Applied {
		t.Fatalf("expunge: %+v", res.Outcomes[0])
	}
	if n := len(uidsOf(t, s, "INBOX")); n != 0 {
		t.Errorf("INBOX holds %d messages after the expunge, want 0", n)
	}
	if n := count("SAVEPOINT"); n != 0 {
		t.Errorf("the expunge of 60 messages ran %d SAVEPOINTs, want none", n)
	}
	if n := count("UPDATE mailboxes SET highest_modseq"); n != 1 {
		t.Errorf("the expunge of 60 messages of one mailbox set its modseq %d times, want once", n)
	}

	tr.reset()
	res = mustApply(t, s, l.user(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Old"}))
	if res.Outcomes[0].Status != Applied {
		t.Fatalf("delete: %+v", res.Outcomes[0])
	}
	if mb, err := s.MailboxByName(context.Background(), "Old"); !errors.Is(err, ErrNoMailbox) {
		t.Errorf("Old after its DELETE: %v, %v", mb, err)
	}
	if n := count("SAVEPOINT"); n != 0 {
		t.Errorf("the delete of a mailbox of 60 messages ran %d SAVEPOINTs, want none", n)
	}

	// Rejected without a savepoint: nothing was written before.
	res = mustApply(t, s, l.user(&command.Command{Kind: command.DeleteMailbox, Mailbox: "INBOX"}),
		l.user(&command.Command{Kind: command.DeleteMailbox, Mailbox: "Nowhere"}))
	for i, o := range res.Outcomes {
		if o.Status != Rejected {
			t.Errorf("delete %d: %+v, want rejected", i, o)
		}
	}
}
