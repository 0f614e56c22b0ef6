package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	sp "cspool/internal/spool"
)

// TestQuotaStated: on a server with a quota, the answer to a read of a
// log says the log's usage and the quota, and the client keeps them; a
// server without one says nothing, and neither does an answer to another
// request.
func TestQuotaStated(t *testing.T) {
	const quota = 1 << 20
	e := newEnv(t, false, func(c *Config) { c.Quota = quota })
	ctx := testCtx(t)
	resp, _ := e.send(t, rawRequest{method: "POST", path: "/v1/users/alice/entries", body: EncodeBatch([][]byte{e.delivery(t, "alice", "mail")}), key: e.spoolK})
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderQuota) != "" {
		t.Fatalf("an append: %d, %s %q; want 200 without it", resp.StatusCode, HeaderQuota, resp.Header.Get(HeaderQuota))
	}
	usage, err := e.store.Usage(ctx, "alice")
	if err != nil || usage == 0 {
		t.Fatalf("usage %d, %v", usage, err)
	}
	c := e.client(t, "alice", e.alice)
	if _, _, ok := c.Quota(); ok {
		t.Fatal("a quota known before any read")
	}
	if _, err := c.ReadLog(ctx, 0, 10, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	if u, l, ok := c.Quota(); !ok || u != usage || l != quota {
		t.Errorf("after a read: %d/%d (%v); want %d/%d", u, l, ok, usage, quota)
	}

	plain := newEnv(t, false, nil)
	pc := plain.client(t, "alice", plain.alice)
	if _, err := pc.ReadLog(context.Background(), 0, 10, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := pc.Quota(); ok {
		t.Error("a server without a quota stated one")
	}
}

// TestClientQuotaBounded: the spool is not trusted; a quota header out of
// form is taken as none.
func TestClientQuotaBounded(t *testing.T) {
	e := newEnv(t, false, nil)
	c := e.client(t, "alice", e.alice)
	for _, bad := range []string{"", "5", "5/", "/5", "-1/5", "5/0", "5/-1", "a/5", "5/5/5", " 5/5", fmt.Sprint(uint64(1)<<63) + "/5"} {
		c.learnQuota(http.Header{HeaderQuota: []string{"90/100"}})
		c.learnQuota(http.Header{HeaderQuota: []string{bad}})
		if u, l, ok := c.Quota(); ok {
			t.Errorf("after %s %q: %d/%d taken", HeaderQuota, bad, u, l)
		}
	}
	c.learnQuota(http.Header{HeaderQuota: []string{"120/100"}})
	if u, l, ok := c.Quota(); !ok || u != 120 || l != 100 {
		t.Errorf("over the quota: %d/%d (%v); want 120/100", u, l, ok)
	}
}

// TestOwnAppendMargin: with OwnMargin, a user's own append that would take
// the log past the quota and the margin gets 507, nothing appended, for
// every way a user appends (unconditional, made once, on a head); within
// the margin it is taken, and so is one past the quota. Without it, a
// user's own appends are never refused (TestDeliveryQuota).
func TestOwnAppendMargin(t *testing.T) {
	const quota, margin = 4000, 3000
	e := newEnv(t, false, func(c *Config) { c.Quota, c.OwnMargin = quota, margin })
	ctx := testCtx(t)
	alice := e.client(t, "alice", e.alice)
	if _, err := alice.Append(ctx, "alice", [][]byte{make([]byte, 5000)}); err != nil {
		t.Fatalf("an own append past the quota, within the margin: %v, want it taken", err)
	}
	refused := func(what string, err error) {
		t.Helper()
		var ae *Error
		if !errors.Is(err, ErrOverQuota) || !errors.Is(err, sp.ErrOverQuota) || !errors.As(err, &ae) || ae.Status != http.StatusInsufficientStorage {
			t.Errorf("%s past the quota and the margin: %v, want 507", what, err)
		}
	}
	_, err := alice.Append(ctx, "alice", [][]byte{make([]byte, 2500)})
	refused("an own append", err)
	_, err = alice.AppendAt(ctx, "alice", 1, [][]byte{make([]byte, 2500)})
	refused("an own append on the head", err)
	resp, body := e.send(t, rawRequest{method: "POST", path: "/v1/users/alice/entries", body: EncodeBatch([][]byte{make([]byte, 2500)}), key: e.alice})
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("an own unconditional append past the quota and the margin: %d %s, want 507", resp.StatusCode, body)
	}
	if h, err := e.store.Head(ctx, "alice"); err != nil || h != 1 {
		t.Fatalf("head %d, %v; want 1 (nothing appended past the margin)", h, err)
	}
	if _, err := alice.AppendAt(ctx, "alice", 1, [][]byte{make([]byte, 1000)}); err != nil {
		t.Errorf("an own append on the head within the margin: %v, want it taken", err)
	}
}

