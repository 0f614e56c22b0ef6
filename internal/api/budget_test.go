package api

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBudgetStated: every answer to a request whose signer passed states
// the signer's nonce budget (HeaderBudget), a 429 for it included, and the
// client keeps it; a stranger hears nothing of it. A device paces its
// requests by it (syncer.Budgeted): without it, a device could only
// assume the budget of the spools before it.
func TestBudgetStated(t *testing.T) {
	const budget = 40
	e := newEnv(t, false, func(c *Config) { c.MaxNonces = budget; c.RefusalRate = -1 })
	ctx := testCtx(t)
	// A minute behind, and the second after: the default window; and
	// how many of the key's requests it holds, this one included.
	resp, msg := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice})
	if want := "40/61; held=1"; resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderBudget) != want {
		t.Errorf("alice's read: %d %q, %s %q; want 200 with %q", resp.StatusCode, msg, HeaderBudget, resp.Header.Get(HeaderBudget), want)
	}
	resp, _ = e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice})
	if want := "40/61; held=2"; resp.Header.Get(HeaderBudget) != want {
		t.Errorf("alice's second read: %s %q, want %q", HeaderBudget, resp.Header.Get(HeaderBudget), want)
	}
	resp, _ = e.send(t, rawRequest{method: "POST", path: "/v1/users/alice/entries", body: EncodeBatch([][]byte{e.delivery(t, "alice", "mail")}), key: e.spoolK})
	if got := resp.Header.Get(HeaderBudget); resp.StatusCode != http.StatusOK || got != "262144/61; held=1" {
		t.Errorf("the spool key's append: %d, %s %q; want 200 with the spool key's budget, 262144/61; held=1", resp.StatusCode, HeaderBudget, got)
	}
	for _, rr := range []rawRequest{
		{method: "GET", path: "/v1/users/alice/head", key: e.stranger},
		{method: "GET", path: "/v1/users/alice/head", key: e.bob},
		{method: "GET", path: "/v1/users/alice/head", noSign: true},
	} {
		if resp, _ := e.send(t, rr); resp.Header.Get(HeaderBudget) != "" {
			t.Errorf("a request refused with %d states a budget: %q", resp.StatusCode, resp.Header.Get(HeaderBudget))
		}
	}

	c := e.client(t, "alice", e.alice)
	if _, _, _, ok := c.Budget(); ok {
		t.Errorf("a client that asked nothing yet knows a budget")
	}
	if _, err := c.Head(ctx); err != nil {
		t.Fatal(err)
	}
	if n, w, held, ok := c.Budget(); !ok || n != budget || w != 61*time.Second || held != 3 {
		t.Errorf("client's budget after a read: %d, %v, %d held, %v; want %d, 61s, 3 held", n, w, held, ok, budget)
	}
	var err error
	for i := 0; i < 2*budget && err == nil; i++ {
		_, err = c.Head(ctx)
	}
	if !errors.Is(err, ErrTooManyRequests) {
		t.Fatalf("alice past her budget: %v, want 429", err)
	}
	resp, _ = e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice})
	if want := "40/61; held=40"; resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(HeaderBudget) != want {
		t.Errorf("alice past her budget: %d, %s %q; want 429 with %q", resp.StatusCode, HeaderBudget, resp.Header.Get(HeaderBudget), want)
	}
}

// TestClientBudgetBounded: the spool is not trusted, so a budget header
// out of form or bounds is ignored, and the last good one kept.
func TestClientBudgetBounded(t *testing.T) {
	e := newEnv(t, false, nil)
	c := e.client(t, "alice", e.alice)
	answer := func(v string) {
		c.learnBudget(&http.Response{Header: http.Header{HeaderBudget: []string{v}}})
	}
	answer("500/30; held=7")
	for _, bad := range []string{"", "500/30", "500", "0/30; held=0", "500/0; held=1", "-1/30; held=1", "500/3601; held=1", "500/30/1; held=1",
		"99999999999/30; held=1", " 500/30; held=1", strings.Repeat("9", 40) + "/30; held=1", "500/30; held=501", "500/30; held=-1", "500/30; held="} {
		answer(bad)
		if n, w, held, ok := c.Budget(); !ok || n != 500 || w != 30*time.Second || held != 7 {
			t.Errorf("after %s %q: %d, %v, %d held, %v; want the earlier 500/30, 7 held, kept", HeaderBudget, bad, n, w, held, ok)
		}
	}
}
