package mailstore

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"cspool/internal/command"
)

// TestBulkOpsFigures times, when CSPOOL_BULK_N is set, each bulk operation
// a mail user runs on a large mailbox, applied as one entry to a store
// holding CSPOOL_BULK_N small messages: STORE, COPY, MOVE, RENAME (of the
// mailbox and of INBOX), EXPUNGE, DELETE, and a RENAME of a mailbox with
// CSPOOL_BULK_N/10 children. The EXPUNGE and DELETE are timed as commands
// of version 1 and, on a second store, of version 2, as the IMAP server
// writes them now (each message's flags and mailbox checked; the DELETE
// naming every message). It reports figures and asserts nothing about
// them (docs/BENCHMARKS.md, "Bulk operations on large mailboxes").
func TestBulkOpsFigures(t *testing.T) {
	n := bulkN(t)
	for _, v := range []uint8{0, command.Version2} {
		s, l, ids := bulkStore(t, n)
		timed := func(what string, c *command.Command) *Result {
			t.Helper()
			start := time.Now()
			res := mustApply(t, s, l.user(c))
			t.Logf("%-34s %8.3f s  %v", what, time.Since(start).Seconds(), res.Outcomes[0].Status)
			return res
		}
		timed(fmt.Sprintf("STORE +FLAGS \\Seen of %d", n), &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids})
		res := timed(fmt.Sprintf("COPY of %d to Archive", n), &command.Command{Kind: command.Copy, Mailbox: "Archive", IDs: ids})
		copies := make([]command.ID, 0, n)
		for _, p := range res.Outcomes[0].Placed {
			copies = append(copies, p.ID)
		}
		timed(fmt.Sprintf("RENAME INBOX (%d messages move)", n), &command.Command{Kind: command.RenameMailbox, Mailbox: "INBOX", NewName: "OldInbox"})
		timed(fmt.Sprintf("MOVE of %d to Moved", n), &command.Command{Kind: command.Move, Mailbox: "Moved", IDs: ids})
		timed(fmt.Sprintf("RENAME of a mailbox of %d", n), &command.Command{Kind: command.RenameMailbox, Mailbox: "Moved", NewName: "Renamed"})
		expunge := &command.Command{Kind: command.Expunge, IDs: copies}
		del := &command.Command{Kind: command.DeleteMailbox, Mailbox: "Renamed"}
		if v == command.Version2 {
			timed(fmt.Sprintf("STORE +FLAGS \\Deleted of %d", n), &command.Command{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: copies})
			expunge.Version, expunge.Flags, expunge.MailboxID = v, []string{`\Deleted`}, mailboxID(t, s, "Archive")
			del.Version, del.IDs = v, ids
		}
		timed(fmt.Sprintf("EXPUNGE of %d (bodies shared), v%d", n, max(v, 1)), expunge)
		timed(fmt.Sprintf("DELETE of a mailbox of %d, v%d", n, max(v, 1)), del)
		if v == command.Version2 {
			continue
		}
		kids := n / 10
		var batch []Entry
		for i := range kids {
			batch = append(batch, l.user(&command.Command{Kind: command.CreateMailbox, Mailbox: fmt.Sprintf("Parent/child%d", i)}))
		}
		mustApply(t, s, batch...)
		timed(fmt.Sprintf("RENAME of a mailbox of %d children", kids), &command.Command{Kind: command.RenameMailbox, Mailbox: "Parent", NewName: "Other"})
	}
}