// TestOwnAppendsPastLoweredQuota: a log that holds more than the quota and
// the margin already (deliveries taken before the operator lowered the
// quota) takes the user's own appends up to the margin past what it held
// when first refused, so that its deletes reach the spool, and no further:
// its floor does not rise with what is appended past it by other ways.
// Before, every own append of such a log got 507, the deletes too, and its
// mail could never be deleted to make room.
func TestOwnAppendsPastLoweredQuota(t *testing.T) {
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) { ownAppendsPastLoweredQuota(t, name) })
	}
}

func ownAppendsPastLoweredQuota(t *testing.T, storeName string) {
	const quota, margin, held = 4000, 3000, 20000
	var store sp.Store
	e := newEnv(t, false, func(c *Config) {
		c.Quota, c.OwnMargin = quota, margin
		if storeName == "postgres" {
			usePostgres(t, c)
		}
		store = c.Store
	})
	ctx := testCtx(t)
	if _, err := store.Append(ctx, "alice", [][]byte{make([]byte, held)}); err != nil {
		t.Fatal(err)
	}
	alice := e.client(t, "alice", e.alice)
	refused := func(what string, err error) {
		t.Helper()
		var ae *Error
		if !errors.Is(err, ErrOverQuota) || !errors.As(err, &ae) || ae.Status != http.StatusInsufficientStorage {
			t.Fatalf("%s: %v, want 507", what, err)
		}
	}
	// The margin past the 20,000 bytes held: three own appends of 1,000,
	// each way a user appends, then 507.
	if _, err := alice.Append(ctx, "alice", [][]byte{make([]byte, 1000)}); err != nil {
		t.Fatalf("an own append of a log past its quota and margin, within the margin past what it holds: %v, want it taken", err)
	}
	if _, err := alice.AppendAt(ctx, "alice", 2, [][]byte{make([]byte, 1000)}); err != nil {
		t.Fatalf("an own append on the head, within the margin past what the log held: %v, want it taken", err)
	}
	resp, body := e.send(t, rawRequest{method: "POST", path: "/v1/users/alice/entries", body: EncodeBatch([][]byte{make([]byte, 1000)}), key: e.alice})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("an own unconditional append within the margin past what the log held: %d %s, want 200", resp.StatusCode, body)
	}
	_, err := alice.Append(ctx, "alice", [][]byte{make([]byte, 1)})
	refused("an own append past the margin past what the log held", err)
	_, err = alice.AppendAt(ctx, "alice", 4, [][]byte{make([]byte, 1)})
	refused("an own append on the head past the margin past what the log held", err)
	// More delivered past it (as before the quota was lowered): the floor
	// stays at the least the log held.
	if _, err := store.Append(ctx, "alice", [][]byte{make([]byte, 10000)}); err != nil {
		t.Fatal(err)
	}
	_, err = alice.Append(ctx, "alice", [][]byte{make([]byte, 1)})
	refused("an own append after the log grew past its floor", err)
	if h, err := store.Head(ctx, "alice"); err != nil || h != 5 {
		t.Fatalf("head %d, %v; want 5 (the first entry, three own appends, the delivery)", h, err)
	}
}
