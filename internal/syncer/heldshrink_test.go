package syncer

import (
	"bytes"
	"context"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
)

// TestHeldAppendDeleted: an APPEND held for the quota whose message the
// user then deletes (STORE \Deleted, EXPUNGE) is sent as a placeholder
// under its id, with the changes of its message, and the hold ends: the
// log gives the UIDs the device showed, so INBOX keeps its UIDVALIDITY
// and the next message delivered takes the next UID; another device ends
// with no trace of the message. One whose message was copied first stays
// held, as the copy needs it.
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
	// Changes that depend on none of them go past them, or with them once
	// the APPEND is a placeholder: the second is sent once the first is
	// applied, when none of the queue can be in
	// the log after the device's position, so the queue was looked at
	// then.
	for _, name := range []string{"Other", "Another"} {
		create := submit("CREATE", &command.Command{Kind: command.CreateMailbox, Mailbox: name})
		waitFor(t, 60*time.Second, "the CREATE sent and applied", func() bool {
			pos, ok := logIDs(t, h, 0)[create]
			return ok && s.Status().Position >= pos
		})
	}
	if copied {
		n, err := ms.QueueLen(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n != 4 || s.Status().Held == "" {
			t.Errorf("%d changes queued, Held %q, want the APPEND, the COPY, the STORE and the EXPUNGE kept and held: the copy needs the message", n, s.Status().Held)
		}
		return
	}
	waitFor(t, 60*time.Second, "the queue sent and applied", func() bool {
		n, err := ms.QueueLen(ctx)
		return err == nil && n == 0
	})
	if held := s.Status().Held; held != "" {
		t.Errorf("status Held %q, want empty once the APPEND is sent as a placeholder", held)
	}
	logged := logEntries(t, h)
	for _, id := range append(sent, appended) {
		if _, ok := logged[id]; !ok {
			t.Errorf("entry %v is not in the log, want the APPEND as a placeholder and the changes of its message sent", id)
		}
	}
	if c := logged[appended]; c != nil && (c.Kind != command.Append || !bytes.Equal(c.Body, mailstore.Placeholder(appended, 1764000000000)) || len(c.Body) > 300) {
		t.Errorf("the APPEND in the log: %v of %d bytes, %q, want the placeholder", c.Kind, len(c.Body), c.Body)
	}
	// The UIDs the log gives are those the device showed.
	got, err := ms.MailboxByName(ctx, "INBOX")
	if err != nil || got.UIDValidity != placed.UIDValidity || got.UIDNext != placed.UID+1 || got.Messages != 0 {
		t.Errorf("INBOX after the placeholder landed: %+v (%v), want UIDVALIDITY %d kept, UIDNEXT %d, empty", got, err, placed.UIDValidity, placed.UID+1)
	}
	next, _, err := entry.Seal(msg(1), h.spoolKey, h.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Append(ctx, "alice", [][]byte{next}); err != nil {
		t.Fatal(err)
	}
	other, oms := h.deviceWith("other", Config{Wait: time.Second})
	t.Cleanup(run(t, other))
	for _, d := range []struct {
		name string
		ms   *mailstore.Store
	}{{"device", ms}, {"other", oms}} {
		waitFor(t, 60*time.Second, d.name+" shows the delivered message", func() bool {
			_, msgs := inbox(t, d.ms)
			return len(msgs) == 1
		})
		mb, msgs := inbox(t, d.ms)
		if msgs[0].UID != placed.UID+1 || mb.UIDValidity != placed.UIDValidity {
			t.Errorf("%s: the next message delivered is UID %d of UIDVALIDITY %d, want %d of %d", d.name, msgs[0].UID, mb.UIDValidity, placed.UID+1, placed.UIDValidity)
		}
		if n, err := d.ms.QueueLen(ctx); err != nil || n != 0 || mb.Messages != 1 {
			t.Errorf("%s: %d queued (%v), INBOX of %d, want only the delivered message", d.name, n, err, mb.Messages)
		}
	}
}

// logEntries returns the user's entries in h's log by id.
func logEntries(t *testing.T, h *httpSpool) map[command.ID]*command.Command {
	t.Helper()
	es, err := h.store.Read(context.Background(), "alice", 0, 100, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	out := map[command.ID]*command.Command{}
	for _, e := range es {
		if o, err := entry.Open(e.Data, h.user, "alice", h.user.Public()); err == nil {
			out[o.ID] = o.Cmd
		}
	}
	return out
}
