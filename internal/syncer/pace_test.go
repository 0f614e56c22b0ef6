package syncer

import (
	"context"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/spool"
)

// pollCounter counts a source's long-polls (reads with a wait).
type pollCounter struct {
	Source
	mu    sync.Mutex
	polls int
}

func (c *pollCounter) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	if wait > 0 {
		c.mu.Lock()
		c.polls++
		c.mu.Unlock()
	}
	return c.Source.ReadLog(ctx, after, n, b, wait)
}

func (c *pollCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.polls
}

// TestLongPollsPaced: a burst of deliveries, each of which ends a
// long-poll, makes no more long-polls than Config.PollRate allows after
// its burst, and a change of the device's own is still read at once. Each
// delivery made a read of its own, and 20,000 deliveries in 90 s spent the
// user key's nonce budget on the spool: 429 for 4.5 minutes.
func TestLongPollsPaced(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	src := &pollCounter{Source: StoreSource{Store: r.log, User: "alice"}}
	s, _ := r.device("a", src, nil)
	s.polls.SetLimit(2)
	s.polls.SetBurst(3)
	defer run(t, s)()

	start := time.Now()
	const n = 150
	var head uint64
	for i := range n {
		head, _ = r.seal(r.spool, msg(i))
		time.Sleep(4 * time.Millisecond)
	}
	waitPosition(t, s, head, 30*time.Second)
	elapsed := time.Since(start)
	// The bucket's own bound, and one long-poll in flight at the start.
	bound := 3 + int(2*elapsed.Seconds()) + 1
	if got := src.count(); got > bound {
		t.Errorf("%d deliveries over %v made %d long-polls, want at most %d (3 at once, then 2 a second)", n, elapsed.Round(time.Millisecond), got, bound)
	}

	// The bucket is empty for a long while now; a change of this device
	// is read and applied all the same.
	s.polls.SetLimit(0.001)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Paced"})
	if err != nil || len(out) != 1 {
		t.Fatalf("Submit with the long-polls' share spent: %v, %v", out, err)
	}
}

// waitPosition waits until s has applied through pos.
func waitPosition(t *testing.T, s *Syncer, pos uint64, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for s.Status().Position < pos {
		if time.Now().After(deadline) {
			t.Fatalf("position %d after %v, want %d", s.Status().Position, limit, pos)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
