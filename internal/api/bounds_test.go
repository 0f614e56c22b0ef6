package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/syncer"
)

// device is alice's device: a mail store on disk and a sync loop over the
// real client, retrying as cspool imap-server does.
type device struct {
	s      *syncer.Syncer
	cancel context.CancelFunc
	done   chan error
}

func (e *env) startDevice(t *testing.T) *device {
	t.Helper()
	ms, err := mailstore.Open(filepath.Join(e.dir, "device.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	c, err := NewClient(e.srv.URL, "alice", e.alice, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := syncer.New(syncer.Config{User: "alice", UserKey: e.alice, SpoolKey: e.spoolK.Public(),
		Source: c, Store: ms, Logger: testLogger(t),
		CheckpointMin: -1, Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &device{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- s.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *device) stop() {
	d.cancel()
	<-d.done
	d.done <- context.Canceled // for a second stop
}

// deliver appends n messages for alice to the store directly, sealed by the
// spool key, and returns the head.
func (e *env) deliver(t *testing.T, n int) uint64 {
	t.Helper()
	var batch [][]byte
	for i := range n {
		msg := fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\nMessage-ID: <%d.%d@bounds>\r\n\r\nbody\r\n", i, i, time.Now().UnixNano())
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: msg}, e.spoolK, e.alice.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, b)
	}
	first, err := e.store.Append(context.Background(), "alice", batch)
	if err != nil {
		t.Fatal(err)
	}
	return first + uint64(n) - 1
}

// waitFor polls cond every 20 ms for as long as the test may wait
// (timeLeft): a loaded machine only makes it wait longer.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	limit := timeLeft(t)
	for start := time.Now(); time.Since(start) < limit; {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("still waiting, after %v, for %s", limit.Round(time.Second), what)
}

// TestLongPollBound: a user's long-polls beyond the bound get 429, other
// users' do not, and a device whose long-polls are refused still applies
// every new entry, since a read that finds entries does not wait.
func TestLongPollBound(t *testing.T) {
	m := &recMetrics{}
	e := newEnv(t, false, func(c *Config) { c.MaxLongPolls = 2; c.Metrics = m })
	ctx := testCtx(t)
	alice := e.client(t, "alice", e.alice)
	waiting := func() int { // long-polls waiting, all users
		m.mu.Lock()
		defer m.mu.Unlock()
		n := 0
		for _, d := range m.polls {
			n += d
		}
		return n
	}
	// Two long-polls far beyond the head hold alice's share for a minute.
	hogCtx, stopHogs := context.WithCancel(ctx)
	defer stopHogs()
	for range 2 {
		startPoll(hogCtx, alice, 1<<40, time.Minute)
	}
	waitFor(t, "two long-polls waiting", func() bool { return waiting() == 2 })

	select {
	case r := <-startPoll(ctx, alice, 0, time.Minute):
		if !errors.Is(r.err, ErrTooManyRequests) || !IsTemporary(r.err) {
			t.Errorf("third long-poll: %v, want ErrTooManyRequests (429), temporary", r.err)
		}
	case <-time.After(timeLeft(t)):
		// A long-poll let through ends within its minute, empty, and
		// fails above; this bounds a hang.
		t.Fatal("a third long-poll of alice was not refused")
	}
	resp, msg := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/entries", query: "after=0&wait=30", key: e.alice})
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third long-poll: %d %q, Retry-After %q; want 429 with Retry-After", resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	if _, _, err := alice.Read(ctx, 0, 0, 0, 0); err != nil {
		t.Errorf("a read of alice without wait: %v", err)
	}
	bobPoll := startPoll(ctx, e.client(t, "bob", e.bob), 0, time.Minute)
	waitFor(t, "bob's long-poll waiting", func() bool { return waiting() == 3 })

	d := e.startDevice(t)
	head := e.deliver(t, 3)
	waitFor(t, "the device to apply 3 deliveries", func() bool { return d.s.Status().Position == head })
	head = e.deliver(t, 2)
	waitFor(t, "the device to apply 2 more", func() bool { return d.s.Status().Position == head })
	if a := d.s.Status().Alarm; a != "" {
		t.Errorf("device alarm: %s", a)
	}
	m.mu.Lock()
	refused := slices.Contains(m.requests, "GET /v1/users/{user}/entries 429")
	m.mu.Unlock()
	if !refused {
		t.Error("the device's long-polls were never refused: the test did not exercise the bound")
	}
	if n := waiting(); n > 3 {
		t.Errorf("%d long-polls waiting, want at most 3 (2 of alice, 1 of bob)", n)
	}
	stopHogs()
	e.api.Shutdown()
	<-bobPoll
}

// TestConnectionBound: connections from one address beyond the bound get
// one answer, 429 with Connection: close; beyond 64 of those they are closed
// at once. A device whose connections are refused catches up once the
// address has room again.
func TestConnectionBound(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxConnsPerAddr = 2 })
	ctx := testCtx(t)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	counts := func() (int, int) { return connCounts(e.api) }
	hogs := []net.Conn{dial(), dial()}
	waitFor(t, "two connections admitted", func() bool { open, _ := counts(); return open == 2 })

	alice := e.client(t, "alice", e.alice)
	if _, err := alice.Head(ctx); !errors.Is(err, ErrTooManyRequests) || !IsTemporary(err) {
		t.Errorf("request on a third connection: %v, want ErrTooManyRequests (429), temporary", err)
	}
	c := dial()
	fmt.Fprintf(c, "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer on a third connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusTooManyRequests || !resp.Close || resp.Header.Get("Retry-After") == "" {
		t.Errorf("third connection: %d, close %v, Retry-After %q; want 429, Connection: close, Retry-After",
			resp.StatusCode, resp.Close, resp.Header.Get("Retry-After"))
	}

	// Many more connections: the server holds at most 64 of them beyond
	// the limit, whatever they do.
	var extra []net.Conn
	for range 150 {
		extra = append(extra, dial())
	}
	time.Sleep(200 * time.Millisecond) // let the server accept them all
	if open, excess := counts(); open != 2 || excess > maxExcessConns {
		t.Errorf("after 150 more connections: %d admitted, %d being refused; want 2 and at most %d", open, excess, maxExcessConns)
	}
	for _, c := range extra {
		c.Close()
	}

	d := e.startDevice(t)
	head := e.deliver(t, 3)
	waitFor(t, "the device to report the refusal", func() bool {
		return strings.Contains(d.s.Status().LastError, "too many requests")
	})
	for _, h := range hogs {
		h.Close()
	}
	waitFor(t, "the device to apply 3 deliveries", func() bool { return d.s.Status().Position == head })
}
