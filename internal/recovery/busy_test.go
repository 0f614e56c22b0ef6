package recovery

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/spool"
	"cspool/internal/syncer"
)

// busyOnce is a device's spool client whose first download of a
// checkpoint fails as the spool answers a key that downloads its
// checkpoint already (503): the user's other device running cspool
// recover at that moment.
type busyOnce struct {
	*api.Client
	failed atomic.Bool
}

var errBusy = errors.New("checkpoint: this key is downloading its checkpoint already; try again later (HTTP 503)")

func (b *busyOnce) Checkpoint(ctx context.Context) (spool.Checkpoint, error) {
	if b.failed.CompareAndSwap(false, true) {
		return spool.Checkpoint{}, errBusy
	}
	return b.Client.Checkpoint(ctx)
}

func (b *busyOnce) CheckpointTo(ctx context.Context, w io.Writer) (uint64, int64, error) {
	if b.failed.CompareAndSwap(false, true) {
		return 0, 0, errBusy
	}
	return b.Client.CheckpointTo(ctx, w)
}

// TestRestorationAfterBusyCheckpoint: an alarmed device's daemon whose
// look at the restoration the other device just wrote fails for a moment
// (the spool busy with that device's own download under the same key)
// looks again after the loop's backoff and adopts it. The failure was
// taken for "no restoration yet", and the daemon waited for the log's next
// change, a long-poll of up to 5 minutes, with the restoration already
// there: one run in CI of cmd/cspool's TestRecoverAfterRestore.
func TestRestorationAfterBusyCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.device("a"), r.device("b")
	r.deliver(3)
	a.mustSync()
	b.mustSync()
	backup := r.backup()
	r.deliver(2)
	a.mustSync()
	b.mustSync()
	r.restore(backup)
	r.deliver(1)
	for _, d := range []*device{a, b} {
		if err := d.sync(); err == nil {
			t.Fatalf("%s: no alarm after the restore", d.name)
		}
	}
	// b's daemon, long-polls of 30 s.
	busy := &busyOnce{Client: b.client}
	s, err := syncer.New(syncer.Config{User: user, UserKey: r.userKey, SpoolKey: r.spoolKey.Public(), Store: b.st,
		Source: busy, Logger: r.quiet, CheckpointMin: -1, Wait: 30 * time.Second, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if s.Status().Alarm == "" {
		t.Fatal("b's daemon started without its alarm")
	}
	if _, err := a.recover(); err != nil {
		t.Fatal(err)
	}
	a.mustSync()
	for deadline := time.Now().Add(20 * time.Second); s.Status().Alarm != ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("b did not adopt a's restoration within 20 s (its download failed once: %v); status %+v", busy.failed.Load(), s.Status())
		}
	}
	if !busy.failed.Load() {
		t.Error("b adopted the restoration without the failed download the test is about")
	}
}
