package deliver

import (
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"cspool/internal/keys"
)

// countMetrics counts outcomes.
type countMetrics struct {
	mu sync.Mutex
	n  map[string]int
}

func (m *countMetrics) Delivery(outcome string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n[outcome]++
}

func TestLMTPMetricsOutcomes(t *testing.T) {
	f := newFixture(t, "alice", "bob")
	m := &countMetrics{n: map[string]int{}}
	addr := serve(t, f.d, LMTPOptions{Metrics: m, Domains: []string{"example.org"}, MaxMessageBytes: 100})
	c := dialLMTP(t, addr)
	sendGo(t, c, []byte("Subject: hi\r\n\r\nhello\r\n"), "alice@example.org", "bob@example.org", "nobody@example.org", "alice@elsewhere.net")
	sendGo(t, c, []byte("Subject: big\r\n\r\n"+strings.Repeat("x", 200)+"\r\n"), "alice@example.org")
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]int{OutcomeOK: 2, OutcomeUnknownUser: 1, OutcomeUnknownDomain: 1, OutcomeTooLarge: 1}
	if !maps.Equal(m.n, want) {
		t.Errorf("outcomes %v, want %v", m.n, want)
	}
}

func TestOutcomeOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, OutcomeOK},
		{fmt.Errorf("x: %w", keys.ErrUnknownUser), OutcomeUnknownUser},
		{errNotLocalDomain, OutcomeUnknownDomain},
		{fmt.Errorf("x: %w", ErrTooLarge), OutcomeTooLarge},
		{fmt.Errorf("x: %w", ErrResources), OutcomeResources},
		{fmt.Errorf("disk on fire"), OutcomeTemporary},
	} {
		if got := OutcomeOf(c.err); got != c.want {
			t.Errorf("OutcomeOf(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
