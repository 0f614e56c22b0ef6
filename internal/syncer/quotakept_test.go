package syncer

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
)

// TestQuotaKeptOverRestart: the usage and quota a read states are kept in
// the device's database; a device started again while the spool is down
// refuses, by them, an Append past the quota (before, it had heard none in
// that run and queued it); once a read answers that the spool has no
// quota any more, the database keeps none and the Append is taken.
func TestQuotaKeptOverRestart(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const quota = 50000
	h.stop()
	h.mod = func(c *api.Config) { c.Quota = quota }
	h.start()
	s, ms := h.device("device")
	stop := run(t, s)
	// A change read back: the device hears the quota and keeps it.
	if _, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Drafts"}); err != nil {
		t.Fatal(err)
	}
	u, l, ok := s.cfg.Source.(QuotaStated).Quota()
	if !ok || l != quota {
		t.Fatalf("stated after a read: %d, %d, %v; want a limit of %d", u, l, ok, quota)
	}
	if ku, kl, err := ms.StatedQuota(ctx); err != nil || ku != u || kl != l {
		t.Fatalf("kept: %d, %d, %v; want %d, %d as stated", ku, kl, err, u, l)
	}
	stop()
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	h.stop()

	s, ms = h.device("device")
	stop = run(t, s)
	defer func() { stop() }()
	mb, err := ms.MailboxByName(ctx, "Drafts")
	if err != nil {
		t.Fatal(err)
	}
	big := &command.Command{Kind: command.Append, Mailbox: "Drafts", MailboxID: mb.ID, Date: 1764000000000,
		Body: append([]byte("Subject: offline\r\n\r\n"), bytes.Repeat([]byte("sixty kilobytes of a message\r\n"), 2000)...)}
	_, err = s.Submit(ctx, big)
	var oq *OverQuotaError
	if !errors.As(err, &oq) || oq.Usage != u || oq.Limit != quota {
		t.Fatalf("APPEND past the kept quota with the spool down after a restart: %v, want an *OverQuotaError with usage %d, limit %d", err, u, quota)
	}
	if n, err := ms.QueueLen(ctx); err != nil || n != 0 {
		t.Fatalf("%d changes (%v) queued after the refused APPEND, want none", n, err)
	}

	// The spool back without a quota: a read says so, and none is kept.
	h.mod = nil
	h.start()
	waitFor(t, 60*time.Second, "a read answered with no quota kept", func() bool {
		ku, kl, err := ms.StatedQuota(ctx)
		return err == nil && ku == 0 && kl == 0 && s.Status().Connected
	})
	if _, err := s.Submit(ctx, big); err != nil {
		t.Fatalf("APPEND once the spool states no quota: %v", err)
	}
}
