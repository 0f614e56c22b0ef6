package api

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
	"time"

	"cspool/internal/spool/sqlitestore"
)

// restart stops e's server and store and starts a new api.Server on a new
// store handle on the same directory, with the default start time.
func (e *env) restart(t *testing.T, mod func(*Config)) {
	t.Helper()
	e.srv.Close()
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	var err error
	if e.store, err = sqlitestore.Open(e.dir, sqlitestore.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.store.Close() })
	cfg := Config{Store: e.store, Users: e.users, SpoolKey: e.spoolK.Public(), Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	e.api = NewServer(cfg)
	e.srv = serve(t, e.api)
}

// TestReplayAfterRestart captures a signed append, restarts the server on
// the same store directory, and replays it: refused, nothing appended. The
// users' own clients then go on at once, whatever their clocks.
func TestReplayAfterRestart(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	body := EncodeBatch([][]byte{[]byte("flag message 3 as read")})
	captured, err := http.NewRequest("POST", e.srv.URL+"/v1/users/alice/entries", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	captured.Header.Set("Content-Type", ContentType)
	if err := SignRequest(captured, body, e.alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	replay := func() *http.Request {
		r, err := http.NewRequest("POST", e.srv.URL+"/v1/users/alice/entries", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header = captured.Header.Clone()
		return r
	}
	if resp, msg := e.do(t, replay()); resp.StatusCode != http.StatusOK {
		t.Fatalf("the original append: %d %s", resp.StatusCode, msg)
	}

	e.restart(t, nil)
	resp, msg := e.do(t, replay())
	if resp.StatusCode == http.StatusOK {
		t.Errorf("the append replayed after a restart was accepted")
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(HeaderEarliestTS) == "" {
		t.Errorf("replay after restart: %d %q, %s %q; want 503 with %s", resp.StatusCode, msg,
			HeaderEarliestTS, resp.Header.Get(HeaderEarliestTS), HeaderEarliestTS)
	}
	if h, err := e.store.Head(ctx, "alice"); err != nil || h != 1 {
		t.Errorf("head after the replay = %d, %v; want 1 (nothing appended)", h, err)
	}

	// Honest clients, signing now, or with a clock behind or ahead of the
	// server's by more than it allows, re-sign once and succeed.
	for i, skew := range []time.Duration{0, -10 * time.Minute, -50 * time.Second, 2 * time.Minute} {
		c := e.client(t, "alice", e.alice)
		c.now = func() time.Time { return time.Now().Add(skew) }
		first, err := c.Append(ctx, "alice", [][]byte{[]byte("new")})
		if err != nil || first != uint64(i+2) {
			t.Fatalf("client with a clock %v off, after the restart: append at %d, %v; want %d", skew, first, err, i+2)
		}
		if _, err := c.Head(ctx); err != nil {
			t.Errorf("client with a clock %v off: second request: %v", skew, err)
		}
	}
}

// TestClientLearnsServerClock: a client whose clock is off by more than the
// server allows re-signs with the server's time once, then keeps the
// correction; a replay stays refused.
func TestClientLearnsServerClock(t *testing.T) {
	m := &recMetrics{}
	e := newEnv(t, false, func(c *Config) { c.Metrics = m })
	ctx := testCtx(t)
	for _, skew := range []time.Duration{-time.Hour, 10 * time.Minute} {
		m.mu.Lock()
		m.auth = nil
		m.mu.Unlock()
		c := e.client(t, "alice", e.alice)
		c.now = func() time.Time { return time.Now().Add(skew) }
		for i := range 3 {
			if _, err := c.Head(ctx); err != nil {
				t.Fatalf("clock %v off, request %d: %v", skew, i+1, err)
			}
		}
		m.mu.Lock()
		refusals := m.auth
		m.mu.Unlock()
		if len(refusals) != 1 || refusals[0] != AuthReasonStale {
			t.Errorf("clock %v off: refusals %q, want one %s", skew, refusals, AuthReasonStale)
		}
	}
	resp, _ := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice, at: -time.Hour})
	earliest, err := strconv.ParseInt(resp.Header.Get(HeaderEarliestTS), 10, 64)
	if resp.StatusCode != http.StatusUnauthorized || err != nil || resp.Header.Get("Date") == "" {
		t.Fatalf("stale request: %d, %s %q, Date %q; want 401 with both", resp.StatusCode, HeaderEarliestTS,
			resp.Header.Get(HeaderEarliestTS), resp.Header.Get("Date"))
	}
	if want := time.Now().Add(-time.Minute).Unix(); earliest < want-5 || earliest > want+5 {
		t.Errorf("%s = %d, want about %d (now minus the minute allowed)", HeaderEarliestTS, earliest, want)
	}
}

// TestHealthTellsTheFence: a device that probed a restarted server (its
// /v1/health, as the sync loop does while the spool does not answer)
// signs its next request after the restart fence, so that request is not
// refused once and signed again: all devices of a restarted server come
// back at once, and each refusal is a round trip for each. Before, the
// first request after the probe was refused (503, restart rule).
func TestHealthTellsTheFence(t *testing.T) {
	m := &recMetrics{}
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	e.restart(t, func(c *Config) { c.Metrics = m })
	c := e.client(t, "alice", e.alice)
	if err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := c.Head(ctx); err != nil {
			t.Fatalf("request %d after the probe: %v", i+1, err)
		}
	}
	m.mu.Lock()
	refusals := m.auth
	m.mu.Unlock()
	if len(refusals) != 0 {
		t.Errorf("requests after a probe of the restarted server were refused: %q, want none", refusals)
	}
	// The answer names the earliest timestamp the server takes.
	resp, err := http.Get(e.srv.URL + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := strconv.ParseInt(resp.Header.Get(HeaderEarliestTS), 10, 64); resp.StatusCode != http.StatusOK || err != nil {
		t.Errorf("health: %d, %s %q; want 200 with it", resp.StatusCode, HeaderEarliestTS, resp.Header.Get(HeaderEarliestTS))
	}
}
