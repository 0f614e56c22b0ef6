package api

import (
	"errors"
	"sync"
	"time"
)

var (
	errReplayed   = errors.New("nonce already used")
	errReplayFull = errors.New("replay cache full")
)

// sweepEvery is how often expired nonces are dropped.
const sweepEvery = 10 * time.Second

// replayKey is a key id and a nonce.
type replayKey = [8 + nonceSize]byte

// replayCache remembers each (key id, nonce) until the request's timestamp
// has left the acceptance window, after which the timestamp check alone
// refuses a replay. It never forgets an entry early: when full, new requests
// are refused (503) rather than letting an old nonce be replayed.
type replayCache struct {
	mu        sync.Mutex
	max       int
	seen      map[replayKey]time.Time // -> forget after
	lastSweep time.Time
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: map[replayKey]time.Time{}}
}

// add records k, valid until expires; it fails if k was seen.
func (c *replayCache) add(k replayKey, expires, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if exp, ok := c.seen[k]; ok && now.Before(exp) {
		return errReplayed
	}
	if len(c.seen) >= c.max || now.Sub(c.lastSweep) >= sweepEvery {
		c.lastSweep = now
		for s, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, s)
			}
		}
	}
	if len(c.seen) >= c.max {
		return errReplayFull
	}
	c.seen[k] = expires
	return nil
}
