package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"
)

// TestServerRestart stops PostgreSQL under a bounded append load and starts
// it again: while it is down every call fails promptly with
// spool.ErrUnavailable; afterwards the same Store works again (pool and
// listener reconnect), and no acknowledged entry is lost.
func TestServerRestart(t *testing.T) {
	cluster := pgtest.PrivateCluster(t)
	o := &opener{db: cluster.DSN(), dsns: map[*Store]string{}}
	s := o.fresh(t)
	other := o.reopen(t, s).(*Store)

	type ack struct {
		user string
		pos  uint64
		data string
	}
	var (
		mu    sync.Mutex
		acks  []ack
		fails = map[string]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", w%2)
			for i := 0; i < 100_000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				data := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				pos, err := s.Append(ctx, user, [][]byte{[]byte(data)})
				cancel()
				mu.Lock()
				if err == nil {
					acks = append(acks, ack{user, pos, data})
				} else if errors.Is(err, spool.ErrUnavailable) {
					fails["unavailable"]++
				} else {
					fails[err.Error()]++
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	cluster.Stop()

	ctx := context.Background()
	for _, call := range []struct {
		name string
		fn   func(ctx context.Context) error
	}{
		{"Append", func(ctx context.Context) error { _, err := s.Append(ctx, "u0", [][]byte{[]byte("x")}); return err }},
		{"Read", func(ctx context.Context) error { _, err := s.Read(ctx, "u0", 0, 10, 1000); return err }},
		{"Head", func(ctx context.Context) error { _, err := s.Head(ctx, "u0"); return err }},
		{"Wait", func(ctx context.Context) error { return s.Wait(ctx, "u0", 1<<40) }},
		{"Compact", func(ctx context.Context) error {
			_, err := s.Compact(ctx, "u0", spool.Checkpoint{Pos: 1}, nil)
			return err
		}},
	} {
		start := time.Now()
		err := call.fn(ctx)
		if !errors.Is(err, spool.ErrUnavailable) {
			t.Errorf("%s while PostgreSQL is down: %v, want an error wrapping ErrUnavailable", call.name, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s while PostgreSQL is down took %v, want a prompt failure", call.name, d)
		}
	}
	time.Sleep(300 * time.Millisecond)
	cluster.Start()

	// The same Store works again without a restart (the first calls may
	// still meet connections that died with the server).
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if _, err = s.Append(ctx, "u0", [][]byte{[]byte("after")}); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Append after PostgreSQL came back: %v", err)
	}
	// Give the load a moment on the recovered server, then stop it.
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	// The listeners reconnected: a wait on the other Store wakes on an
	// append through this one.
	head, err := other.Head(ctx, "u1")
	if err != nil {
		t.Fatalf("Head on the second store after the restart: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done <- other.Wait(wctx, "u1", head)
	}()
	time.Sleep(2500 * time.Millisecond) // the listener's reconnect backoff is at most 2 s
	start := time.Now()
	if _, err := s.Append(ctx, "u1", [][]byte{[]byte("wake")}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Wait on the second store after the restart: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("wake-up across stores after the restart took %v, want under 1 s", d)
	}

	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d appends acknowledged, failures: %v", len(acks), fails)
	if fails["unavailable"] == 0 {
		t.Error("no append failed with ErrUnavailable while PostgreSQL was down")
	}
	for msg, n := range fails {
		if msg != "unavailable" {
			t.Errorf("%d appends failed with %q, want only ErrUnavailable", n, msg)
		}
	}
	for _, user := range []string{"u0", "u1"} {
		es, err := s.Read(ctx, user, 0, 100_000, 1<<40)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint64]string{}
		for i, e := range es {
			if e.Pos != uint64(i+1) {
				t.Fatalf("%s: entry %d at position %d: positions not dense", user, i, e.Pos)
			}
			got[e.Pos] = string(e.Data)
		}
		seen := map[string]int{}
		for _, e := range es {
			seen[string(e.Data)]++
		}
		for d, n := range seen {
			if n > 1 && d != "after" && d != "wake" {
				t.Errorf("%s: %q stored %d times", user, d, n)
			}
		}
		for _, a := range acks {
			if a.user == user && got[a.pos] != a.data {
				t.Errorf("%s: acknowledged %q at %d, found %q", user, a.data, a.pos, got[a.pos])
			}
		}
	}
}
