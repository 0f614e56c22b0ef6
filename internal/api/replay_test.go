package api

import (
	"errors"
	"testing"
	"time"
)

// TestNonceCache: a key's budget bounds its own nonces only; a nonce is kept
// until it expires, never less; idle keys are dropped.
func TestNonceCache(t *testing.T) {
	c := newNonceCache()
	t0 := time.Unix(1_800_000_000, 0)
	// A steady clock: the monotonic time passes as the wall clock does.
	var wall time.Time
	c.elapsed = func() time.Duration { return wall.Sub(t0) }
	add := func(id [8]byte, nonce [nonceSize]byte, expires, now time.Time, budget int) (int, error) {
		wall = now
		return c.add(id, nonce, expires, now, budget)
	}
	a, b := [8]byte{1}, [8]byte{2}
	n := func(i byte) [nonceSize]byte { return [nonceSize]byte{i} }
	exp := t0.Add(5 * time.Second)
	for i := range byte(3) {
		if _, err := add(a, n(i), exp, t0, 3); err != nil {
			t.Fatalf("nonce %d of a within its budget: %v", i, err)
		}
	}
	if _, err := add(a, n(0), exp, t0, 3); !errors.Is(err, errReplayed) {
		t.Errorf("a's nonce 0 again: %v, want errReplayed", err)
	}
	var be *budgetError
	if _, err := add(a, n(9), exp, t0, 3); !errors.As(err, &be) || be.retry != 5*time.Second {
		t.Errorf("a over its budget: %v, want a budget error with a retry in 5 s", err)
	}
	if _, err := add(b, n(0), exp, t0, 3); err != nil {
		t.Errorf("b, with a's budget used up: %v", err)
	}
	// Just before expiry the nonce is still refused; at expiry it is gone.
	if _, err := add(a, n(1), exp, exp.Add(-time.Nanosecond), 3); !errors.Is(err, errReplayed) {
		t.Errorf("a's nonce 1 a nanosecond before it expires: %v, want errReplayed", err)
	}
	if _, err := add(a, n(1), exp.Add(time.Minute), exp, 3); err != nil {
		t.Errorf("a's nonce 1 once expired: %v", err)
	}
	if keys, nonces := c.size(); keys != 2 || nonces != 2 {
		t.Errorf("cache holds %d keys, %d nonces; want 2 and 2 (a's new nonce, b's)", keys, nonces)
	}
	// The next sweep drops b, idle and expired.
	if _, err := add(a, n(2), exp.Add(time.Minute), exp.Add(sweepEvery), 3); err != nil {
		t.Fatal(err)
	}
	if keys, nonces := c.size(); keys != 1 || nonces != 2 {
		t.Errorf("after a sweep: %d keys, %d nonces; want 1 and 2", keys, nonces)
	}
}

// TestNonceCacheClockSteps: a wall clock stepped forward does not make a
// nonce look expired before the monotonic clock has counted its time: it
// was forgotten at once, and a request captured before was taken again
// once the clock was stepped back.
func TestNonceCacheClockSteps(t *testing.T) {
	c := newNonceCache()
	t0 := time.Unix(1_800_000_000, 0)
	var el time.Duration
	c.elapsed = func() time.Duration { return el }
	id, n := [8]byte{1}, [nonceSize]byte{7}
	if _, err := c.add(id, n, t0.Add(61*time.Second), t0, 10); err != nil {
		t.Fatal(err)
	}
	// One second later the wall clock reads an hour ahead, then back.
	el = time.Second
	if _, err := c.add(id, [nonceSize]byte{8}, t0.Add(time.Hour+61*time.Second), t0.Add(time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	el = 2 * time.Second
	if _, err := c.add(id, n, t0.Add(61*time.Second), t0.Add(2*time.Second), 10); !errors.Is(err, errReplayed) {
		t.Errorf("the first nonce again, after the clock went an hour ahead and back: %v, want errReplayed", err)
	}
	// Once both clocks have passed its time, it is forgotten.
	el = 62 * time.Second
	if _, err := c.add(id, n, t0.Add(123*time.Second), t0.Add(62*time.Second), 10); err != nil {
		t.Errorf("the first nonce once expired by both clocks: %v", err)
	}
}
