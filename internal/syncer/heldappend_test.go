package syncer

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
)

// logIDs returns the entry ids of the user's own entries in the spool's log
// after position after, by position.
func logIDs(t *testing.T, h *httpSpool, after uint64) map[command.ID]uint64 {
	t.Helper()
	es, err := h.store.Read(context.Background(), "alice", after, 100, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	out := map[command.ID]uint64{}
	for _, e := range es {
		if o, err := entry.Open(e.Data, h.user, "alice", h.user.Public()); err == nil {
			out[o.ID] = e.Pos
		}
	}
	return out
}

// TestHeldAppendLetsOthersPass: an APPEND queued offline by a stale quota,
// which the spool (quota with a margin) refuses when it is back, is held on
// the device with the change that names its message, while the EXPUNGE and
// the flag change queued after it, which do not depend on it, are sent; once
// a checkpoint takes the expunged mail's room back (the device's own,
// written of the log's state while the APPEND waits, or another device's)
// and a read states the lower usage, the held APPEND lands by itself, then
// the change behind it, and the message keeps the UID it was shown with.
func TestHeldAppendLetsOthersPass(t *testing.T) {
	t.Parallel()
	t.Run("own checkpoint", func(t *testing.T) { t.Parallel(); testHeldAppend(t, false) })
	t.Run("another device's checkpoint", func(t *testing.T) { t.Parallel(); testHeldAppend(t, true) })
}

func testHeldAppend(t *testing.T, other bool) {
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h.deliverFilled(ctx, t, 10)
	usage, err := h.store.Usage(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Room for one APPEND of about 20 KB by the quota the device hears.
	quota := usage + 25000
	h.stop()
	h.mod = func(c *api.Config) { c.Quota, c.OwnMargin = quota, 10000 }
	h.start()
	// Reads end every second, so that one states the lower usage soon.
	s, ms := h.deviceWith("a", Config{Wait: time.Second})
	if !other {
		s.cfg.CheckpointMin = 1000
	}
	t.Cleanup(run(t, s))
	if err := s.WaitApplied(ctx, 10); err != nil {
		t.Fatal(err)
	}
	mb, msgs := inbox(t, ms)
	if len(msgs) != 10 {
		t.Fatalf("INBOX holds %d messages, want the 10 delivered", len(msgs))
	}
	h.stop()
	waitFor(t, 30*time.Second, "the device sees the spool gone", func() bool { return !s.Status().Connected })

	submit := func(what string, c *command.Command) command.ID {
		t.Helper()
		outs, err := s.Submit(ctx, c)
		if err != nil || len(outs) != 1 || outs[0].Status == mailstore.Rejected {
			t.Fatalf("%s offline: %v %+v", what, err, outs)
		}
		return outs[0].Entry
	}
	outs, err := s.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: mb.ID, Date: 1764000000000,
		Body: append([]byte("Subject: offline\r\n\r\n"), filler20KB...)})
	if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
		t.Fatalf("APPEND offline, within the quota last stated: %v %+v, want it queued and placed", err, outs)
	}
	appended, placed := outs[0].Entry, outs[0].Placed[0]
	gone := []command.ID{msgs[0].ID, msgs[1].ID, msgs[2].ID, msgs[3].ID, msgs[4].ID}
	expunge := submit("EXPUNGE", &command.Command{Kind: command.Expunge, IDs: gone})
	seen := submit("STORE of the APPENDed message", &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{placed.ID}})
	flagged := submit("STORE of another message", &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[5].ID}})

	// Meanwhile another device filed a message of the same size: the
	// APPEND no longer fits in the quota and the margin, the deletes do.
	filed, _, err := entry.Seal(&command.Command{Kind: command.Append, Mailbox: "Archive", Date: 1764000000000,
		Body: append([]byte("Subject: filed\r\n\r\n"), filler20KB...)}, h.user, h.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Append(ctx, "alice", [][]byte{filed}); err != nil {
		t.Fatal(err)
	}
	h.start()
	waitFor(t, 60*time.Second, "the EXPUNGE and the other STORE sent past the refused APPEND", func() bool {
		head, err := h.store.Head(ctx, "alice")
		return err == nil && head == 13
	})
	ids := logIDs(t, h, 11)
	if ids[expunge] != 12 || ids[flagged] != 13 || len(ids) != 2 {
		t.Fatalf("the log after the delivery holds %v, want the EXPUNGE %v at 12 and the other STORE %v at 13 only", ids, expunge, flagged)
	}
	waitFor(t, 30*time.Second, "the sent changes applied", func() bool { return s.Status().Position == 13 })
	if n, err := ms.QueueLen(ctx); err != nil || n != 2 {
		t.Fatalf("%d changes (%v) queued, want 2: the refused APPEND and the STORE of its message", n, err)
	}
	// The hold is told once the queue's send after the refusal has
	// looked again, which may come after the position.
	waitFor(t, 30*time.Second, "the status saying the quota holds the APPEND", func() bool { return strings.Contains(s.Status().Held, "quota") })
	if _, got := inbox(t, ms); len(got) != 6 {
		t.Errorf("INBOX shows %d messages while the APPEND is held, want 6 (10 delivered, 5 expunged, 1 queued)", len(got))
	}

	if other {
		// Another device of the user applies the deletes and writes a
		// checkpoint: the spool takes their room back.
		b, _ := h.device("b")
		t.Cleanup(run(t, b))
		if err := b.WaitApplied(ctx, 13); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.WriteCheckpoint(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 90*time.Second, "the held APPEND and the STORE behind it sent once there is room", func() bool {
		n, err := ms.QueueLen(ctx)
		return err == nil && n == 0
	})
	ids = logIDs(t, h, 13)
	if ids[appended] != 14 || ids[seen] != 15 {
		t.Fatalf("the log after the checkpoint holds %v, want the APPEND %v at 14 and the STORE of it %v at 15", ids, appended, seen)
	}
	if st := s.Status(); st.Held != "" {
		t.Errorf("status once the APPEND landed: Held %q, want empty", st.Held)
	}
	if cp := s.Status().Checkpoint; cp != 13 {
		t.Errorf("the newest checkpoint is at %d, want 13: after the deletes, before the APPEND", cp)
	}
	_, got := inbox(t, ms)
	var found bool
	for _, m := range got {
		if m.ID == placed.ID {
			found = true
			if m.UID != placed.UID || !slices.Contains(m.Flags, `\Seen`) {
				t.Errorf("the APPENDed message at UID %d with flags %v, want UID %d as first shown and \\Seen", m.UID, m.Flags, placed.UID)
			}
		}
	}
	if !found {
		t.Fatal("the APPENDed message is not in INBOX")
	}
	if mb2, err := ms.MailboxByName(ctx, "INBOX"); err != nil || mb2.UIDValidity != placed.UIDValidity {
		t.Errorf("INBOX's UIDVALIDITY is %d (%v), want %d as the APPEND was answered with", mb2.UIDValidity, err, placed.UIDValidity)
	}
}

// TestHeldDependents: which changes queued after a held APPEND into INBOX
// wait with it, and which are sent past it.
func TestHeldDependents(t *testing.T) {
	id := func(b byte) command.ID { return command.ID{b} }
	inboxID, archive := id(0xa0), id(0xa1)
	appended, other, copier := id(1), id(2), id(3)
	held := &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: inboxID}
	tests := []struct {
		what  string
		prior []*command.Command // held before c, each with entry id copier
		c     *command.Command
		want  bool
	}{
		{"STORE of another message", nil, &command.Command{Kind: command.SetFlags, IDs: []command.ID{other}}, false},
		{"STORE of the appended message", nil, &command.Command{Kind: command.SetFlags, IDs: []command.ID{other, appended}}, true},
		{"EXPUNGE of others in its mailbox", nil, &command.Command{Kind: command.Expunge, MailboxID: inboxID, IDs: []command.ID{other}}, false},
		{"EXPUNGE of it", nil, &command.Command{Kind: command.Expunge, IDs: []command.ID{appended}}, true},
		{"MOVE of another into Archive", nil, &command.Command{Kind: command.Move, Mailbox: "Archive", MailboxID: archive, IDs: []command.ID{other}}, false},
		{"MOVE of another into its mailbox", nil, &command.Command{Kind: command.Move, Mailbox: "INBOX", MailboxID: inboxID, IDs: []command.ID{other}}, true},
		{"COPY of it", nil, &command.Command{Kind: command.Copy, Mailbox: "Archive", MailboxID: archive, IDs: []command.ID{appended}}, true},
		{"STORE of its copy", []*command.Command{{Kind: command.Copy, Mailbox: "Archive", MailboxID: archive, IDs: []command.ID{appended}}},
			&command.Command{Kind: command.SetFlags, IDs: []command.ID{command.DeriveID(copier, 0)}}, true},
		{"MOVE into the held copy's mailbox", []*command.Command{{Kind: command.Copy, Mailbox: "Archive", MailboxID: archive, IDs: []command.ID{appended}}},
			&command.Command{Kind: command.Move, Mailbox: "Archive", MailboxID: archive, IDs: []command.ID{other}}, true},
		{"another APPEND, elsewhere", nil, &command.Command{Kind: command.Append, Mailbox: "Drafts"}, true},
		{"CREATE elsewhere", nil, &command.Command{Kind: command.CreateMailbox, Mailbox: "Lists/go"}, false},
		{"CREATE below its mailbox", nil, &command.Command{Kind: command.CreateMailbox, Mailbox: "inbox/sub"}, true},
		{"RENAME of its mailbox's parent", []*command.Command{{Kind: command.Copy, Mailbox: "Lists/go", IDs: []command.ID{appended}}},
			&command.Command{Kind: command.RenameMailbox, Mailbox: "Lists", NewName: "Old"}, true},
		{"RENAME of another to a name it held", []*command.Command{{Kind: command.Copy, Mailbox: "Keep", IDs: []command.ID{appended}}},
			&command.Command{Kind: command.RenameMailbox, Mailbox: "Work", NewName: "Keep"}, true},
		{"DELETE of another mailbox", nil, &command.Command{Kind: command.DeleteMailbox, Mailbox: "Trash", MailboxID: id(0xa2)}, false},
		{"SUBSCRIBE to its mailbox", nil, &command.Command{Kind: command.Subscribe, Mailbox: "INBOX"}, true},
	}
	for _, tc := range tests {
		d := newDependents(appended, held)
		for _, p := range tc.prior {
			if !d.take(copier, p) {
				t.Fatalf("%s: the change before it, %v, was not held", tc.what, p.Kind)
			}
		}
		if got := d.take(id(9), tc.c); got != tc.want {
			t.Errorf("%s: held %v, want %v", tc.what, got, tc.want)
		}
	}
}

