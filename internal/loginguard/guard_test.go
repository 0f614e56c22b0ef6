package loginguard

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// logBuffer collects log output from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) lines() []string {
	return strings.Split(strings.TrimSpace(l.String()), "\n")
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func tcpAddr(s string) net.Addr {
	return &net.TCPAddr{IP: net.ParseIP(s), Port: 40000}
}

// TestLoginGuardSources drives the guard with addresses from several
// sources: one source's guessing does not touch another's logins, and the
// table stays within MaxSources.
func TestLoginGuardSources(t *testing.T) {
	clock := newFakeClock()
	g := New(Limits{MaxWaiting: 1, MaxSources: 100, Now: clock.Now}, slog.New(slog.DiscardHandler), "IMAP")
	defer g.Close()

	bad, good := tcpAddr("192.0.2.1"), tcpAddr("192.0.2.2")
	src, d := g.Fail(bad, 1, true, false)
	if d != ms(500) {
		t.Errorf("first delay %v, want 500ms", d)
	}
	if err := g.Admit(bad); !errors.Is(err, ErrWaiting) {
		t.Errorf("admit of a source with a failure waiting: %v, want refused", err)
	}
	if err := g.Admit(good); err != nil {
		t.Errorf("admit of another source: %v, want admitted", err)
	}
	g.Done(src)
	if err := g.Admit(bad); err != nil {
		t.Errorf("admit once the wait ended: %v", err)
	}

	// The same /64, the same source; every loopback address, one source.
	g.Done(must(g.Fail(tcpAddr("2001:db8::1"), 1, false, false)))
	if f, _, _ := g.State(tcpAddr("2001:db8::ffff:1")); f != 1 {
		t.Errorf("another address of the /64: %d failures, want 1", f)
	}
	g.Done(must(g.Fail(tcpAddr("127.0.0.5"), 1, false, false)))
	if f, _, _ := g.State(tcpAddr("::1")); f != 1 {
		t.Errorf("::1 after a failure from 127.0.0.5: %d failures, want 1 (one loopback source)", f)
	}

	// Delays double per failure up to MaxDelay.
	var delays []time.Duration
	for i := range 8 {
		s, d := g.Fail(bad, i+1, true, false)
		g.Done(s)
		delays = append(delays, d)
	}
	want := []time.Duration{ms(1000), ms(2000), ms(4000), ms(8000), ms(16000), ms(16000), ms(16000), ms(16000)}
	if !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}

	// 10000 sources: the table stays at 100, the rest share one entry.
	for i := range 10000 {
		a := tcpAddr(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
		g.Done(must(g.Fail(a, 1, false, false)))
	}
	if _, _, n := g.State(bad); n > 100 {
		t.Errorf("%d sources remembered, want at most 100", n)
	}
	if g.t.overflow.failures < 9900 {
		t.Errorf("the shared entry counts %d failures, want at least 9900", g.t.overflow.failures)
	}
	// Forgotten after Forget: the table makes room again, and counts
	// start over.
	clock.add(16 * time.Minute)
	g.Done(must(g.Fail(tcpAddr("198.51.100.7"), 1, false, false)))
	if f, _, n := g.State(tcpAddr("198.51.100.7")); f != 1 || n != 1 {
		t.Errorf("after Forget: %d failures, %d sources; want 1 and 1", f, n)
	}
	if f, _, _ := g.State(bad); f != 0 {
		t.Errorf("a forgotten source still has %d failures", f)
	}
}

func must(s *Source, _ time.Duration) *Source { return s }

// TestLoginGuardLog: 3000 failures make LogLines lines and one summary per
// interval, with the count and the busiest source.
func TestLoginGuardLog(t *testing.T) {
	clock := newFakeClock()
	var logs logBuffer
	g := New(Limits{Now: clock.Now}, slog.New(slog.NewTextHandler(&logs, nil)), "IMAP")
	defer g.Close()
	for i := range 3000 {
		src := "192.0.2.1"
		if i%3 == 0 {
			src = "192.0.2.2"
		}
		g.Done(must(g.Fail(tcpAddr(src), 1, false, false)))
	}
	if n := len(logs.lines()); n != 5 {
		t.Fatalf("%d lines after 3000 failures in one interval, want 5:\n%s", n, logs.String())
	}
	clock.add(time.Minute)
	g.Done(must(g.Fail(tcpAddr("192.0.2.3"), 1, false, false)))
	lines := logs.lines()
	if len(lines) != 7 {
		t.Fatalf("%d lines, want 7 (5, the summary, 1 new):\n%s", len(lines), logs.String())
	}
	sum := lines[5]
	for _, want := range []string{"IMAP log lines held back", "count=2995", "sources=2", "busiest_source=192.0.2.1", "busiest_count=1997"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
}

// TestTallyShared: two guards on one Tally (a daemon's IMAP and
// submission) count a source's failures together, each logging its own;
// a guard with a tally of its own counts apart.
func TestTallyShared(t *testing.T) {
	clock := newFakeClock()
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tally := NewTally()
	imap := New(Limits{Now: clock.Now, Tally: tally}, log, "IMAP")
	defer imap.Close()
	smtp := New(Limits{Now: clock.Now, Tally: tally}, log, "SMTP")
	defer smtp.Close()
	apart := New(Limits{Now: clock.Now}, log, "status page")
	defer apart.Close()
	src := tcpAddr("192.0.2.9")

	var held []*Source
	for i := range 4 {
		s, d := imap.Fail(src, 1, false, false)
		held = append(held, s)
		if want := ms(500) << i; d != want {
			t.Errorf("IMAP failure %d: delay %v, want %v", i+1, d, want)
		}
	}
	if err := smtp.Admit(src); !errors.Is(err, ErrWaiting) {
		t.Errorf("SMTP Admit with 4 IMAP failures waiting: %v, want ErrWaiting", err)
	}
	if err := apart.Admit(src); err != nil {
		t.Errorf("a guard with its own tally: Admit %v, want nil", err)
	}
	for _, s := range held {
		imap.Done(s)
	}
	if err := smtp.Admit(src); err != nil {
		t.Errorf("SMTP Admit once the IMAP failures were answered: %v, want nil", err)
	}
	if _, d := smtp.Fail(src, 1, false, false); d != ms(8000) {
		t.Errorf("SMTP's first failure after 4 at IMAP: delay %v, want 8s (the fifth of the source)", d)
	}
	if f, w, _ := imap.State(src); f != 5 || w != 1 {
		t.Errorf("IMAP sees %d failures, %d waiting; want 5 and 1", f, w)
	}
	if !strings.Contains(logs.String(), "failed SMTP login") || !strings.Contains(logs.String(), "failed IMAP login") {
		t.Errorf("each guard logs under its own protocol:\n%s", logs.String())
	}
}
