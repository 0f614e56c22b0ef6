package syncer

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
)

// TestAppendOverQuota runs a device against a real API server with a quota
// on real SQLite files. With the spool stating that the user's log is past
// its quota, an Append (IMAP APPEND, a Sent copy) is refused with
// ErrOverQuota and appends nothing, while the expunges that make room are
// taken; once the device's checkpoint lets the spool compact and a read
// states the lower usage, the same Append is taken.
func TestAppendOverQuota(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h.deliverFilled(ctx, t, 20)
	usage, err := h.store.Usage(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	quota := usage - 1000 // over it already (deliveries made before it was set)
	h.mod = func(c *api.Config) { c.Quota = quota }
	h.start()
	s, ms := h.device("device")
	s.cfg.CheckpointMin = 1000
	t.Cleanup(run(t, s))
	if err := s.WaitApplied(ctx, 20); err != nil {
		t.Fatal(err)
	}
	mb, msgs := inbox(t, ms)
	draft := func() *command.Command {
		return &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: mb.ID, Date: 1764000000000,
			Body: append([]byte("Subject: appended\r\n\r\n"), filler20KB...)}
	}
	_, err = s.Submit(ctx, draft())
	var oq *OverQuotaError
	if !errors.Is(err, ErrOverQuota) || !errors.As(err, &oq) || oq.Usage != usage || oq.Limit != quota || oq.Size < int64(len(filler20KB)) {
		t.Fatalf("APPEND at the quota: got %v, want an *OverQuotaError with usage %d, limit %d, size at least %d", err, usage, quota, len(filler20KB))
	}
	if head := s.Status().Head; head != 20 {
		t.Fatalf("the log's head is %d after the refused APPEND, want 20 (nothing appended)", head)
	}
	if n, err := ms.QueueLen(ctx); err != nil || n != 0 {
		t.Fatalf("%d changes (%v) queued after the refused APPEND, want none", n, err)
	}
	// Deleting mail is never refused for the quota.
	ids := []command.ID{msgs[0].ID, msgs[1].ID, msgs[2].ID, msgs[3].ID, msgs[4].ID}
	if _, err := s.Submit(ctx, &command.Command{Kind: command.Expunge, IDs: ids}); err != nil {
		t.Fatalf("EXPUNGE over the quota: %v", err)
	}
	waitFor(t, 90*time.Second, "a checkpoint after the EXPUNGE over the quota", func() bool { return s.Status().Checkpoint == 21 })
	// A change read back states the usage after the compaction.
	if _, err := s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[5].ID}}); err != nil {
		t.Fatalf("STORE after the checkpoint: %v", err)
	}
	if u, _, _ := s.cfg.Source.(QuotaStated).Quota(); u >= quota {
		t.Fatalf("the spool states a usage of %d after 5 of 20 messages were deleted and compacted, want below %d", u, quota)
	}
	outs, err := s.Submit(ctx, draft())
	if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
		t.Fatalf("APPEND once room was made: %v %+v, want it placed", err, outs)
	}
}

// filler20KB makes a message about 20 KB: a few of them fill a quota.
var filler20KB = bytes.Repeat([]byte("twenty kilobytes of a message\r\n"), 640)

// deliverFilled delivers n messages of about 20 KB (msg(i) and
// filler20KB) to alice's log in h's store, sealed as the spool does.
func (h *httpSpool) deliverFilled(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	batch := make([][]byte, n)
	for i := range batch {
		m := msg(i)
		m.Body = append(m.Body, filler20KB...)
		var err error
		if batch[i], _, err = entry.Seal(m, h.spoolKey, h.user.Public(), "alice", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.store.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}
}

// unstated is the API client of a device that has heard no quota (a
// daemon started while the spool was down, a read not answered yet).
type unstated struct{ *api.Client }

func (unstated) Quota() (int64, int64, bool) { return 0, 0, false }

// TestAppendOverSpoolMargin: a spool that holds a user's own appends to
// its quota and a margin (api.Config.OwnMargin) refuses an Append from a
// device that has heard no quota; the device answers ErrOverQuota at once
// and queues nothing (a queued change is acknowledged, and would then wait
// for room), and an EXPUNGE made after it is taken.
func TestAppendOverSpoolMargin(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h.stop()
	h.mod = func(c *api.Config) { c.Quota, c.OwnMargin = 30000, 10000 }
	h.start()
	client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, ms := h.deviceWith("device", Config{Source: unstated{client}})
	t.Cleanup(run(t, s))
	mb, err := ms.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	draft := &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: mb.ID, Date: 1764000000000,
		Body: append([]byte("Subject: appended\r\n\r\n"), filler20KB...)}
	outs, err := s.Submit(ctx, draft)
	if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
		t.Fatalf("the first APPEND, within the quota: %v %+v", err, outs)
	}
	_, err = s.Submit(ctx, draft)
	if !errors.Is(err, ErrOverQuota) {
		t.Fatalf("an APPEND past the spool's quota and margin: %v, want ErrOverQuota", err)
	}
	if n, err := ms.QueueLen(ctx); err != nil || n != 0 {
		t.Fatalf("%d changes (%v) queued after the refused APPEND, want none", n, err)
	}
	if _, err := s.Submit(ctx, &command.Command{Kind: command.Expunge, IDs: []command.ID{outs[0].Placed[0].ID}}); err != nil {
		t.Fatalf("EXPUNGE after the refusal: %v", err)
	}
	if head, err := h.store.Head(ctx, "alice"); err != nil || head != 2 {
		t.Fatalf("the log's head is %d (%v), want 2: the first APPEND and the EXPUNGE", head, err)
	}
}

