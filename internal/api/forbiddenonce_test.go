package api

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestForbiddenSpendsTheNonce: a request whose signature verifies but
// whose key may not do what it asks (bob's key on alice's log, the spool
// key reading) spends its nonce as an accepted one does. A copy of it is
// refused as replayed, and the key's fresh requests so refused take its
// own budget, up to a 429. Before, the 403 came before the nonce was
// taken: one such request, signed once by a user's key (or by a device
// given the wrong user's name, and captured on its way), could be sent
// again as fast as the server answered for as long as its timestamp was
// in the window, each copy verified, answered 403 at once and logged,
// never slowed as a refusal and at no cost to any budget.
func TestForbiddenSpendsTheNonce(t *testing.T) {
	const budget = 4
	e := newEnv(t, false, func(c *Config) {
		c.RefusalRate = -1
		c.MaxNonces = budget
	})
	// signed returns a request of key to path and a function that makes
	// a copy of it, byte for byte.
	signed := func(method, path string, body []byte, key *keys.SecretKey) func() *http.Request {
		t.Helper()
		req, err := http.NewRequest(method, e.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(req, body, key, time.Now()); err != nil {
			t.Fatal(err)
		}
		auth := req.Header.Get("Authorization")
		return func() *http.Request {
			var rd *bytes.Reader
			if body != nil {
				rd = bytes.NewReader(body)
			}
			c, err := http.NewRequest(method, e.srv.URL+path, nil)
			if rd != nil {
				c, err = http.NewRequest(method, e.srv.URL+path, rd)
				c.Header.Set("Content-Type", ContentType)
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Header.Set("Authorization", auth)
			return c
		}
	}
	batch := EncodeBatch([][]byte{e.delivery(t, "alice", "x")})
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		key                *keys.SecretKey
	}{
		{"bob reads alice's head", "GET", "/v1/users/alice/head", nil, e.bob},
		{"bob reads alice's entries", "GET", "/v1/users/alice/entries", nil, e.bob},
		{"bob appends to alice's log", "POST", "/v1/users/alice/entries", batch, e.bob},
		{"the spool key reads", "GET", "/v1/users/alice/entries", nil, e.spoolK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			copyOf := signed(tc.method, tc.path, tc.body, tc.key)
			resp, msg := e.do(t, copyOf())
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("first: %d %s, want 403", resp.StatusCode, msg)
			}
			if v := resp.Header.Get(HeaderBudget); v != "" {
				t.Errorf("first: %s %q on the 403, want none", HeaderBudget, v)
			}
			for i := range 3 {
				resp, msg := e.do(t, copyOf())
				if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(HeaderReplayed) != "1" {
					t.Fatalf("copy %d: %d %s (%s: %q), want 401 replayed", i+1, resp.StatusCode, msg, HeaderReplayed, resp.Header.Get(HeaderReplayed))
				}
			}
		})
	}
	// bob's budget holds the three requests above and one more of these;
	// the next is over it, and so is his own read.
	for i, want := range []int{http.StatusForbidden, http.StatusTooManyRequests} {
		if resp, msg := e.do(t, signed("GET", "/v1/users/alice/head", nil, e.bob)()); resp.StatusCode != want {
			t.Fatalf("bob's fresh request %d on alice's log: %d %s, want %d", i+1, resp.StatusCode, msg, want)
		}
	}
	if resp, msg := e.do(t, signed("GET", "/v1/users/bob/head", nil, e.bob)()); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("bob's own read after: %d %s, want 429", resp.StatusCode, msg)
	}
	// Nobody else noticed.
	if _, err := e.client(t, "alice", e.alice).Head(testCtx(t)); err != nil {
		t.Fatalf("alice's read: %v", err)
	}
}
