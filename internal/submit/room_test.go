package submit

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

// TestRoomMessagesAtOnceAllEnd: messages that take room as they arrive,
// more of them than the budget holds at the limit, all end. Taken step by
// step without the banker's rule, each would hold part of the budget and
// wait for the rest, for ever.
func TestRoomMessagesAtOnceAllEnd(t *testing.T) {
	const limit = 1 << 20
	r := newRoom(2*limit, limit)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	start := make(chan struct{})
	for range 8 {
		c := r.claim()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.release()
			<-start
			for c.held < limit {
				if err := c.grow(ctx, r.next(c.held)); err != nil {
					errs <- err
					return
				}
				runtime.Gosched() // the others take their steps between ours
			}
			c.finish()
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a message did not get its room: %v", err)
	}
	if r.free != 2*limit || len(r.claims) != 0 {
		t.Errorf("after all ended: %d free, %d claims; want %d, 0", r.free, len(r.claims), 2*limit)
	}
}
