package api

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// recMetrics records every call to Metrics.
type recMetrics struct {
	mu       sync.Mutex
	requests []string
	auth     []string
	polls    []int
	appends  int
	delivery []int

	cpHeld    int64
	cpWaiting int
	cpRefused []string
	apRefused []string
	rdRefused []string
}

func (m *recMetrics) Request(method, route string, status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests = append(m.requests, fmt.Sprintf("%s %s %d", method, route, status))
}

func (m *recMetrics) AuthFailure(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.auth = append(m.auth, reason)
}

func (m *recMetrics) LongPoll(d int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.polls = append(m.polls, d)
}

func (m *recMetrics) StoreAppend(time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appends++
}

func (m *recMetrics) Delivery(status int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.delivery = append(m.delivery, status)
}

func (m *recMetrics) CheckpointHeld(d int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cpHeld += d
}

func (m *recMetrics) CheckpointWaiting(d int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cpWaiting += d
}

func (m *recMetrics) CheckpointRefused(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cpRefused = append(m.cpRefused, reason)
}

func (m *recMetrics) AppendRefused(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apRefused = append(m.apRefused, reason)
}

func (m *recMetrics) ReadRefused(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rdRefused = append(m.rdRefused, reason)
}

// readRefusals returns what ReadRefused was told.
func (m *recMetrics) readRefusals() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.rdRefused)
}

// appendRefusals returns what AppendRefused was told.
func (m *recMetrics) appendRefusals() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.apRefused)
}

// checkpoints returns what the checkpoint hooks were told.
func (m *recMetrics) checkpoints() (held int64, waiting int, refused []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cpHeld, m.cpWaiting, slices.Clone(m.cpRefused)
}

func TestMetricsHooks(t *testing.T) {
	m := &recMetrics{}
	e := newEnv(t, false, func(c *Config) { c.Metrics = m })
	ctx := testCtx(t)
	alice := e.client(t, "alice", e.alice)
	if _, err := alice.Append(ctx, "alice", [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := alice.Read(ctx, 1, 10, 1<<20, time.Second); err != nil {
		t.Fatal(err)
	}
	spool := e.client(t, "alice", e.spoolK)
	if _, err := spool.Append(ctx, "alice", [][]byte{e.delivery(t, "alice", "y")}); err != nil {
		t.Fatal(err)
	}
	e.send(t, rawRequest{method: "GET", path: "/v1/users/bob/head", key: e.alice})
	e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.spoolK})
	e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", noSign: true})
	e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.stranger})
	e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice, at: -time.Hour})
	e.send(t, rawRequest{method: "GET", path: "/nowhere", noSign: true})

	m.mu.Lock()
	defer m.mu.Unlock()
	wantAuth := []string{AuthReasonForbidden, AuthReasonSpoolKeyForbidden, AuthReasonMissing, AuthReasonUnknownKey, AuthReasonStale}
	if !slices.Equal(m.auth, wantAuth) {
		t.Errorf("auth failures %q, want %q", m.auth, wantAuth)
	}
	wantReq := []string{
		"POST /v1/users/{user}/entries 200", "GET /v1/users/{user}/entries 200", "POST /v1/users/{user}/entries 200",
		"GET /v1/users/{user}/head 403", "GET /v1/users/{user}/head 403", "GET /v1/users/{user}/head 401",
		"GET /v1/users/{user}/head 401", "GET /v1/users/{user}/head 401", "other other 404",
	}
	if !slices.Equal(m.requests, wantReq) {
		t.Errorf("requests\n%q\nwant\n%q", m.requests, wantReq)
	}
	if !slices.Equal(m.polls, []int{1, -1}) {
		t.Errorf("long-poll deltas %v, want [1 -1]", m.polls)
	}
	if m.appends != 2 {
		t.Errorf("%d store appends, want 2", m.appends)
	}
	// The spool key's forbidden read is not a delivery: only appends are.
	if !slices.Equal(m.delivery, []int{http.StatusOK}) {
		t.Errorf("deliveries %v, want [200]", m.delivery)
	}
}
