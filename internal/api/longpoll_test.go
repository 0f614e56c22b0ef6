package api

import (
	"context"
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
			ch := startPoll(ctx, c, after, 30*time.Second)
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
			case <-time.After(5 * time.Second):
				t.Fatal("long-poll did not wake within 5 s of the append")
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
	case r := <-startPoll(ctx, c, 1, 30*time.Second):
		if r.err != nil || len(r.entries) != 0 || r.head != 1 {
			t.Fatalf("timed-out long-poll = %d entries, head %d, %v; want none, head 1", len(r.entries), r.head, r.err)
		}
		if r.took < 900*time.Millisecond {
			t.Errorf("long-poll returned after %v, before its wait", r.took)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("long-poll ignored the server's MaxWait")
	}
	// With entries already there, wait does not delay the answer.
	select {
	case r := <-startPoll(ctx, c, 0, 30*time.Second):
		if r.err != nil || len(r.entries) != 1 {
			t.Fatalf("long-poll with data = %d entries, %v", len(r.entries), r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long-poll with entries available waited")
	}
}

func TestShutdownEndsLongPoll(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	ch := startPoll(ctx, e.client(t, "alice", e.alice), 0, 60*time.Second)
	time.Sleep(300 * time.Millisecond)
	e.api.Shutdown()
	select {
	case r := <-ch:
		if r.err != nil || len(r.entries) != 0 {
			t.Fatalf("long-poll at shutdown = %d entries, %v; want an empty answer", len(r.entries), r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not end the long-poll")
	}
	if err := e.client(t, "alice", e.alice).Health(ctx); !IsTemporary(err) {
		t.Errorf("health after Shutdown: %v, want a temporary error", err)
	}
}
