package syncer

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// replacedDevice opens the mail store name and records the spool keys in
// it as the device does at its start: spoolKey with previous as the key
// it replaced (ReplaceSpoolKey), or spoolKey alone (TrustSpoolKey) when
// previous is zero. It makes a syncer reading batch entries at a time.
func (r *rig) replacedDevice(name string, spoolKey, previous keys.PublicKey, batch int) (*Syncer, *mailstore.Store, bool, error) {
	r.t.Helper()
	ctx := context.Background()
	ms, err := mailstore.Open(filepath.Join(r.dir, name+".db"), mimeform.Parser{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { ms.Close() })
	moved := false
	if previous.Ed25519 != nil {
		moved, err = ms.ReplaceSpoolKey(ctx, spoolKey.Bytes(), previous.Bytes())
	} else {
		err = ms.TrustSpoolKey(ctx, spoolKey.Bytes())
	}
	if err != nil {
		return nil, ms, moved, err
	}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: spoolKey, PreviousSpoolKey: previous,
		Source: StoreSource{Store: r.log, User: "alice"}, Store: ms, BatchCount: batch,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, RecheckPermanent: 50 * time.Millisecond})
	if err != nil {
		r.t.Fatal(err)
	}
	return s, ms, moved, nil
}

// syncedWithOld has device a sync a first delivery signed by old, the
// spool key it is given, and closes its database: a device that used the
// old key before the spool's was replaced.
func (r *rig) syncedWithOld(old *keys.SecretKey) {
	r.t.Helper()
	r.deliver(old, msg(0))
	s, ms, _, err := r.replacedDevice("a", old.Public(), keys.PublicKey{}, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	syncAll(r.t, s)
	if err := ms.Close(); err != nil {
		r.t.Fatal(err)
	}
}

// inboxDates lists the messages in INBOX by msg's number.
func inboxDates(t *testing.T, ms *mailstore.Store) []int {
	t.Helper()
	_, msgs := inbox(t, ms)
	var out []int
	for _, m := range msgs {
		out = append(out, int(m.InternalDate.UnixMilli()-1764000000000))
	}
	slices.Sort(out)
	return out
}

// untrustedAt checks that the entry at pos was rejected as signed by a key
// not trusted.
func untrustedAt(t *testing.T, ms *mailstore.Store, pos uint64) {
	t.Helper()
	rej, err := ms.Rejected(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rej {
		if r.Pos == pos {
			if r.Reason != mailstore.Reason(entry.ErrUnknownAuthor.Error()) {
				t.Errorf("the entry at %d was rejected as %q, want %q", pos, r.Reason, entry.ErrUnknownAuthor)
			}
			return
		}
	}
	t.Errorf("the entry at %d is not among the rejected %+v", pos, rej)
}

// TestReplacedSpoolKeyNewDevice: a new device given the new spool key and
// the one it replaced syncs a log whose first deliveries are signed by
// the old key and the later ones by the new key, however the log is cut
// into reads; a delivery signed by the old key placed after the first
// signed by the new key (the cutover) is rejected as one by a key not
// trusted, and its mail is not in INBOX. The database records the
// cutover, and a restart refuses the old key after it still.
func TestReplacedSpoolKeyNewDevice(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 2, 1000} {
		r := newRig(t)
		ctx := context.Background()
		old, nw := r.spool, r.evil
		r.deliver(old, msg(0))
		r.deliver(old, msg(1))
		cutover := r.deliver(nw, msg(2))
		r.deliver(nw, msg(3))
		planted := r.deliver(old, msg(4))
		r.deliver(nw, msg(5))
		s, ms, moved, err := r.replacedDevice("a", nw.Public(), old.Public(), batch)
		if err != nil || moved {
			t.Fatalf("batch %d: recording the keys on a new database: moved %v, %v", batch, moved, err)
		}
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{0, 1, 2, 3, 5}; !slices.Equal(got, want) {
			t.Errorf("batch %d: INBOX holds messages %v, want %v", batch, got, want)
		}
		untrustedAt(t, ms, planted)
		if st := s.Status(); st.Rejected != 1 {
			t.Errorf("batch %d: status says %d rejected, want 1", batch, st.Rejected)
		}
		if c, err := ms.SpoolKeyCutover(ctx); err != nil || c != cutover {
			t.Errorf("batch %d: cutover recorded %d, %v; want %d", batch, c, err, cutover)
		}
		if err := ms.Close(); err != nil {
			t.Fatal(err)
		}
		// Restarted, the device knows the cutover lies behind it.
		s, ms, _, err = r.replacedDevice("a", nw.Public(), old.Public(), batch)
		if err != nil {
			t.Fatal(err)
		}
		again := r.deliver(old, msg(6))
		syncAll(t, s)
		untrustedAt(t, ms, again)
		if got := inboxDates(t, ms); slices.Contains(got, 6) {
			t.Errorf("batch %d: after a restart, a delivery signed by the old key past the cutover is in INBOX: %v", batch, got)
		}
	}
}

// TestReplacedSpoolKeyMovesRecord: a device that synced with the old key
// is started with the new key alone: refused, as any other key once used.
// Started with both, its database moves its record to the new key, and it
// applies what the old key signed between its position and the cutover
// (it was offline across the replacement), then the new key's deliveries,
// and rejects the old key's past the cutover. A previous key that is not
// the one recorded is refused, and a restart with both keys moves nothing
// again.
func TestReplacedSpoolKeyMovesRecord(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	old, nw := r.spool, r.evil
	stranger, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r.syncedWithOld(old)
	// Offline: the old key's last deliveries, the replacement, the new
	// key's, and one the old key signed after them.
	r.deliver(old, msg(1))
	r.deliver(old, msg(2))
	r.deliver(nw, msg(3))
	planted := r.deliver(old, msg(4))
	r.deliver(nw, msg(5))

	var other *mailstore.OtherSpoolKeyError
	if _, _, _, err := r.replacedDevice("a", nw.Public(), keys.PublicKey{}, 0); !errors.As(err, &other) || other.Previous != nil {
		t.Fatalf("the new key alone on a database that used the old one: %v, want an *mailstore.OtherSpoolKeyError", err)
	}
	if _, _, _, err := r.replacedDevice("a", nw.Public(), stranger.Public(), 0); !errors.As(err, &other) || other.Previous == nil {
		t.Fatalf("a previous key the database never recorded: %v, want an *mailstore.OtherSpoolKeyError naming it", err)
	}
	s, ms, moved, err := r.replacedDevice("a", nw.Public(), old.Public(), 0)
	if err != nil || !moved {
		t.Fatalf("the new key with the old one as previous: moved %v, %v; want the record moved", moved, err)
	}
	syncAll(t, s)
	if got, want := inboxDates(t, ms), []int{0, 1, 2, 3, 5}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	untrustedAt(t, ms, planted)
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, moved, err := r.replacedDevice("a", nw.Public(), old.Public(), 0); err != nil || moved {
		t.Errorf("a restart with both keys: moved %v, %v; want nothing moved", moved, err)
	}
	if _, _, _, err := r.replacedDevice("a", nw.Public(), stranger.Public(), 0); !errors.As(err, &other) || other.Replaced == nil {
		t.Errorf("another previous key once moved: %v, want an *mailstore.OtherSpoolKeyError naming the key replaced", err)
	}
	if _, _, _, err := r.replacedDevice("a", nw.Public(), keys.PublicKey{}, 0); err != nil {
		t.Errorf("the new key alone once moved: %v", err)
	}
}

// TestReplacedSpoolKeyBeforeTheDevice: the spool's key is replaced while
// a device that used the old key runs on with it: the deliveries signed
// by the new key stop its sync before them, the error saying the key may
// have been replaced and naming --previous-spool-key, nothing passed by;
// started with the new key and the old one as previous, it applies them.
// Before, it passed them by as a stranger's, and they never showed on that
// device, whatever keys it was given after.
func TestReplacedSpoolKeyBeforeTheDevice(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 1000} {
		r := newRig(t)
		ctx := context.Background()
		old, nw := r.spool, r.evil
		r.deliver(old, msg(0))
		s, ms, _, err := r.replacedDevice("a", old.Public(), keys.PublicKey{}, batch)
		if err != nil {
			t.Fatal(err)
		}
		syncAll(t, s)
		last := r.deliver(old, msg(1))
		cutover := r.deliver(nw, msg(2))
		r.deliver(nw, msg(3))
		var ue *UntrustedSpoolError
		for i := 0; i < 3; i++ {
			if _, err = s.SyncOnce(ctx); err != nil {
				break
			}
		}
		if !errors.As(err, &ue) || !ue.Used || ue.First != cutover {
			t.Fatalf("batch %d: the new key's deliveries on a device of the old key: %v, want an *UntrustedSpoolError, Used, from %d", batch, err, cutover)
		}
		if !strings.Contains(ue.Hint(), "--previous-spool-key") {
			t.Errorf("batch %d: hint %q does not name --previous-spool-key", batch, ue.Hint())
		}
		if st := s.Status(); st.Position != last || st.Rejected != 0 {
			t.Errorf("batch %d: status %+v, want position %d and none rejected", batch, st, last)
		}
		if err := ms.Close(); err != nil {
			t.Fatal(err)
		}
		s, ms, moved, err := r.replacedDevice("a", nw.Public(), old.Public(), batch)
		if err != nil || !moved {
			t.Fatalf("batch %d: started with both keys: moved %v, %v", batch, moved, err)
		}
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{0, 1, 2, 3}; !slices.Equal(got, want) {
			t.Errorf("batch %d: INBOX holds messages %v, want %v", batch, got, want)
		}
		if c, err := ms.SpoolKeyCutover(ctx); err != nil || c != cutover {
			t.Errorf("batch %d: cutover recorded %d, %v; want %d", batch, c, err, cutover)
		}
	}
}

