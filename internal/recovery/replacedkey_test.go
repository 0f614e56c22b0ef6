package recovery

import (
	"context"
	"crypto/rand"
	"slices"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/syncer"
)

// TestRecoverReplacedSpoolKey: a device recovers from a spool restored
// from a backup, whose log after the restored head holds a delivery
// signed by the old spool key, then the first by the new key (the
// cutover), then one by the old key placed after it. Given the new key
// and the old one as the previous key, the recovery's rebase puts the
// first two back and rejects the third; before, it trusted the new key
// alone and rejected the old key's delivery made before the cutover, and
// that mail was gone from the device.
func TestRecoverReplacedSpoolKey(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a := r.device("a")
	// As cspool does at every start (TrustSpoolKey, ReplaceSpoolKey).
	if err := a.ms.TrustSpoolKey(ctx, r.spoolKey.Public().Bytes()); err != nil {
		t.Fatal(err)
	}
	r.deliver(2)
	a.mustSync()
	backup := r.backup()
	r.deliver(1)
	a.mustSync()
	r.restore(backup)

	old := r.spoolKey
	nw, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range []*keys.SecretKey{old, nw, old} {
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1700000000100 + int64(i), Body: message(100 + i)},
			k, r.userKey.Public(), user, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.store.Append(ctx, user, [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.sync(); err == nil {
		t.Fatal("a after the restore: no alarm, want the rollback alarm")
	}
	if moved, err := a.ms.ReplaceSpoolKey(ctx, nw.Public().Bytes(), old.Public().Bytes()); err != nil || !moved {
		t.Fatalf("moving a to the new key: moved %v, %v", moved, err)
	}
	if _, err := Recover(ctx, Config{User: user, UserKey: r.userKey, SpoolKey: nw.Public(), PreviousSpoolKey: old.Public(),
		Source: a.client, Store: a.ms, Logger: r.quiet}); err != nil {
		t.Fatalf("recover on a: %v", err)
	}
	// The sync that follows, as cspool recover runs it, with both keys.
	s, err := syncer.New(syncer.Config{User: user, UserKey: r.userKey, SpoolKey: nw.Public(), PreviousSpoolKey: old.Public(), Store: a.st,
		Source: a.client, Logger: r.quiet, CheckpointMin: -1, Wait: time.Second, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatalf("sync after the recovery: %v", err)
	}
	var dates []int64
	for _, m := range a.dump().Messages {
		dates = append(dates, m.InternalDate-1700000000100)
	}
	slices.Sort(dates)
	for _, want := range []int64{0, 1} {
		if !slices.Contains(dates, want) {
			t.Errorf("after the recovery the delivery %d after the restored head is missing: %v", want, dates)
		}
	}
	if slices.Contains(dates, 2) {
		t.Errorf("after the recovery the old key's delivery past the cutover is there: %v", dates)
	}
}
