package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestAppendMemoryBound: appends whose bodies are still on their way hold
// their size in the server's memory; together they may hold at most
// AppendMemory, and one that finds no room waits, then gets 503 with
// Retry-After, nothing appended. A user's key holds at most a quarter of
// it (at least MaxBody): its next append gets 429 at once, so that a key
// that sends its bodies slowly holds up nobody else. Without the bound one user's key made the
// server hold every append it sent at once: 16 appends of 60 MiB from one
// key took a real cspool server to 1 GB of RSS (64 connections an address:
// 4 GB).
func TestAppendMemoryBound(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	m := &recMetrics{}
	var told atomic.Int64 // what MemoryHeld was told, summed
	e := newEnv(t, false, func(c *Config) {
		c.MaxBody, c.AppendMemory, c.CheckpointWait = 2*size, 2*size+size/2, 300*time.Millisecond
		c.Metrics = m
		c.MemoryHeld = func(d int64) { told.Add(d) }
	})
	body := EncodeBatch([][]byte{bytes.Repeat([]byte{'x'}, size)})
	// start sends a signed append whose body stops after its first half
	// until finish is called.
	type slow struct {
		resp chan *http.Response
		rest chan struct{}
	}
	start := func(user string, key *keys.SecretKey) *slow {
		pr, pw := io.Pipe()
		req, err := http.NewRequest("POST", e.srv.URL+"/v1/users/"+user+"/entries", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", ContentType)
		if err := SignRequest(req, body, key, time.Now()); err != nil {
			t.Fatal(err)
		}
		s := &slow{resp: make(chan *http.Response, 1), rest: make(chan struct{})}
		go func() {
			pw.Write(body[:len(body)/2])
			<-s.rest
			pw.Write(body[len(body)/2:])
			pw.Close()
		}()
		go func() {
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				close(s.resp)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			s.resp <- resp
		}()
		return s
	}
	held := func() int64 { h, _, _ := e.api.apMem.state(); return h }
	a := start("alice", e.alice)
	b := start("bob", e.bob)
	// Both bodies are being read: two sizes held, room for neither more.
	for deadline := time.Now().Add(timeLeft(t)); held() < 2*int64(len(body)); {
		if time.Now().After(deadline) {
			t.Fatalf("held %d bytes, want %d once two appends are reading", held(), 2*len(body))
		}
		time.Sleep(time.Millisecond)
	}
	// The server's collector is told what the budget holds (MemoryHeld).
	if n := told.Load(); n != held() {
		t.Fatalf("MemoryHeld told %d bytes held, the budget holds %d", n, held())
	}
	// alice's share (MaxBody) cannot take a second one.
	a2 := start("alice", e.alice)
	close(a2.rest)
	if resp := <-a2.resp; resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("alice's second append while her first holds her share: %v, want 429 with Retry-After", resp)
	}
	// The spool key has no share of its own: it waits for room, then 503.
	c := start("alice", e.spoolK)
	close(c.rest)
	if resp := <-c.resp; resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a third append while two hold the budget: %v, want 503 with Retry-After", resp)
	}
	close(a.rest)
	close(b.rest)
	for _, s := range []*slow{a, b} {
		if resp := <-s.resp; resp == nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("an append that had room: %v, want 200", resp)
		}
	}
	// Each refusal is counted, by reason, for the operator (/metrics).
	if got, want := m.appendRefusals(), []string{AppendRefusedKeyShare, AppendRefusedMemory}; !slices.Equal(got, want) {
		t.Errorf("AppendRefused told %q, want %q", got, want)
	}
	if _, peak, _ := e.api.apMem.state(); peak > e.api.cfg.AppendMemory {
		t.Errorf("peak %d bytes held, over AppendMemory %d", peak, e.api.cfg.AppendMemory)
	}
	// Room again: the refused append goes through, and the log holds the
	// three.
	d := start("alice", e.alice)
	close(d.rest)
	if resp := <-d.resp; resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("an append after the others: %v, want 200", resp)
	}
	for user, want := range map[string]uint64{"alice": 2, "bob": 1} {
		if h, err := e.store.Head(context.Background(), user); err != nil || h != want {
			t.Fatalf("head of %s %d (%v), want %d", user, h, err, want)
		}
	}
	// Every byte taken was given back, and the collector told so.
	for deadline := time.Now().Add(timeLeft(t)); told.Load() != 0 || held() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("at the end MemoryHeld told %d bytes held, the budget holds %d; want 0", told.Load(), held())
		}
	}
}
