package syncer

import (
	"bytes"
	"context"
	"errors"
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
	filler := bytes.Repeat([]byte("twenty kilobytes of a message\r\n"), 640)
	batch := make([][]byte, 20)
	for i := range batch {
		m := msg(i)
		m.Body = append(m.Body, filler...)
		var err error
		if batch[i], _, err = entry.Seal(m, h.spoolKey, h.user.Public(), "alice", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.store.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}
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
			Body: append([]byte("Subject: appended\r\n\r\n"), filler...)}
	}
	_, err = s.Submit(ctx, draft())
	var oq *OverQuotaError
	if !errors.Is(err, ErrOverQuota) || !errors.As(err, &oq) || oq.Usage != usage || oq.Limit != quota || oq.Size < int64(len(filler)) {
		t.Fatalf("APPEND at the quota: got %v, want an *OverQuotaError with usage %d, limit %d, size at least %d", err, usage, quota, len(filler))
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