// TestBulkQueuedFigures times, when CSPOOL_BULK_N is set, the same bulk
// operations made on the device while the spool is away (Enqueue: applied
// provisionally, with the undo log), then their confirmation by the log,
// and their take-back and apply again when the log has another change
// first.
func TestBulkQueuedFigures(t *testing.T) {
	n := bulkN(t)
	for _, takeBack := range []bool{false, true} {
		s, l, ids := bulkStore(t, n)
		var queued []Entry
		enqueue := func(what string, c *command.Command) *Result {
			t.Helper()
			e := l.user(c)
			start := time.Now()
			res, err := s.Enqueue(context.Background(), e.ID, c)
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			t.Logf("queued %-34s %8.3f s  %v", what, time.Since(start).Seconds(), res.Outcomes[0].Status)
			queued = append(queued, e)
			return res
		}
		enqueue(fmt.Sprintf("STORE +FLAGS \\Seen of %d", n), &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids})
		res := enqueue(fmt.Sprintf("COPY of %d to Archive", n), &command.Command{Kind: command.Copy, Mailbox: "Archive", IDs: ids})
		copies := make([]command.ID, 0, n)
		for _, p := range res.Outcomes[0].Placed {
			copies = append(copies, p.ID)
		}
		enqueue(fmt.Sprintf("MOVE of %d to Moved", n), &command.Command{Kind: command.Move, Mailbox: "Moved", IDs: ids})
		enqueue(fmt.Sprintf("EXPUNGE of %d", n), &command.Command{Kind: command.Expunge, IDs: copies})
		enqueue(fmt.Sprintf("DELETE of a mailbox of %d", n), &command.Command{Kind: command.DeleteMailbox, Mailbox: "Moved"})
		log := queued
		what := "confirmed by the log"
		if takeBack {
			// Another device's delivery comes first: the queue is taken
			// back, the delivery applied, the queue applied again.
			var other testLog
			other.pos = 1 << 40
			d := other.spool(deliverCmd(simpleMessage("other")))
			log = append([]Entry{d}, queued...)
			what = "taken back, applied again"
		}
		for i := range log {
			log[i].Pos = queued[0].Pos + uint64(i)
		}
		start := time.Now()
		res = mustApply(t, s, log...)
		t.Logf("the five queued changes %-26s %8.3f s", what, time.Since(start).Seconds())
		for _, o := range res.Outcomes {
			if o.Status == Rejected {
				t.Errorf("%v: %+v", o.Kind, o)
			}
		}
		if k, err := s.QueueLen(context.Background()); err != nil || k != 0 {
			t.Errorf("queue holds %d, %v after the log caught up", k, err)
		}
	}
}

// bulkN returns CSPOOL_BULK_N, or skips the test when it is not set.
func bulkN(t *testing.T) int {
	t.Helper()
	v := os.Getenv("CSPOOL_BULK_N")
	if v == "" {
		t.Skip("set CSPOOL_BULK_N to the number of messages")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 || n > 200000 {
		t.Fatalf("CSPOOL_BULK_N=%q: want a count from 1 to 200000", v)
	}
	return n
}

// bulkStore opens a store whose INBOX holds n small messages, delivered
// 1,000 an Apply, and returns it, its log and the messages' ids.
func bulkStore(t *testing.T, n int) (*Store, *testLog, []command.ID) {
	t.Helper()
	s := openTest(t)
	l := &testLog{}
	ids := make([]command.ID, 0, n)
	for i := 0; i < n; i += 1000 {
		var batch []Entry
		for j := i; j < min(n, i+1000); j++ {
			e := l.spool(deliverCmd(simpleMessage(fmt.Sprint("bulk", j))))
			batch = append(batch, e)
			ids = append(ids, e.ID)
		}
		mustApply(t, s, batch...)
	}
	return s, l, ids
}

// TestExpungeIndexedFigures times, when CSPOOL_BULK_N is set, an EXPUNGE
// of every message of a mailbox of CSPOOL_BULK_N whose bodies then go,
// with the search index built, and the indexer's work after it
// (IndexPendingWithin until nothing is left); docs/BENCHMARKS.md, "Bulk
// operations on large mailboxes".
func TestExpungeIndexedFigures(t *testing.T) {
	n := bulkN(t)
	ctx := context.Background()
	s, l, ids := bulkStore(t, n)
	start := time.Now()
	indexAll(t, s)
	for {
		merged, err := s.MergeIndex(ctx, 500)
		if err != nil {
			t.Fatal(err)
		}
		if !merged {
			break
		}
	}
	t.Logf("%-34s %8.3f s", fmt.Sprintf("index of %d built and merged", n), time.Since(start).Seconds())
	start = time.Now()
	res := mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids}))
	t.Logf("%-34s %8.3f s  %v", fmt.Sprintf("EXPUNGE of %d (bodies deleted)", n), time.Since(start).Seconds(), res.Outcomes[0].Status)
	start = time.Now()
	txs := 0
	for more := true; more; txs++ {
		var err error
		if _, more, err = s.IndexPendingWithin(ctx, 1000, 150*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%-34s %8.3f s  %d transactions", "the indexer after it", time.Since(start).Seconds(), txs)
}
