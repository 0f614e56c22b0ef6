package syncer

import (
	"context"
	"errors"
	"fmt"
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
	if id := r.evil.Public().KeyID(); !strings.Contains(ue.Hint(), fmt.Sprintf("key given has id %x", id)) {
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

	// Now a stranger's entries at the head, alone in their batch, stop
	// the sync before them (the spool's key may have been replaced) until
	// an entry by the spool key follows them; then they are passed by.
	at := r.deliver(r.evil, msg(10))
	r.deliver(r.evil, msg(11))
	_, err = s.SyncOnce(ctx)
	if !errors.As(err, &ue) || !ue.Used || ue.First != at || ue.Count != 2 {
		t.Fatalf("a stranger's entries at the head once the key is used: %v, want an *UntrustedSpoolError, Used, from %d", err, at)
	}
	if !strings.Contains(ue.Hint(), "--previous-spool-key") {
		t.Errorf("hint %q does not say what to do if the spool's key was replaced", ue.Hint())
	}
	if st := s.Status(); st.Position != at-1 || st.Rejected != 0 {
		t.Errorf("status %+v, want position %d and none rejected", st, at-1)
	}
	last := r.deliver(r.spool, msg(12))
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatalf("a stranger's entries followed by a delivery: %v", err)
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
// it is the right one. The stranger's entry after it, at the head, waits
// for the next delivery signed by the spool key, and is then passed by.
func TestStrangerBesideDeliveries(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.evil, msg(0))
	r.deliver(r.evil, msg(1))
	signed := r.deliver(r.spool, msg(2))
	r.deliver(r.evil, msg(3))
	s, ms, err := r.keyedDevice("a", r.spool.Public())
	if err != nil {
		t.Fatal(err)
	}
	var ue *UntrustedSpoolError
	if _, err := s.SyncOnce(ctx); !errors.As(err, &ue) || !ue.Used || ue.First != signed+1 {
		t.Fatalf("sync: %v, want an *UntrustedSpoolError, Used, at %d", err, signed+1)
	}
	if st := s.Status(); st.Position != signed || st.Rejected != 2 {
		t.Errorf("status %+v, want position %d and 2 rejected", st, signed)
	}
	last := r.deliver(r.spool, msg(4))
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Position != last || st.Rejected != 3 {
		t.Errorf("status %+v, want position %d and 3 rejected", st, last)
	}
	if _, msgs := inbox(t, ms); len(msgs) != 2 {
		t.Errorf("INBOX has %d messages, want 2", len(msgs))
	}
}

// TestWrongSpoolKeyFromCheckpoint: a new device given the wrong spool key
// whose first read finds a checkpoint restores nothing: the deliveries the
// checkpoint keeps are signed by the spool key its writer trusted, not by
// the one given, and no entry after it is signed by that one. It stops
// with an *UntrustedSpoolError naming the checkpoint, also when the
// checkpoint is the newest thing in the log (before, that first sync
// restored it and ended well, and the wrong key showed at the next
// delivery). Started with the right key, it restores the checkpoint and
// applies what follows.
func TestWrongSpoolKeyFromCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	var first command.ID
	for i := range 20 {
		_, id := r.seal(r.spool, msg(i))
		if i == 0 {
			first = id
		}
	}
	syncAll(t, a)
	_, cpPos, err := a.WriteCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, msb, err := r.keyedDevice("b", r.evil.Public())
	if err != nil {
		t.Fatal(err)
	}
	var ue *UntrustedSpoolError
	if _, err := b.SyncOnce(ctx); !errors.As(err, &ue) || ue.Checkpoint != cpPos || ue.Count != 20 || len(ue.Authors) != 1 ||
		!ue.Authors[0].Equal(r.spool.Public().Ed25519) {
		t.Fatalf("rebuilding from the checkpoint with the wrong spool key: %v; want an *UntrustedSpoolError naming the checkpoint at %d and its 20 deliveries by the spool's key", err, cpPos)
	}
	if !strings.Contains(ue.Error(), "not restored") {
		t.Errorf("the error does not say the checkpoint was not restored: %v", ue)
	}
	if pos, _ := msb.Position(ctx); pos != 0 {
		t.Errorf("position %d after the refusal, want 0: nothing restored", pos)
	}
	if _, msgs := inbox(t, msb); len(msgs) != 0 {
		t.Errorf("INBOX has %d messages after the refusal, want none", len(msgs))
	}
	// Another device's change, then a delivery.
	r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{first}})
	r.deliver(r.spool, msg(20))
	if _, err := b.SyncOnce(ctx); !errors.As(err, &ue) {
		t.Fatalf("the wrong key again, a delivery after the checkpoint: %v, want an *UntrustedSpoolError", err)
	}
	if err := msb.Close(); err != nil {
		t.Fatal(err)
	}
	b, msb, err = r.keyedDevice("b", r.spool.Public())
	if err != nil {
		t.Fatalf("the right key after the refusal: %v", err)
	}
	if _, err := b.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	syncAll(t, a)
	sameState(t, msa, msb)
	if _, msgs := inbox(t, msb); len(msgs) != 21 || len(msgs[0].Flags) != 1 || msgs[0].Flags[0] != `\Flagged` {
		t.Errorf("INBOX with the right key: %d messages, the first flagged %v; want 21, \\Flagged", len(msgs), msgs[0].Flags)
	}
}
