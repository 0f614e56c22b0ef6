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

// crowdedSource has another writer append before each of the device's
// first crowd appends, so each of them is refused: the head moved.
type crowdedSource struct {
	StoreSource
	other    func()
	mu       sync.Mutex
	crowd    int
	attempts int
}

func (c *crowdedSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	c.mu.Lock()
	c.attempts++
	crowded := c.attempts <= c.crowd
	c.mu.Unlock()
	if crowded {
		c.other()
	}
	return c.StoreSource.AppendAt(ctx, user, head, batch)
}

// TestConflictRetriesPaced: an append refused because another writer
// moved the head is sent again only in its turn (Config.AppendRate), for
// the two requests each refusal costs (the read of the entry after the
// refused head, and the append again). Two devices changing things at
// once refused each other's appends thousands of times, each refusal
// sent again at once, and spent their user's budget on the spool in 24 s.
func TestConflictRetriesPaced(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const refusals, burst = 6, 20
	src := &crowdedSource{StoreSource: StoreSource{Store: r.log, User: "alice"}, crowd: refusals}
	i := 0
	src.other = func() { i++; r.seal(r.spool, msg(i)) }
	// Tokens come back too slowly to count: what is spent shows.
	s, _ := r.deviceWith("a", Config{Source: src, AppendRate: 0.001, AppendBurst: burst})
	defer run(t, s)()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Crowded"})
	if err != nil || len(out) != 1 {
		t.Fatalf("Submit refused %d times: %v, %v", refusals, out, err)
	}
	src.mu.Lock()
	attempts := src.attempts
	src.mu.Unlock()
	spent := burst - s.appends.Tokens()
	if want := float64(1 + 2*refusals); attempts != refusals+1 || spent < want-0.5 {
		t.Errorf("%d append attempts spent %.1f turns, want %d attempts and %.0f turns (the group's, and two for each refusal)", attempts, spent, refusals+1, want)
	}
}
