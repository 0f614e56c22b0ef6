// Package cores runs work that depends on its input alone on every core.
package cores

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Each calls fn for the items [0, n) in runs [from, to) of at most size,
// on every core (GOMAXPROCS workers, fewer when there are fewer items):
// each worker takes the next run, so fn writes its results at their own
// index, in order whatever each item costs. A run is also cut so that
// every worker gets one when there are few items. Each returns once every
// run is done.
func Each(n, size int, fn func(from, to int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 0 {
		return
	}
	size = max(1, min(size, (n+workers-1)/workers))
	var next atomic.Int64
	work := func() {
		for {
			from := int(next.Add(int64(size))) - size
			if from >= n {
				return
			}
			fn(from, min(from+size, n))
		}
	}
	if workers == 1 {
		work()
		return
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(work)
	}
	wg.Wait()
}
