package imapd

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// loadedUIDs returns the UID list the server holds for mailbox id, and
// whether it holds one.
func loadedUIDs(s *Server, id command.ID) ([]imap.UID, bool) {
	s.mu.Lock()
	mb := s.boxes[id]
	s.mu.Unlock()
	if mb == nil {
		return nil, false
	}
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return slices.Clone(mb.uids), mb.loaded
}

// TestMailboxStaysLoaded: INBOX is loaded when the server starts, and a
// mailbox stays loaded when its last session leaves, following what
// applies meanwhile (deliveries, another device's flag changes and
// expunges), so the next SELECT reads no UIDs and still sees the mailbox
// as the store has it.
func TestMailboxStaysLoaded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var pos uint64
	for i := range 6 {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nbody %d\r\n", i, i))
	}
	d := r.device("a")
	d.synced(pos)
	inbox := mailstore.InboxID()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := loadedUIDs(d.srv, inbox); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("INBOX not loaded 10 s after the server started")
		}
		time.Sleep(10 * time.Millisecond)
	}

	c := d.client(nil)
	if n := mustSelect(t, c, "INBOX").NumMessages; n != 6 {
		t.Fatalf("SELECT INBOX: %d messages, want 6", n)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Fatal(err)
	}

	// No session holds INBOX now: another device flags one message and
	// expunges two, and two more are delivered.
	ids, err := d.store.MessageIDs(context.Background(), inbox, []mailstore.UID{2, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	r.Append(r.UserKey, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{ids[5]}})
	r.Append(r.UserKey, &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[2], ids[4]}})
	r.Deliver([]byte("From: a@example.org\r\nSubject: 6\r\n\r\nbody 6\r\n"))
	d.synced(r.Deliver([]byte("From: a@example.org\r\nSubject: 7\r\n\r\nbody 7\r\n")))

	want, err := d.store.UIDs(context.Background(), inbox)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(want, []mailstore.UID{1, 3, 5, 6, 7, 8}) {
		t.Fatalf("the store's INBOX holds %v, want [1 3 5 6 7 8]", want)
	}
	got, ok := loadedUIDs(d.srv, inbox)
	if !ok || !slices.Equal(got, imapUIDs(want)) {
		t.Fatalf("after its last session left, the server holds INBOX as %v (loaded %v), want %v", got, ok, want)
	}

	c = d.client(nil)
	if n := mustSelect(t, c, "INBOX").NumMessages; n != uint32(len(want)) {
		t.Fatalf("SELECT INBOX again: %d messages, want %d", n, len(want))
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3, 4, 5, 6), &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(want) {
		t.Fatalf("FETCH 1:6: %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if m.SeqNum != uint32(i+1) || m.UID != imap.UID(want[i]) {
			t.Errorf("message %d: seq %d UID %d, want UID %d", i+1, m.SeqNum, m.UID, want[i])
		}
		if flagged := slices.Contains(m.Flags, imap.FlagFlagged); flagged != (m.UID == 5) {
			t.Errorf("UID %d: flags %v", m.UID, m.Flags)
		}
	}
}
