package api

import (
	"context"
	"sync"
)

// byteBudget bounds the bytes of checkpoint uploads the server holds at
// once, across all users: an upload takes its size from it before its body
// is read and gives it back once the store has taken the checkpoint. Many
// small uploads go through together; a large one waits for room.
type byteBudget struct {
	mu      sync.Mutex
	limit   int64
	held    int64
	peak    int64           // the most held at once, for tests and figures
	waiting int             // acquires waiting for room
	freed   chan struct{}   // closed (and replaced) whenever bytes are given back
	onWait  func(delta int) // told +1 when an acquire starts waiting, -1 when it stops; called under mu
	onHeld  func(n int64)   // told n bytes taken, -n given back (Config.MemoryHeld); nil: no one
}

func newByteBudget(limit int64, onWait func(delta int), onHeld func(n int64)) *byteBudget {
	return &byteBudget{limit: limit, freed: make(chan struct{}), onWait: onWait, onHeld: onHeld}
}

// acquire takes n bytes (at most limit) from the budget, waiting for room
// until ctx is done; it reports whether it took them.
func (b *byteBudget) acquire(ctx context.Context, n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	waited := false
	for b.held+n > b.limit {
		if ctx.Err() != nil {
			if waited {
				b.onWait(-1)
			}
			return false
		}
		freed := b.freed
		if !waited {
			waited = true
			b.onWait(+1) // under mu: state and onWait agree
		}
		b.waiting++
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
		}
		b.mu.Lock()
		b.waiting--
	}
	if waited {
		b.onWait(-1)
	}
	b.held += n
	b.peak = max(b.peak, b.held)
	if b.onHeld != nil {
		b.onHeld(n)
	}
	return true
}

// release gives back n bytes taken by acquire.
func (b *byteBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if b.onHeld != nil {
		b.onHeld(-n)
	}
	close(b.freed)
	b.freed = make(chan struct{})
}

// state returns the bytes held now, the most held at once so far, and the
// acquires waiting.
func (b *byteBudget) state() (held, peak int64, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak, b.waiting
}
