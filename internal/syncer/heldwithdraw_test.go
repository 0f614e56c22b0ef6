package syncer

import (
	"bytes"
	"context"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestHeldAppendDeleted: an APPEND held for the quota whose message the
// user then deletes (STORE \Deleted, EXPUNGE) leaves the queue with the
// changes of its message, none of them sent, and the hold ends; one whose
// message was copied first stays held, as the copy needs it.
func TestHeldAppendDeleted(t *testing.T) {
	t.Parallel()
	t.Run("expunged", func(t *testing.T) { t.Parallel(); testHeldAppendDeleted(t, false) })
	t.Run("copied, then expunged", func(t *testing.T) { t.Parallel(); testHeldAppendDeleted(t, true) })
}

func testHeldAppendDeleted(t *testing.T, copied bool) {
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, ms := h.deviceWith("device", Config{Wait: time.Second})
	t.Cleanup(run(t, s))
	if _, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Keep"}); err != nil {
		t.Fatal(err)
	}
	keep, err := ms.MailboxByName(ctx, "Keep")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := inbox(t, ms)
	h.stop()
	waitFor(t, 30*time.Second, "the device sees the spool gone", func() bool { return !s.Status().Connected })
	outs, err := s.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: mb.ID, Date: 1764000000000,
		Body: append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("sixty kilobytes of a message\r\n"), 2000)...)})
	if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
		t.Fatalf("APPEND offline: %v %+v, want it queued and placed", err, outs)
	}
	appended, placed := outs[0].Entry, outs[0].Placed[0]
	h.mod = func(c *api.Config) { c.Quota, c.OwnMargin = 30000, 10000 }
	h.start()
	waitFor(t, 60*time.Second, "the APPEND held", func() bool { return s.Status().Held != "" })

	submit := func(what string, c *command.Command) command.ID {
		t.Helper()
		outs, err := s.Submit(ctx, c)
		if err != nil || len(outs) != 1 || outs[0].Status == mailstore.Rejected {
			t.Fatalf("%s: %v %+v", what, err, outs)
		}
		return outs[0].Entry
	}
	var sent []command.ID
	if copied {
		sent = append(sent, submit("COPY of it", &command.Command{Kind: command.Copy, Mailbox: "Keep", MailboxID: keep.ID, IDs: []command.ID{placed.ID}}))
	}
	sent = append(sent,
		submit("STORE \\Deleted", &command.Command{Kind: command.SetFlags, Flags: []string{`\Deleted`}, IDs: []command.ID{placed.ID}}),
		submit("EXPUNGE", &command.Command{Kind: command.Expunge, IDs: []command.ID{placed.ID}}))
	if _, got := inbox(t, ms); len(got) != 0 {
		t.Errorf("INBOX shows %d messages after the EXPUNGE, want none", len(got))
	}
	// Changes that depend on none of them go past them: the second is
	// sent once the first is applied, when none of the queue can be in
	// the log after the device's position, so the queue was looked at
	// then.
	for _, name := range []string{"Other", "Another"} {
		create := submit("CREATE", &command.Command{Kind: command.CreateMailbox, Mailbox: name})
		waitFor(t, 60*time.Second, "the CREATE sent and applied", func() bool {
			pos, ok := logIDs(t, h, 0)[create]
			return ok && s.Status().Position >= pos
		})
	}
	n, err := ms.QueueLen(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if copied {
		if n != 4 || s.Status().Held == "" {
			t.Errorf("%d changes queued, Held %q, want the APPEND, the COPY, the STORE and the EXPUNGE kept and held: the copy needs the message", n, s.Status().Held)
		}
		return
	}
	if n != 0 {
		t.Errorf("%d changes queued, want none: the APPEND of the message deleted and the changes of it withdrawn", n)
	}
	if held := s.Status().Held; held != "" {
		t.Errorf("status Held %q, want empty once the APPEND is withdrawn", held)
	}
	// The log will give the message's UID to the next one: a UIDVALIDITY
	// of this device's, as after any change taken back that lowers a
	// UIDNEXT shown.
	if got, err := ms.MailboxByName(ctx, "INBOX"); err != nil || got.UIDValidity == placed.UIDValidity || got.UIDValidity < 1<<31 {
		t.Errorf("INBOX's UIDVALIDITY after the withdrawal: %+v (%v), want a new one of this device's, not %d", got, err, placed.UIDValidity)
	}
	ids := logIDs(t, h, 0)
	for _, id := range append(sent, appended) {
		if _, ok := ids[id]; ok {
			t.Errorf("entry %v is in the log, want the APPEND withdrawn and the changes of its message with it, unsent", id)
		}
	}
}
