package sqlitestore

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// TestWaitsKeepSmallStacks: 500 waits on a log, each on a goroutine of its
// own, hold at most 6 KiB of stack each while they wait: their reads of the
// head ran on the store's goroutines, not on theirs, which a read through
// the SQLite driver grows to 8 KiB and more (and the collector shrinks
// again while they wait, so that the next wait grows it again).
func TestWaitsKeepSmallStacks(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := s.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	// The store's own goroutines grow their stacks once, first.
	if _, _, err := s.WaitTip(ctx, "alice", 0); err != nil {
		t.Fatal(err)
	}
	const n = 500
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.StackInuse
	done := make(chan error, n)
	for range n {
		go func() {
			_, _, err := s.WaitTip(ctx, "alice", 1)
			done <- err
		}()
	}
	deadline := time.Now().Add(time.Minute)
	for waiting := 0; waiting < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d waits registered within a minute", waiting, n)
		}
		time.Sleep(10 * time.Millisecond)
		s.waiters.mu.Lock()
		if uw := s.waiters.m["alice"]; uw != nil {
			waiting = uw.n
		}
		s.waiters.mu.Unlock()
	}
	time.Sleep(100 * time.Millisecond) // the last ones past their read, into their wait
	runtime.ReadMemStats(&ms)
	per := (int64(ms.StackInuse) - int64(before)) / n
	cancel()
	for range n {
		<-done
	}
	t.Logf("%d waits: %d bytes of stack each", n, per)
	if per > 6<<10 {
		t.Errorf("%d waits hold %d bytes of stack each; want at most 6 KiB (their reads of the head on the store's goroutines)", n, per)
	}
}