// TestReplacedSpoolKeyCheckpoint: a new device given both keys restores a
// checkpoint written before the cutover, whose kept deliveries are signed
// by the old key, and applies the new key's deliveries after it. One that
// restores a checkpoint written after the cutover, which keeps a delivery
// signed by the new key, refuses the old key's delivery placed after the
// checkpoint, before any new-key delivery follows it, and after a restart.
func TestReplacedSpoolKeyCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	old, nw := r.spool, r.evil
	a, _ := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	for i := range 5 {
		r.deliver(old, msg(i))
	}
	syncAll(t, a)
	if _, _, err := a.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	r.deliver(nw, msg(5))
	b, msb, _, err := r.replacedDevice("b", nw.Public(), old.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SyncOnce(ctx); err != nil {
		t.Fatalf("restoring a checkpoint that keeps the old key's deliveries, with both keys: %v", err)
	}
	if got, want := inboxDates(t, msb), []int{0, 1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	if st := b.Status(); st.Restores != 1 {
		t.Errorf("%d restores, want 1", st.Restores)
	}

	// A checkpoint after the cutover, written by a device with both keys.
	c, _, _, err := r.replacedDevice("c", nw.Public(), old.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	c.cfg.CheckpointMin = -1
	syncAll(t, c)
	if _, _, err := c.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	planted := r.deliver(old, msg(6))
	d, msd, _, err := r.replacedDevice("d", nw.Public(), old.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	syncAll(t, d)
	if st := d.Status(); st.Restores != 1 {
		t.Errorf("device d: %d restores, want 1", st.Restores)
	}
	untrustedAt(t, msd, planted)
	if got := inboxDates(t, msd); slices.Contains(got, 6) {
		t.Errorf("after a restore past the cutover, a delivery signed by the old key is in INBOX: %v", got)
	}
	if used, err := msd.SpoolKeyUsed(ctx); err != nil || !used {
		t.Errorf("SpoolKeyUsed %v, %v after restoring a checkpoint that keeps a delivery signed by the key", used, err)
	}
	if err := msd.Close(); err != nil {
		t.Fatal(err)
	}
	d, msd, _, err = r.replacedDevice("d", nw.Public(), old.Public(), 0)
	if err != nil {
		t.Fatal(err)
	}
	again := r.deliver(old, msg(7))
	syncAll(t, d)
	untrustedAt(t, msd, again)
}

// TestReplacedSpoolKeyWrongNew: a database moved to a wrong new key (the
// old key right as the previous one) applies the old key's deliveries and
// stops before the new key's, with an *UntrustedSpoolError, rather than
// pass them by; started with the right new key, it applies them.
func TestReplacedSpoolKeyWrongNew(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	old, nw := r.spool, r.evil
	wrong, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r.syncedWithOld(old)
	r.deliver(old, msg(1))
	first := r.deliver(nw, msg(2))
	s, ms, moved, err := r.replacedDevice("a", wrong.Public(), old.Public(), 0)
	if err != nil || !moved {
		t.Fatalf("moving to a wrong new key: moved %v, %v", moved, err)
	}
	var ue *UntrustedSpoolError
	if _, err := s.SyncOnce(ctx); !errors.As(err, &ue) || ue.First != first {
		t.Fatalf("sync with a wrong new key: %v, want an *UntrustedSpoolError from position %d", err, first)
	}
	if got, want := inboxDates(t, ms), []int{0, 1}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	s, ms, _, err = r.replacedDevice("a", nw.Public(), old.Public(), 0)
	if err != nil {
		t.Fatalf("the right new key after the refusal: %v", err)
	}
	syncAll(t, s)
	if got, want := inboxDates(t, ms), []int{0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("INBOX with the right new key holds messages %v, want %v", got, want)
	}
}
