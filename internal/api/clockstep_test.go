package api

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestClockSteppedBackAfterStart: the server's wall clock steps back an
// hour just after its start (NTP correcting a clock that ran ahead, a
// virtual machine put back). The restart fence follows the clock: it
// stayed an hour ahead of every timestamp the window took, and every
// request of every user was refused (503, then 401 ahead) for that hour,
// and /v1/health waited for it.
func TestClockSteppedBackAfterStart(t *testing.T) {
	t.Parallel()
	// The clock read an hour more than now when the server started, a
	// moment ago by the monotonic clock.
	start := time.Now()
	e := newEnv(t, false, func(c *Config) {
		c.Started = start.Add(time.Hour)
		c.sinceStart = func() time.Duration { return time.Since(start) }
	})
	cl := e.client(t, "alice", e.alice)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Health(ctx); err != nil {
		t.Fatalf("health after the clock stepped back: %v", err)
	}
	if _, err := cl.Head(ctx); err != nil {
		t.Fatalf("a signed request after the clock stepped back: %v", err)
	}
	// A client whose clock reads as the server's did before the step
	// learns the server's clock and is taken too.
	ahead := e.client(t, "bob", e.bob)
	ahead.now = func() time.Time { return time.Now().Add(time.Hour) }
	if _, err := ahead.Head(ctx); err != nil {
		t.Fatalf("a client an hour ahead of the stepped clock: %v", err)
	}
}

// TestStaleInTheFirstSecond: a request whose timestamp is stale (its
// client's clock ten minutes behind) reaching a server in the first second
// after its start is refused when a timestamp can be accepted, so that its
// retry, signed at the earliest timestamp the refusal names, succeeds. It
// was refused at once, with an earliest timestamp more than FutureSkew
// ahead of the server's clock, the retry was refused as from the future,
// and the device took that second refusal for a key the server did not
// know and stopped syncing for ten minutes.
func TestStaleInTheFirstSecond(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, func(c *Config) { c.Started = time.Now() })
	cl := e.client(t, "alice", e.alice)
	cl.now = func() time.Time { return time.Now().Add(-10 * time.Minute) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Head(ctx); err != nil {
		t.Fatalf("a stale request in the first second after the start: %v", err)
	}
}

// TestServerClockNeverBack: the server's time for its timestamp rules
// follows the wall clock forward and never back: a wall clock set back
// (after running ahead) left the window where requests signed before the
// step, their nonces forgotten, were taken again (a captured delivery
// appended twice, and every device's alarm), and the restart fence ahead
// of every timestamp the window took.
func TestServerClockNeverBack(t *testing.T) {
	t.Parallel()
	start := time.Now()
	wall := start
	var mu sync.Mutex
	s := NewServer(Config{Store: nil, Started: start, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return wall }})
	set := func(w time.Time) { mu.Lock(); wall = w; mu.Unlock() }
	near := func(got, want time.Time, what string) {
		t.Helper()
		if d := got.Sub(want); d < -time.Second || d > 5*time.Second {
			t.Errorf("%s: the server's time is %v from %v", what, d, want)
		}
	}
	near(s.now(), start, "at the start")
	set(start.Add(-time.Hour))
	near(s.now(), start, "the wall clock an hour back")
	set(start.Add(time.Hour))
	near(s.now(), start.Add(time.Hour), "the wall clock an hour ahead")
	set(start)
	near(s.now(), start.Add(time.Hour), "the wall clock back from an hour ahead")
}
