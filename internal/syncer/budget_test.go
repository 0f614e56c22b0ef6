package syncer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"cspool/internal/api"
)

// TestPacedToSpoolBudget: the device paces its long-polls and appends by
// the budget its spool states (api.HeaderBudget), the same share of it
// as at the budget of the spools before: five times as fast at the
// minute a nonce is now held, slower at a budget configured smaller
// (which the fixed paces overran: 429 for the user's every device) or
// mostly held (by another busy device), no faster than ten times the
// base however large the budget stated, and not at all over a store in
// this process. Paces set in the config stay.
func TestPacedToSpoolBudget(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	paces := func(what string, s *Syncer, pollRate float64, pollBurst int, appendRate float64, appendBurst int) {
		t.Helper()
		near := func(a, b float64) bool { return math.Abs(a-b) < 0.01*b }
		if got := float64(s.polls.Limit()); !near(got, pollRate) || s.polls.Burst() != pollBurst {
			t.Errorf("%s: long-polls %.2f a second after %d, want %.2f after %d", what, got, s.polls.Burst(), pollRate, pollBurst)
		}
		if got := float64(s.appends.Limit()); !near(got, appendRate) || s.appends.Burst() != appendBurst {
			t.Errorf("%s: appends %.2f a second after %d, want %.2f after %d", what, got, s.appends.Burst(), appendRate, appendBurst)
		}
	}

	s, _ := h.device("a")
	paces("before the spool answered", s, 10, 600, 12, 2000)
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	five := (16384 / 61.0) / (16384 / 301.0)
	paces("after a read, the default budget (16384 requests held 61 s)", s, 10*five, 600, 12*five, 2000)

	h.mod = func(c *api.Config) { c.MaxNonces = 1000 }
	h.stop()
	h.start()
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	small := (1000 / 61.0) / (16384 / 301.0)
	paces("a spool's budget of 1000", s, 10*small, 600*1000/16384, 12*small, 2000*1000/16384)

	// A spool that states a budget of one request an hour: each change
	// would wait an hour for its turn, and the client with it.
	hostile, _ := h.deviceWith("h", Config{Source: &statedBudget{Source: StoreSource{Store: h.store, User: "alice"}, n: 1, w: time.Hour}})
	if _, err := hostile.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	paces("a budget of one request an hour", hostile, 1, 1, 1, 1)

	// A spool that states the largest budget the client takes, 2^31-1
	// requests a second, and answers every long-poll at once: a device
	// paced to it read without pause.
	lavish, _ := h.deviceWith("l", Config{Source: &statedBudget{Source: StoreSource{Store: h.store, User: "alice"}, n: math.MaxInt32, w: time.Second}})
	if _, err := lavish.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	paces("a budget of 2^31-1 requests a second", lavish, 100, 6000, 120, 20000)

	// Another device of the user busy too: with more than 70% of the
	// budget held, the paces shrink with what is left; at half, not.
	busy := &statedBudget{Source: StoreSource{Store: h.store, User: "alice"}, n: 16384, w: 61 * time.Second, held: 16384 * 9 / 10}
	shared, _ := h.deviceWith("s", Config{Source: busy})
	if _, err := shared.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	paces("90% of the budget held", shared, 10*five*0.35, 210, 12*five*0.35, 700)
	busy.held = 16384 / 2
	if _, err := shared.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	paces("half of the budget held", shared, 10*five, 600, 12*five, 2000)

	set, _ := h.deviceWith("b", Config{AppendRate: 5, AppendBurst: 7})
	if _, err := set.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if set.appends.Limit() != 5 || set.appends.Burst() != 7 {
		t.Errorf("appends paced in the config: %v after %d, want 5 after 7 kept", set.appends.Limit(), set.appends.Burst())
	}

	r := newRig(t)
	local, _ := r.device("c", nil, nil)
	if local.polls.Limit() != rate.Inf || local.appends.Limit() != rate.Inf {
		t.Errorf("over a store in this process: long-polls %v, appends %v a second; want no bound", local.polls.Limit(), local.appends.Limit())
	}
}

// statedBudget is a source that states the budget n in w, held of it
// held.
type statedBudget struct {
	Source
	n, held int
	w       time.Duration
}

func (b *statedBudget) Budget() (int, time.Duration, int, bool) { return b.n, b.w, b.held, true }

// TestWaitsAsRefusalAsks: a device whose key's budget is spent (429)
// waits as long as the spool's Retry-After says, where it retried after
// 0.25, 0.5, 1 and 2 s (each refused again, each a signature the spool
// checks), and logs the refusal as one, not as a spool it cannot reach.
func TestWaitsAsRefusalAsks(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	h.mod = func(c *api.Config) { c.MaxNonces = 3 }
	h.stop()
	h.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := other.Head(ctx); err != nil {
			if !errors.Is(err, api.ErrTooManyRequests) {
				t.Fatal(err)
			}
			break
		}
	}
	client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	var logMu sync.Mutex
	src := &readCounter{Source: client}
	s, _ := h.deviceWith("a", Config{Source: src, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logged, mu: &logMu}, nil))})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(runCtx) }()
	time.Sleep(4 * time.Second)
	stop()
	<-done
	src.mu.Lock()
	n := src.reads
	src.mu.Unlock()
	if n > 1 {
		t.Errorf("the device read %d times in 4 s after a 429 asking it to wait about a minute, want once", n)
	}
	logMu.Lock()
	log := logged.String()
	logMu.Unlock()
	if !strings.Contains(log, "spool answered with an error; retrying") || strings.Contains(log, "spool unreachable") {
		t.Errorf("the 429 logged as:\n%s\nwant it as an answer, not as a spool out of reach", log)
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
