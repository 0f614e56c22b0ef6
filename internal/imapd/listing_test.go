package imapd

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// listedLine is one message of a FETCH of UID, FLAGS, RFC822.SIZE and
// INTERNALDATE, as text, \Recent left out.
func listedLine(uid uint32, flags []string, size int64, date time.Time) string {
	var fs []string
	for _, f := range flags {
		if f != `\Recent` {
			fs = append(fs, f)
		}
	}
	return fmt.Sprintf("UID %d FLAGS (%s) SIZE %d DATE %d", uid, strings.Join(fs, " "), size, date.Unix())
}

// storeListing is what the store holds for the mailbox, a line a message.
func storeListing(t *testing.T, d *device, mailbox command.ID) []string {
	t.Helper()
	var out []string
	err := d.store.Fetch(context.Background(), mailbox, mailstore.UIDSet{{Start: 1, Stop: 0}}, 0, func(m *mailstore.Message) error {
		out = append(out, listedLine(uint32(m.UID), m.Flags, m.Size, m.InternalDate))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fetchListing is what FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)
// answers on c, after a NOOP has taken the updates queued.
func fetchListing(t *testing.T, c *imapclient.Client) []string {
	t.Helper()
	if err := c.Noop().Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, RFC822Size: true, InternalDate: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		var fs []string
		for _, f := range m.Flags {
			fs = append(fs, string(f))
		}
		out = append(out, listedLine(uint32(m.UID), fs, m.RFC822Size, m.InternalDate))
	}
	return out
}

// statusLine is what STATUS name (MESSAGES UIDNEXT UIDVALIDITY UNSEEN
// DELETED SIZE) answers on c, as text (RECENT: recent_conformance_test.go).
func statusLine(t *testing.T, c *imapclient.Client, name string) string {
	t.Helper()
	data, err := c.Status(name, &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true,
		NumUnseen: true, NumDeleted: true, Size: true}).Wait()
	if err != nil {
		t.Fatalf("STATUS %s: %v", name, err)
	}
	n := func(p *uint32) string {
		if p == nil {
			return "none"
		}
		return fmt.Sprint(*p)
	}
	size := "none"
	if data.Size != nil {
		size = fmt.Sprint(*data.Size)
	}
	return fmt.Sprintf("MESSAGES %s UIDNEXT %d UIDVALIDITY %d UNSEEN %s DELETED %s SIZE %s",
		n(data.NumMessages), data.UIDNext, data.UIDValidity, n(data.NumUnseen), n(data.NumDeleted), size)
}

