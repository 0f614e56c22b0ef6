package submit

import (
	"context"
	"net"
	"sync"
	"time"
)

// Throttle slows password guessing: the listener tells it of every failed
// login and waits for its answer before replying.
type Throttle interface {
	// Failed records a failed login from remote, the failures-th on its
	// connection. It returns when the reply may be sent (or ctx is done),
	// and whether the connection must then be closed.
	Failed(ctx context.Context, remote net.Addr, failures int) (closeConn bool)
}

// ThrottleConfig configures the throttle New uses when Config.Throttle is
// nil. Zero fields take the documented defaults.
type ThrottleConfig struct {
	// Delay is the wait after a source's first failure; it doubles with
	// each further failure from the same source within Window, up to
	// MaxDelay. Zero means 1 s.
	Delay time.Duration
	// MaxDelay caps the wait. Zero means 16 s.
	MaxDelay time.Duration
	// Window is how long a source's failures are remembered. Zero means 15
	// minutes.
	Window time.Duration
	// PerConnection is how many failures close a connection. Zero means 3.
	PerConnection int
	// MaxSources bounds the sources remembered (the oldest are forgotten
	// first). Zero means 10000.
	MaxSources int
}

// NewThrottle returns the default Throttle: per source address, each
// failure within the window doubles the delay before the reply; per
// connection, a few failures close it.
func NewThrottle(c ThrottleConfig) Throttle {
	if c.Delay <= 0 {
		c.Delay = time.Second
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = 16 * time.Second
	}
	if c.Window <= 0 {
		c.Window = 15 * time.Minute
	}
	if c.PerConnection <= 0 {
		c.PerConnection = 3
	}
	if c.MaxSources <= 0 {
		c.MaxSources = 10000
	}
	return &throttle{cfg: c, sources: map[string]*source{}}
}

type throttle struct {
	cfg     ThrottleConfig
	mu      sync.Mutex
	sources map[string]*source
}

type source struct {
	failures int
	last     time.Time
}

func (t *throttle) Failed(ctx context.Context, remote net.Addr, failures int) bool {
	host := remote.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	now := time.Now()
	t.mu.Lock()
	s := t.sources[host]
	if s == nil || now.Sub(s.last) > t.cfg.Window {
		if len(t.sources) >= t.cfg.MaxSources {
			t.forgetOldest()
		}
		s = &source{}
		t.sources[host] = s
	}
	s.failures++
	s.last = now
	delay := t.cfg.Delay
	for i := 1; i < s.failures && delay < t.cfg.MaxDelay; i++ {
		delay *= 2
	}
	delay = min(delay, t.cfg.MaxDelay)
	t.mu.Unlock()
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	return failures >= t.cfg.PerConnection
}

// forgetOldest drops the source whose last failure is oldest; t.mu held.
func (t *throttle) forgetOldest() {
	var oldest string
	var at time.Time
	for h, s := range t.sources {
		if oldest == "" || s.last.Before(at) {
			oldest, at = h, s.last
		}
	}
	delete(t.sources, oldest)
}