// TestHeldAppendLargerThanQuota: an APPEND queued offline on a device that
// had heard no quota, larger than the whole quota the spool then states,
// is held and kept, and the status says that deleting mail cannot make its
// room and who can.
func TestHeldAppendLargerThanQuota(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, ms := h.deviceWith("device", Config{Wait: time.Second})
	t.Cleanup(run(t, s))
	if _, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Drafts"}); err != nil {
		t.Fatal(err)
	}
	mb, err := ms.MailboxByName(ctx, "Drafts")
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	waitFor(t, 30*time.Second, "the device sees the spool gone", func() bool { return !s.Status().Connected })
	big := &command.Command{Kind: command.Append, Mailbox: "Drafts", MailboxID: mb.ID, Date: 1764000000000,
		Body: append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("sixty kilobytes of a message\r\n"), 2000)...)}
	if _, err := s.Submit(ctx, big); err != nil {
		t.Fatalf("APPEND offline with no quota stated: %v, want it queued", err)
	}
	h.mod = func(c *api.Config) { c.Quota, c.OwnMargin = 30000, 10000 }
	h.start()
	waitFor(t, 60*time.Second, "the APPEND held", func() bool { return s.Status().Held != "" })
	if held := s.Status().Held; !strings.Contains(held, "larger than the whole quota (30000 bytes)") || !strings.Contains(held, "operator") {
		t.Errorf("status Held %q, want it to say the message is larger than the quota of 30000 bytes and that the operator can raise it", held)
	}
	if n, err := ms.QueueLen(ctx); err != nil || n != 1 {
		t.Errorf("%d changes (%v) queued, want the APPEND kept", n, err)
	}
}
