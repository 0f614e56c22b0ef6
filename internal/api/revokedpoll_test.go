package api

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestLongPollOfReplacedKey: a long-poll waiting when its key leaves the
// users file (the line replaced, the file reloaded) is answered 401 once
// the log moves, with no entry, whether it waits parked or in its handler
// (a client that closes its connection after each request), and 403 if
// the key went to another name (the user renamed). Before, it was
// answered with the entries appended after the change: a stolen device
// whose key the operator had just replaced was sent the next delivery.
func TestLongPollOfReplacedKey(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keepAlive bool
		renamed   bool // alice renamed robert, her key with her: 403
	}{
		{"parked", true, false},
		{"in its handler", false, false},
		{"parked, the user renamed", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &recMetrics{}
			e := newEnv(t, false, func(c *Config) { c.Metrics = m })
			ctx := testCtx(t)
			hc := e.srv.Client()
			if !tc.keepAlive {
				hc = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			}
			c, err := NewClient(e.srv.URL, "alice", e.alice, hc)
			if err != nil {
				t.Fatal(err)
			}
			waiting := func() int {
				m.mu.Lock()
				defer m.mu.Unlock()
				n := 0
				for _, d := range m.polls {
					n += d
				}
				return n
			}
			poll := startPoll(ctx, c, 0, longWait)
			waitFor(t, "alice's long-poll waiting", func() bool { return waiting() == 1 })
			if got := e.api.parkedCount(); (got == 1) != tc.keepAlive {
				t.Fatalf("%d reads parked, want parked %v", got, tc.keepAlive)
			}

			newKey := genKey(t)
			text := "alice " + newKey.Public().String() + "\nbob " + e.bob.Public().String() + "\n"
			want := ErrUnauthenticated
			if tc.renamed {
				text = "robert " + e.alice.Public().String() + "\nbob " + e.bob.Public().String() + "\n"
				want = ErrForbidden
			}
			if err := os.WriteFile(filepath.Join(e.dir, "users"), []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := e.users.Reload(); err != nil {
				t.Fatal(err)
			}
			if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("after the change")}); err != nil {
				t.Fatal(err)
			}
			r := <-poll
			if len(r.entries) != 0 || !errors.Is(r.err, want) {
				t.Fatalf("long-poll of the replaced key = %d entries, head %d, %v; want none and %v",
					len(r.entries), r.head, r.err, want)
			}
			// Its next request is refused as well.
			if _, err := c.Head(ctx); !errors.Is(err, want) {
				t.Fatalf("next request of the replaced key: %v, want %v", err, want)
			}
		})
	}
}
