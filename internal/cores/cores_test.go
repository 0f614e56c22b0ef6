package cores

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// Every item is given to fn once, in runs of at most size, on as many
// workers as GOMAXPROCS allows.
func TestEachCoversEveryItemOnce(t *testing.T) {
	for _, tc := range []struct{ n, size int }{{0, 64}, {1, 64}, {5, 64}, {64, 64}, {65, 64}, {1000, 64}, {1000, 1}, {7, 0}} {
		seen := make([]atomic.Int32, tc.n)
		var runs atomic.Int32
		Each(tc.n, tc.size, func(from, to int) {
			runs.Add(1)
			if from >= to || to > tc.n || (tc.size > 0 && to-from > tc.size) {
				t.Errorf("n %d size %d: run [%d, %d)", tc.n, tc.size, from, to)
			}
			for i := from; i < to; i++ {
				seen[i].Add(1)
			}
		})
		for i := range seen {
			if c := seen[i].Load(); c != 1 {
				t.Fatalf("n %d size %d: item %d given %d times", tc.n, tc.size, i, c)
			}
		}
		if tc.n > 0 && runtime.GOMAXPROCS(0) > 1 && tc.n >= runtime.GOMAXPROCS(0) && runs.Load() < int32(runtime.GOMAXPROCS(0)) {
			t.Errorf("n %d size %d: %d runs, fewer than the workers", tc.n, tc.size, runs.Load())
		}
	}
}

// The workers run at once: a run waits for another to start.
func TestEachRunsOnEveryCore(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one core")
	}
	started := make(chan struct{}, 2)
	Each(2, 1, func(from, to int) {
		started <- struct{}{}
		// Both runs must have started before either ends.
		for len(started) < 2 {
			runtime.Gosched()
		}
	})
}