// TestAppendOverQuotaOffline: while the spool cannot be reached, APPENDs
// are queued and acknowledged as long as the usage the spool last stated,
// with the messages queued before, leaves room; the next one is refused,
// so that every acknowledged APPEND fits when the spool is back.
func TestAppendOverQuotaOffline(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h.stop()
	h.mod = func(c *api.Config) { c.Quota = 50000 }
	h.start()
	s, ms := h.device("device")
	t.Cleanup(run(t, s))
	// A first change read back: the device hears the quota.
	if _, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Drafts"}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := s.cfg.Source.(QuotaStated).Quota(); !ok {
		t.Fatal("no quota stated after a read")
	}
	h.stop()
	waitFor(t, 30*time.Second, "the device sees the spool gone", func() bool { return !s.Status().Connected })
	mb, err := ms.MailboxByName(ctx, "Drafts")
	if err != nil {
		t.Fatal(err)
	}
	taken := 0
	for i := 0; i < 5; i++ {
		_, err := s.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "Drafts", MailboxID: mb.ID, Date: 1764000000000,
			Body: append([]byte("Subject: offline\r\n\r\n"), filler20KB...)})
		if err == nil {
			taken++
			continue
		}
		if !errors.Is(err, ErrOverQuota) {
			t.Fatalf("APPEND %d offline: %v", i+1, err)
		}
	}
	// Each seals to about 20 KB: two fit in 50,000 bytes with the
	// mailbox, a third does not.
	if taken != 2 {
		t.Fatalf("%d APPENDs taken offline, want 2", taken)
	}
	h.start()
	waitFor(t, 60*time.Second, "the queue sent", func() bool { n, err := ms.QueueLen(ctx); return err == nil && n == 0 })
	if u, err := h.store.Usage(ctx, "alice"); err != nil || u > 50000 {
		t.Errorf("usage %d (%v) once the queue is sent, want within the quota, 50000", u, err)
	}
}

// TestQueuedAppendOverSpoolMargin: an APPEND that a device which heard no
// quota queued and acknowledged offline, and that the spool then refuses
// past its quota and margin, stays queued and is not lost, while the STORE
// queued after it, of another message, is sent past it; once the room is
// there (here: the margin raised), it lands too.
func TestQueuedAppendOverSpoolMargin(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h.stop()
	h.mod = func(c *api.Config) { c.Quota, c.OwnMargin = 30000, 10000 }
	h.start()
	client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, ms := h.deviceWith("device", Config{Source: unstated{client}})
	t.Cleanup(run(t, s))
	mb, err := ms.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	if _, err := s.SyncOnce(ctx); err == nil {
		t.Fatal("a sync with the spool stopped succeeded")
	}
	var ids []command.ID
	for i := 0; i < 2; i++ {
		outs, err := s.Submit(ctx, &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: mb.ID, Date: 1764000000000,
			Body: append([]byte("Subject: offline\r\n\r\n"), filler20KB...)})
		if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
			t.Fatalf("APPEND %d offline: %v %+v, want it queued and placed", i+1, err, outs)
		}
		ids = append(ids, outs[0].Placed[0].ID)
	}
	if _, err := s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: ids[:1]}); err != nil {
		t.Fatal(err)
	}
	h.start()
	waitFor(t, 60*time.Second, "the first APPEND and the STORE sent, the second APPEND refused", func() bool {
		head, err := h.store.Head(ctx, "alice")
		return err == nil && head == 2 && s.Status().Position == 2
	})
	if n, err := ms.QueueLen(ctx); err != nil || n != 1 {
		t.Fatalf("%d changes (%v) queued while the spool refuses the second APPEND, want 1 (it)", n, err)
	}
	if !strings.Contains(s.Status().Held, "quota") {
		t.Errorf("status Held %q, want it to name the quota", s.Status().Held)
	}
	h.stop()
	h.mod = func(c *api.Config) { c.Quota, c.OwnMargin = 30000, 100000 }
	h.start()
	waitFor(t, 90*time.Second, "the queue sent once there is room", func() bool { n, err := ms.QueueLen(ctx); return err == nil && n == 0 })
	if head, err := h.store.Head(ctx, "alice"); err != nil || head != 3 {
		t.Fatalf("the log's head is %d (%v), want 3: the APPENDs and the STORE", head, err)
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != 2 {
		t.Fatalf("INBOX holds %d messages, want the 2 APPENDed offline", len(msgs))
	}
}
