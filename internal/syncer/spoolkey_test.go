package syncer

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// keyedDevice opens the mail store name, records spoolKey in it as the
// device does at its start (TrustSpoolKey), and makes a syncer with it.
func (r *rig) keyedDevice(name string, spoolKey keys.PublicKey) (*Syncer, *mailstore.Store, error) {
	r.t.Helper()
	ms, err := mailstore.Open(filepath.Join(r.dir, name+".db"), mimeform.Parser{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { ms.Close() })
	if err := ms.TrustSpoolKey(context.Background(), spoolKey.Bytes()); err != nil {
		return nil, ms, err
	}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: spoolKey, Source: StoreSource{Store: r.log, User: "alice"}, Store: ms,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, RecheckPermanent: 50 * time.Millisecond})
	if err != nil {
		r.t.Fatal(err)
	}
	return s, ms, nil
}

// TestWrongSpoolKeyStops: a new device given the wrong spool key applies
// nothing of a batch whose deliveries are all signed by another key: it
// stops with an *UntrustedSpoolError naming the key they name and the key
// given, records no rejection and stays at its position; started again
// with the right key, the same database syncs every delivery. From then
// on the key is the log's, and a stranger's entries are passed by.
func TestWrongSpoolKeyStops(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	// A new device reads one entry first: the user's own, which applies.
	// The next batch holds the deliveries and another of the user's.
	r.seal(r.user, &command.Command{Kind: command.CreateMailbox, Mailbox: "Lists"})
	r.deliver(r.spool, msg(0))
	r.deliver(r.spool, msg(1))
	r.seal(r.user, &command.Command{Kind: command.CreateMailbox, Mailbox: "Work"})
	r.deliver(r.spool, msg(2))
	s, ms, err := r.keyedDevice("a", r.evil.Public())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.SyncOnce(ctx)
	var ue *UntrustedSpoolError
	if !errors.As(err, &ue) {
		t.Fatalf("sync with the wrong spool key: %v, want an *UntrustedSpoolError", err)
	}
	if ue.First != 2 || ue.Last != 5 || ue.Count != 3 || ue.Through != 5 || len(ue.Authors) != 1 || !ue.Authors[0].Equal(r.spool.Public().Ed25519) {
		t.Errorf("error names positions %d to %d, %d entries, through %d, keys %x; want 2 to 5, 3, through 5, the spool's",
			ue.First, ue.Last, ue.Count, ue.Through, ue.Authors)
	}
	for _, want := range []string{"3 entries at positions 2 to 5", "up to position 5", "nothing applied"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if id := r.evil.Public().KeyID(); !strings.Contains(ue.Hint(), "key given has id "+hexOf(id[:])) {
		t.Errorf("hint %q does not name the given key's id", ue.Hint())
	}
	if pos, _ := ms.Position(ctx); pos != 1 {
		t.Errorf("position %d after the refusal, want 1", pos)
	}
	if rej, _ := ms.Rejected(ctx, 0); len(rej) != 0 {
		t.Errorf("%d rejections recorded, want none", len(rej))
	}
	if _, err := ms.MailboxByName(ctx, "Work"); err == nil {
		t.Error("the batch's own entry was applied")
	}

	// The loop says what to do, and keeps saying it.
	stop := run(t, s)
	deadline := time.Now().Add(10 * time.Second)
	for s.Status().Hint != ue.Hint() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Status(); st.Hint != ue.Hint() || st.Position != 1 {
		t.Errorf("loop status: position %d, hint %q; want 1 and the error's", st.Position, st.Hint)
	}
	stop()
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}

	// The right key: the same database takes it and syncs everything.
	s, ms, err = r.keyedDevice("a", r.spool.Public())
	if err != nil {
		t.Fatalf("the right key after the refusal: %v", err)
	}
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if _, msgs := inbox(t, ms); len(msgs) != 3 {
		t.Fatalf("INBOX has %d messages, want 3", len(msgs))
	}
	if _, err := ms.MailboxByName(ctx, "Work"); err != nil {
		t.Errorf("the user's mailbox: %v", err)
	}
	if used, err := ms.SpoolKeyUsed(ctx); err != nil || !used {
		t.Errorf("SpoolKeyUsed %v, %v after deliveries applied", used, err)
	}

	if _, err := ms.MailboxByName(ctx, "Lists"); err != nil {
		t.Errorf("the user's first mailbox: %v", err)
	}

	// Now a stranger's entries, alone in their batch, are passed by.
	r.deliver(r.evil, msg(10))
	last := r.deliver(r.evil, msg(11))
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatalf("a stranger's entries once the key is used: %v", err)
	}
	if st := s.Status(); st.Position != last || st.Rejected != 2 {
		t.Errorf("status %+v, want position %d and 2 rejected", st, last)
	}
	// And the key is fixed.
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	var other *mailstore.OtherSpoolKeyError
	if _, _, err := r.keyedDevice("a", r.evil.Public()); !errors.As(err, &other) {
		t.Errorf("another key once used: %v, want an *mailstore.OtherSpoolKeyError", err)
	}
}

// TestStrangerBesideDeliveries: on a new device, a stranger's entries
// before a delivery signed by the spool key are passed by, as they always
// were, whether the delivery is in the same read or not (a new device
// reads one entry first): the log holds one signed by the spool key, so
// it is the right one.
func TestStrangerBesideDeliveries(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.evil, msg(0))
	r.deliver(r.evil, msg(1))
	r.deliver(r.spool, msg(2))
	last := r.deliver(r.evil, msg(3))
	s, ms, err := r.keyedDevice("a", r.spool.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Position != last || st.Rejected != 3 {
		t.Errorf("status %+v, want position %d and 3 rejected", st, last)
	}
	if _, msgs := inbox(t, ms); len(msgs) != 1 {
		t.Errorf("INBOX has %d messages, want 1", len(msgs))
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestStrangerFloodReadOnce: a stranger's flood ahead of the first
// delivery, many reads long, is passed by with the log read about twice
// (the batches, and once ahead for the delivery), not once more for every
// batch of the flood.
func TestStrangerFloodReadOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const flood, batch = 60, 4
	for i := range flood {
		r.deliver(r.evil, msg(i))
	}
	r.deliver(r.spool, msg(flood))
	for i := range flood {
		r.deliver(r.evil, msg(flood+1+i))
	}
	ms, err := mailstore.Open(filepath.Join(r.dir, "a.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	src := &readCounter{Source: StoreSource{Store: r.log, User: "alice"}}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: ms, BatchCount: batch})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Position != 2*flood+1 || st.Rejected != 2*flood {
		t.Fatalf("status %+v, want position %d and %d rejected", st, 2*flood+1, 2*flood)
	}
	// The batches: one entry first, then batch at a time; the look ahead
	// for the delivery: flood/batch reads more.
	entries := 2*flood + 1
	if want := entries/batch + flood/batch + 4; src.reads > want {
		t.Errorf("%d reads of the log, want at most %d", src.reads, want)
	}
	t.Logf("%d reads", src.reads)
}