// storeStatus is what the store holds for statusLine's figures, counted
// message by message.
func storeStatus(t *testing.T, d *device, mailbox command.ID, name string) string {
	t.Helper()
	ctx := context.Background()
	mb, err := d.store.MailboxIdentity(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var messages, unseen, deleted uint32
	var size int64
	err = d.store.Fetch(ctx, mailbox, mailstore.UIDSet{{Start: 1, Stop: 0}}, 0, func(m *mailstore.Message) error {
		messages++
		if !slices.Contains(m.Flags, `\Seen`) {
			unseen++
		}
		if slices.Contains(m.Flags, `\Deleted`) {
			deleted++
		}
		size += m.Size
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("MESSAGES %d UIDNEXT %d UIDVALIDITY %d UNSEEN %d DELETED %d SIZE %d",
		messages, mb.UIDNext, mb.UIDValidity, unseen, deleted, size)
}

// TestListingFollowsChanges: a FETCH of UID, FLAGS, RFC822.SIZE and
// INTERNALDATE, answered from the mailbox's listing in memory, shows
// what the store holds after every kind of change that reaches it while a
// session has the mailbox selected and after it left: another device's
// flag changes (keywords too) and expunges, deliveries and appends of
// other sizes and dates, a STORE on another connection, and the mailbox
// deleted and made again under its name (a new UIDVALIDITY). STATUS on
// another connection, answered from the same listing, gives what the
// store counts each time.
func TestListingFollowsChanges(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var pos uint64
	for i := range 5 {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 100*i)))
	}
	d := r.device("a")
	d.synced(pos)
	inbox := mailstore.InboxID()
	ctx := context.Background()

	a := d.client(nil)
	mustSelect(t, a, "INBOX")
	st := d.client(nil) // STATUS, from a connection with nothing selected
	box, boxName := inbox, "INBOX"
	check := func(step string) {
		t.Helper()
		want := storeListing(t, d, box)
		if got := fetchListing(t, a); !slices.Equal(got, want) {
			t.Fatalf("%s: FETCH answers\n%s\nthe store holds\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if got, want := statusLine(t, st, boxName), storeStatus(t, d, box, boxName); got != want {
			t.Fatalf("%s: STATUS answers\n%s\nthe store holds\n%s", step, got, want)
		}
	}
	check("at the start")

	ids, err := d.store.MessageIDs(ctx, inbox, []mailstore.UID{1, 2, 3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`, "$Important"}, IDs: []command.ID{ids[2], ids[4]}})
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.ClearFlags, Flags: []string{"$Important"}, IDs: []command.ID{ids[4]}}))
	check("after another device's flag changes")

	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[1], ids[3]}}))
	check("after another device's expunge")

	r.Deliver([]byte("From: a@example.org\r\nSubject: 5\r\n\r\nshort\r\n"))
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.Append, Mailbox: "INBOX", Flags: []string{`\Seen`, "Work"},
		Date: time.Date(2024, 2, 3, 4, 5, 6, 0, time.UTC).UnixMilli(), Body: []byte("From: b@example.org\r\nSubject: appended\r\n\r\n" + strings.Repeat("y", 777) + "\r\n")}))
	check("after a delivery and an append")

	b := d.client(nil)
	mustSelect(t, b, "INBOX")
	if err := b.Store(imap.SeqSetNum(1, 4), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagAnswered, "Later"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	check("after a STORE on another connection")
	if err := b.Store(imap.SeqSetNum(4), &imap.StoreFlags{Op: imap.StoreFlagsSet, Silent: true, Flags: []imap.Flag{imap.FlagDraft}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	check("after a STORE replacing the flags")
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{`\Deleted`, `\Seen`}, IDs: []command.ID{ids[0]}}))
	check("after another device's \\Deleted")
	if err := b.Logout().Wait(); err != nil {
		t.Fatal(err)
	}

	// INBOX's listing stays loaded when no session holds it.
	if err := a.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.ReplaceFlags, Flags: []string{"$Junk"}, IDs: []command.ID{ids[0]}}))
	mustSelect(t, a, "INBOX")
	check("after a change while no session held INBOX")

	// Archive, loaded, deleted and made again under its name.
	r.Append(r.UserKey, &command.Command{Kind: command.CreateMailbox, Mailbox: "Archive"})
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.Append, Mailbox: "Archive", Flags: []string{`\Flagged`},
		Date: time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), Body: []byte("From: c@example.org\r\nSubject: old\r\n\r\nold\r\n")}))
	old := mustSelect(t, a, "Archive").UIDValidity
	mbs, err := d.store.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var archive command.ID
	for _, mb := range mbs {
		if mb.Name == "Archive" {
			archive = mb.ID
		}
	}
	box, boxName = archive, "Archive"
	check("Archive")
	if err := a.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	r.Append(r.UserKey, &command.Command{Kind: command.DeleteMailbox, Mailbox: "Archive"})
	r.Append(r.UserKey, &command.Command{Kind: command.CreateMailbox, Mailbox: "Archive"})
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.Append, Mailbox: "Archive", Flags: []string{"Fresh"},
		Date: time.Date(2025, 5, 5, 5, 5, 5, 0, time.UTC).UnixMilli(), Body: []byte("From: c@example.org\r\nSubject: new\r\n\r\nnew, longer\r\n")}))
	if uv := mustSelect(t, a, "Archive").UIDValidity; uv == old {
		t.Fatalf("Archive made again kept UIDVALIDITY %d", uv)
	}
	mbs, err = d.store.Mailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, mb := range mbs {
		if mb.Name == "Archive" {
			if mb.ID == archive {
				t.Fatal("Archive made again has the id of the one deleted")
			}
			archive = mb.ID
		}
	}
	want := storeListing(t, d, archive)
	if got := fetchListing(t, a); len(want) != 1 || !slices.Equal(got, want) {
		t.Fatalf("Archive made again: FETCH answers %q, the store holds %q", got, want)
	}
}

// BenchmarkListingMemory reports what a loaded mailbox's UID list and
// listing of 100,000 messages keep on the heap, the listing built as
// mailstore.ListingAt builds it (slices grown by append), with a few sets
// of flags: `go test -run '^$' -bench ListingMemory ./internal/imapd`.
func BenchmarkListingMemory(b *testing.B) {
	const n = 100000
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		l := &mailstore.Listing{UIDs: []mailstore.UID{}, Lists: [][]string{{}, {`\Seen`}, {`\Seen`, `\Flagged`}, {`\Seen`, "Work"}}}
		for i := range n {
			l.UIDs = append(l.UIDs, mailstore.UID(i+1))
			l.Flags = append(l.Flags, uint32(i%7%4))
			l.Sizes = append(l.Sizes, uint32(2048+i%1000))
			l.Dates = append(l.Dates, int64(1700000000000+i*1000))
		}
		mb := &mailbox{}
		mb.setListing(l, 1)
		l = nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		kept := float64(after.HeapAlloc) - float64(before.HeapAlloc)
		runtime.KeepAlive(mb)
		b.ReportMetric(kept/1e6, "MB-kept")
		b.ReportMetric(kept/n, "B/message")
	}
}

// TestStatusUnderChanges: STATUS INBOX, asked again and again while
// another device delivers, marks \Seen and expunges, one log entry at a
// time, answers each time one state the mailbox was in after some entry
// (MESSAGES, UNSEEN and UIDNEXT of one snapshot, never some figures of one
// and some of another), and never an older one than the answer before.
// TestRestoredMailboxFollowsListing: a restore that replaced more of a
// mailbox's messages than it lists tells sessions one MailboxRestored
// (mailstore's restoreChangesMax), and the server brings the mailbox to
// its listing in the store: here every change to INBOX reaches the server
// as that alone, and what a session that selects INBOX sees, and STATUS
// from another, stay what the store holds, through flag changes,
// expunges and new messages, and a change while no session holds INBOX.
func TestRestoredMailboxFollowsListing(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var pos uint64
	for i := range 6 {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 10*i)))
	}
	d := r.device("a")
	d.synced(pos)
	inbox := mailstore.InboxID()
	restored := func(res *mailstore.Result) *mailstore.Result {
		out := &mailstore.Result{Outcomes: res.Outcomes}
		told := false
		for _, c := range res.Changes {
			if c.Mailbox != inbox || c.Kind == mailstore.SubscriptionChanged {
				out.Changes = append(out.Changes, c)
				continue
			}
			if !told {
				out.Changes = append(out.Changes, mailstore.Change{Kind: mailstore.MailboxRestored, Pos: c.Pos, Mailbox: inbox, Name: "INBOX"})
				told = true
			}
		}
		return out
	}
	d.rewrite.Store(&restored)
	a := d.client(nil)
	mustSelect(t, a, "INBOX")
	st := d.client(nil)
	check := func(step string) {
		t.Helper()
		want := storeListing(t, d, inbox)
		if got := fetchListing(t, a); !slices.Equal(got, want) {
			t.Fatalf("%s: FETCH answers\n%s\nthe store holds\n%s", step, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if got, want := statusLine(t, st, "INBOX"), storeStatus(t, d, inbox, "INBOX"); got != want {
			t.Fatalf("%s: STATUS answers\n%s\nthe store holds\n%s", step, got, want)
		}
	}
	check("at the start")
	ids, err := d.store.MessageIDs(context.Background(), inbox, []mailstore.UID{1, 2, 3, 4, 5, 6})
	if err != nil {
		t.Fatal(err)
	}
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`, "$Important"}, IDs: []command.ID{ids[2], ids[4]}}))
	check("after flag changes")
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[1], ids[3]}}))
	check("after an expunge")
	r.Deliver([]byte("From: a@example.org\r\nSubject: 6\r\n\r\nshort\r\n"))
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{ids[0], ids[5]}}))
	check("after a delivery and flag changes")
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[0]}}))
	r.Deliver([]byte("From: a@example.org\r\nSubject: 7\r\n\r\nshort\r\n"))
	d.synced(r.Deliver([]byte("From: a@example.org\r\nSubject: 8\r\n\r\nshort\r\n")))
	check("after an expunge and deliveries")
	if err := a.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	d.synced(r.Append(r.UserKey, &command.Command{Kind: command.ReplaceFlags, Flags: []string{"$Junk"}, IDs: []command.ID{ids[2]}}))
	mustSelect(t, a, "INBOX")
	check("after a change while no session held INBOX")
}

