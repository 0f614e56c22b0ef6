package api

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// pollResult is what a long-poll returned and how long it took.
type pollResult struct {
	entries []spool.Entry
	head    uint64
	err     error
	took    time.Duration
}

func startPoll(ctx context.Context, c *Client, after uint64, wait time.Duration) <-chan pollResult {
	ch := make(chan pollResult, 1)
	go func() {
		start := time.Now()
		es, h, err := c.Read(ctx, after, 0, 0, wait)
		ch <- pollResult{es, h, err, time.Since(start)}
	}()
	return ch
}

func TestLongPollWakes(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	other, err := sqlitestore.Open(e.dir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	appenders := []struct {
		name  string
		store spool.Store
	}{
		{"same store", e.store},
		{"second handle on the directory", other},
	}
	c := e.client(t, "alice", e.alice)
	for i, a := range appenders {
		t.Run(a.name, func(t *testing.T) {
			after := uint64(i)
			ch := startPoll(ctx, c, after, longWait)
			time.Sleep(300 * time.Millisecond) // let the request reach Wait
			select {
			case r := <-ch:
				t.Fatalf("long-poll returned before the append: %+v", r)
			default:
			}
			sent := time.Now()
			if _, err := a.store.Append(ctx, "alice", [][]byte{[]byte("news")}); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-ch:
				if r.err != nil || len(r.entries) != 1 || r.entries[0].Pos != after+1 || r.head != after+1 {
					t.Fatalf("long-poll = %d entries, head %d, %v; want entry %d", len(r.entries), r.head, r.err, after+1)
				}
				t.Logf("woke %v after the append", time.Since(sent))
			case <-time.After(earlyBound(t)):
				t.Fatalf("long-poll did not wake within %v of the append", earlyBound(t).Round(time.Second))
			}
		})
	}
}

func TestLongPollTimeout(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = time.Second })
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	if _, err := c.Append(ctx, "alice", [][]byte{[]byte("old")}); err != nil {
		t.Fatal(err)
	}
	// wait=30 is capped at the server's MaxWait of 1 s.
	select {
	case r := <-startPoll(ctx, c, 1, longWait):
		if r.err != nil || len(r.entries) != 0 || r.head != 1 {
			t.Fatalf("timed-out long-poll = %d entries, head %d, %v; want none, head 1", len(r.entries), r.head, r.err)
		}
		if r.took < 900*time.Millisecond {
			t.Errorf("long-poll returned after %v, before its wait", r.took)
		}
	case <-time.After(earlyBound(t)):
		t.Fatal("long-poll ignored the server's MaxWait")
	}
	// With entries already there, wait does not delay the answer.
	select {
	case r := <-startPoll(ctx, c, 0, longWait):
		if r.err != nil || len(r.entries) != 1 {
			t.Fatalf("long-poll with data = %d entries, %v", len(r.entries), r.err)
		}
	case <-time.After(earlyBound(t)):
		t.Fatal("long-poll with entries available waited")
	}
}

func TestShutdownEndsLongPoll(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	ch := startPoll(ctx, e.client(t, "alice", e.alice), 0, longWait)
	time.Sleep(300 * time.Millisecond)
	e.api.Shutdown()
	select {
	case r := <-ch:
		if r.err != nil || len(r.entries) != 0 {
			t.Fatalf("long-poll at shutdown = %d entries, %v; want an empty answer", len(r.entries), r.err)
		}
	case <-time.After(earlyBound(t)):
		t.Fatal("Shutdown did not end the long-poll")
	}
	if err := e.client(t, "alice", e.alice).Health(ctx); !IsTemporary(err) {
		t.Errorf("health after Shutdown: %v, want a temporary error", err)
	}
}

// countingStore counts the store calls of the read path; it keeps every
// capability of the SQLite store it wraps.
type countingStore struct {
	*sqlitestore.Store
	mu    sync.Mutex
	calls map[string]int
}

func (c *countingStore) count(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[name]++
}

func (c *countingStore) Read(ctx context.Context, user string, after uint64, n int, b int64) ([]spool.Entry, error) {
	c.count("Read")
	return c.Store.Read(ctx, user, after, n, b)
}

// ReadInto counts as a Read: a response reads its further chunks with it.
func (c *countingStore) ReadInto(ctx context.Context, user string, after uint64, n int, b int64, buf []byte) ([]spool.Entry, []byte, error) {
	c.count("Read")
	return c.Store.ReadInto(ctx, user, after, n, b, buf)
}

func (c *countingStore) Head(ctx context.Context, user string) (uint64, error) {
	c.count("Head")
	return c.Store.Head(ctx, user)
}

func (c *countingStore) ChainHash(ctx context.Context, user string, pos uint64) (spool.Hash, error) {
	c.count("ChainHash")
	return c.Store.ChainHash(ctx, user, pos)
}

func (c *countingStore) CheckpointPos(ctx context.Context, user string) (uint64, error) {
	c.count("CheckpointPos")
	return c.Store.CheckpointPos(ctx, user)
}

func (c *countingStore) Tip(ctx context.Context, user string) (spool.Tip, error) {
	c.count("Tip")
	return c.Store.Tip(ctx, user)
}

func (c *countingStore) Wait(ctx context.Context, user string, after uint64) error {
	c.count("Wait")
	return c.Store.Wait(ctx, user, after)
}

func (c *countingStore) WaitTip(ctx context.Context, user string, after uint64) (spool.Tip, bool, error) {
	c.count("WaitTip")
	return c.Store.WaitTip(ctx, user, after)
}

func (c *countingStore) total() (n int, calls map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.calls {
		n += v
	}
	return n, maps.Clone(c.calls)
}

// TestLongPollRenewalIsCheap: a device that is up to date renews its
// long-poll every 5 minutes, and with many devices these renewals are most
// of an idle server's work. One that ends without news waits, and its
// wait's own read of the log's tip (spool.TipWaiter) answers it: no tip
// before or after, no entries, no head, no chain hash, no checkpoint of
// their own.
func TestLongPollRenewalIsCheap(t *testing.T) {
	var cs *countingStore
	e := newEnv(t, false, func(c *Config) {
		cs = &countingStore{Store: c.Store.(*sqlitestore.Store), calls: map[string]int{}}
		c.Store = cs
	})
	ctx := testCtx(t)
	if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("one"), []byte("two")}); err != nil {
		t.Fatal(err)
	}
	c := e.client(t, "alice", e.alice)
	lr, err := c.ReadLog(ctx, 2, 0, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.Entries) != 0 || lr.Head != 2 || !lr.Chained || lr.StartHash != lr.HeadHash {
		t.Fatalf("renewal answered %d entries, head %d, chained %v; want none, 2, the same hash twice", len(lr.Entries), lr.Head, lr.Chained)
	}
	want, _ := e.store.ChainHash(ctx, "alice", 2)
	if lr.HeadHash != want {
		t.Errorf("head hash %x, want %x", lr.HeadHash[:4], want[:4])
	}
	if n, calls := cs.total(); n != 1 || calls["WaitTip"] != 1 {
		t.Errorf("a renewal that ended without news made %d store calls %v; want one, the wait that reads the tip", n, calls)
	}
}

// ReadSized counts as a Read: a response reads its first chunk with it.
func (c *countingStore) ReadSized(ctx context.Context, user string, after uint64, n int, b int64, buf []byte, room func(int64) error) ([]spool.Entry, []byte, error) {
	c.count("Read")
	return c.Store.ReadSized(ctx, user, after, n, b, buf, room)
}
