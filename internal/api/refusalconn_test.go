package api

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestRefusalsSlowedOnFreshConnections: an address whose refused requests
// each come on a connection of their own, closed after its answer, is
// slowed as one that keeps its connections. Its rate of refusals was kept
// with its connections and forgotten when the last closed, so a client
// that opened one connection at a time got a fresh burst on each and
// every refusal at once: thousands a second on a fast path.
func TestRefusalsSlowedOnFreshConnections(t *testing.T) {
	const rate = 10
	e := newEnv(t, false, func(c *Config) { c.RefusalRate = rate })
	req, err := http.NewRequest("GET", e.srv.URL+"/v1/users/alice/head", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(req, nil, e.stranger, time.Now()); err != nil {
		t.Fatal(err)
	}
	req.Close = true
	start := time.Now()
	n := 0
	for time.Since(start) < 2*time.Second && n < 10000 {
		c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := req.Write(c); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("refusal %d: %d, want 401", n+1, resp.StatusCode)
		}
		n++
	}
	took := time.Since(start).Seconds()
	// Tokens: the burst and the rate; held to the cap without a token:
	// once per maxRefusalDelay; plus the one in flight.
	bound := rate*(refusalBurst+took) + took/maxRefusalDelay.Seconds() + 2
	t.Logf("%d refusals in %.1f s on a connection each (bound %.0f)", n, took, bound)
	if float64(n) > bound {
		t.Errorf("one address, a connection a request: %d refusals answered in %.1f s, want at most %.0f", n, took, bound)
	}
}