func TestStatusUnderChanges(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const start, rounds = 20, 30
	var pos uint64
	for i := range start {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody\r\n", i))
	}
	d := r.device("a")
	d.synced(pos)
	ctx := context.Background()
	uids := make([]mailstore.UID, start)
	for i := range uids {
		uids[i] = mailstore.UID(i + 1)
	}
	ids, err := d.store.MessageIDs(ctx, mailstore.InboxID(), uids)
	if err != nil {
		t.Fatal(err)
	}

	// The states after each entry, in log order: round i delivers a
	// message, marks message 2i \Seen and expunges message 2i+1 (both of
	// the first start, unseen until then).
	type state struct{ messages, unseen, uidNext uint32 }
	states := []state{{start, start, start + 1}}
	next := func(f func(*state)) {
		s := states[len(states)-1]
		f(&s)
		states = append(states, s)
	}
	for range rounds / 3 {
		next(func(s *state) { s.messages, s.unseen, s.uidNext = s.messages+1, s.unseen+1, s.uidNext+1 })
		next(func(s *state) { s.unseen-- })
		next(func(s *state) { s.messages, s.unseen = s.messages-1, s.unseen-1 })
	}
	done, finished := make(chan uint64, 1), make(chan struct{})
	t.Cleanup(func() { <-finished })
	go func() {
		defer close(finished)
		var last uint64
		for i := range rounds / 3 {
			r.Deliver(fmt.Appendf(nil, "From: b@example.org\r\nSubject: new %d\r\n\r\nnew\r\n", i))
			r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{ids[mailstore.UID(2*i+1)]}})
			last = r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[mailstore.UID(2*i+2)]}})
		}
		done <- last
	}()

	c := d.client(nil)
	at := 0 // the index in states of the last answer
	final := false
	for polls := 0; !final && polls < 5000; polls++ {
		data, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true, UIDNext: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		got := state{*data.NumMessages, *data.NumUnseen, uint32(data.UIDNext)}
		k := slices.Index(states[at:], got)
		if k < 0 {
			t.Fatalf("poll %d: STATUS answers %+v, not a state of the mailbox since %+v (states %+v)", polls, got, states[at], states)
		}
		at += k
		final = at == len(states)-1
	}
	d.synced(<-done)
	data, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true, UIDNext: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := (state{*data.NumMessages, *data.NumUnseen, uint32(data.UIDNext)}); got != states[len(states)-1] {
		t.Fatalf("after the last entry: STATUS answers %+v, want %+v", got, states[len(states)-1])
	}
}
