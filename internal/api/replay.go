package api

import (
	"errors"
	"sync"
	"time"
)

var errReplayed = errors.New("nonce already used")

// sweepEvery is how often the nonces of idle keys are dropped.
const sweepEvery = 10 * time.Second

// nonceCache remembers the nonces of accepted requests, per key, each until
// its request's timestamp has left the acceptance window (after which the
// timestamp check alone refuses a replay). It never forgets a nonce early.
// Each key has its own budget of nonces it may hold at once: a key whose
// budget is used up has its requests refused until its oldest nonces
// expire, and no other key notices. Only keys that passed the signature
// check and authorization reach the cache, so the number of keys is bounded
// by the users database (plus the spool key).
type nonceCache struct {
	mu        sync.Mutex
	keys      map[[8]byte]*keyNonces
	lastSweep time.Time
	// elapsed is the time since the cache was made, by the monotonic
	// clock (a test's own otherwise).
	elapsed func() time.Duration
}

// keyNonces are one key's unexpired nonces: a set for lookups and a queue
// in arrival order for expiry.
type keyNonces struct {
	seen  map[[nonceSize]byte]struct{}
	queue []nonceExpiry // queue[head:] are live, in arrival order
	head  int
}

// nonceExpiry is when a nonce is forgotten: once the wall clock reads
// expires and, as well, the monotonic clock has counted as long since the
// nonce came as the wall clock then had to go (after, in elapsed time). A
// wall clock stepped forward made every nonce look expired at once: they
// were forgotten, and once it was stepped back, a request captured before
// was within the window again, and taken twice (a replayed delivery
// appended twice raised every device's alarm).
type nonceExpiry struct {
	nonce   [nonceSize]byte
	expires int64 // Unix nanoseconds from which the nonce may be forgotten
	after   int64 // elapsed nanoseconds (nonceCache.elapsed) from which it may be
}

func (e nonceExpiry) over(now, el int64) bool { return e.expires <= now && e.after <= el }

func newNonceCache() *nonceCache {
	start := time.Now()
	return &nonceCache{keys: map[[8]byte]*keyNonces{}, elapsed: func() time.Duration { return time.Since(start) }}
}

// budgetError is a key's budget used up; the key may retry after retry.
type budgetError struct {
	budget int
	retry  time.Duration
}

func (e *budgetError) Error() string { return "nonce budget of this key used up" }

// add records nonce for key id until expires, and returns how many nonces
// the key holds then (HeaderBudget). It fails with errReplayed if the key
// used the nonce before, and with a *budgetError if the key already holds
// budget unexpired nonces; either way nothing is stored.
func (c *nonceCache) add(id [8]byte, nonce [nonceSize]byte, expires, now time.Time, budget int) (held int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, el := now.UnixNano(), int64(c.elapsed())
	if now.Sub(c.lastSweep) >= sweepEvery || now.Before(c.lastSweep) {
		c.lastSweep = now
		c.sweep(t, el)
	}
	k := c.keys[id]
	if k == nil {
		k = &keyNonces{seen: map[[nonceSize]byte]struct{}{}}
		c.keys[id] = k
	}
	k.expire(t, el)
	if _, ok := k.seen[nonce]; ok {
		return len(k.seen), errReplayed
	}
	if len(k.seen) >= budget {
		// The queue is in arrival order, not strictly in expiry order (clients'
		// clocks differ a little), so this is when the key may next try.
		f := k.queue[k.head]
		retry := time.Duration(max(f.expires-t, f.after-el))
		return len(k.seen), &budgetError{budget: budget, retry: max(retry, time.Second)}
	}
	k.seen[nonce] = struct{}{}
	k.queue = append(k.queue, nonceExpiry{nonce, expires.UnixNano(), el + max(0, expires.UnixNano()-t)})
	return len(k.seen), nil
}

// expire forgets the nonces at the front of the queue that have expired.
// A nonce behind one that expires later waits for it: kept a little longer
// than needed, never shorter.
func (k *keyNonces) expire(now, el int64) {
	for k.head < len(k.queue) && k.queue[k.head].over(now, el) {
		delete(k.seen, k.queue[k.head].nonce)
		k.queue[k.head] = nonceExpiry{}
		k.head++
	}
	switch {
	case k.head == len(k.queue):
		k.queue, k.head = k.queue[:0], 0
	case k.head > len(k.queue)/2 && k.head > 64:
		n := copy(k.queue, k.queue[k.head:])
		clear(k.queue[n:])
		k.queue, k.head = k.queue[:n], 0
	}
}

// sweep expires every key's nonces and drops keys that hold none. c.mu is
// held.
func (c *nonceCache) sweep(now, el int64) {
	for id, k := range c.keys {
		k.expire(now, el)
		if len(k.seen) == 0 {
			delete(c.keys, id)
		}
	}
}

// size returns the number of keys and of nonces held.
func (c *nonceCache) size() (keys, nonces int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.keys {
		nonces += len(k.seen)
	}
	return len(c.keys), nonces
}
