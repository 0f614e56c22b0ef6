package syncer_test

import (
	"context"
	"testing"

	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/syncer"
)

// TestQueueRewrittenAtFormat4: a device that writes version 1 (the spool
// said a device of the user reads up to format 3: its own reads, while an
// earlier release of it was held back before an entry of format 4) reads
// that entry: the EXPUNGE it queued on the state before it goes as version
// 2, in format 4, since the log stops every device that does not read
// that format there already. As version 1 it went, and took what another
// device had meanwhile done with the message.
func TestQueueRewrittenAtFormat4(t *testing.T) {
	ctx := context.Background()
	sp := devicetest.NewSpool(t)
	sp.Deliver([]byte("From: a@example.org\r\nSubject: one\r\n\r\none\r\n"))
	sp.Deliver([]byte("From: a@example.org\r\nSubject: two\r\n\r\ntwo\r\n"))
	d := sp.Device("a", syncer.Config{})
	if _, err := d.Sync.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if d.Store.WritesVersion2(ctx) {
		t.Fatal("a device the spool told nothing writes version 2")
	}
	inbox := devicetest.Messages(t, d.Store, "INBOX")
	one, two := inbox[0].ID, inbox[1].ID
	// Queued while held back: \Deleted on one, and its EXPUNGE, as the
	// release before wrote it.
	for i, c := range []*command.Command{
		{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{one}},
		{Kind: command.Expunge, IDs: []command.ID{one}},
	} {
		if _, err := d.Store.Enqueue(ctx, command.ID{0xee, byte(i)}, c); err != nil {
			t.Fatal(err)
		}
	}
	// The entry it was held back before: another device's EXPUNGE of
	// version 2, in format 4.
	pos := sp.Append(sp.UserKey, &command.Command{Kind: command.Expunge, Version: command.Version2, IDs: []command.ID{two},
		Flags: []string{`\Deleted`}, MailboxID: mailstore.InboxID()})
	// The daemon started again on its database (upgraded).
	sy := sp.Syncer(d.Store, syncer.Config{})
	if _, err := sy.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if head := sp.Head(); head != pos+2 {
		t.Fatalf("head %d after the device sent its queue, want %d", head, pos+2)
	}
	es, err := sp.Store.Read(ctx, devicetest.User, pos, 2, 1<<20)
	if err != nil || len(es) != 2 {
		t.Fatalf("reading the device's changes: %d, %v", len(es), err)
	}
	for i, want := range []byte{entry.Version, entry.Version4} {
		if v, _ := entry.VersionOf(es[i].Data); v != want {
			t.Errorf("the device's change %d went in entry format %d, want %d", i+1, v, want)
		}
	}
}
