package imapd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// waits records the delays the server asks for instead of sleeping; with
// block set, each wait also holds until release is closed.
type waits struct {
	mu      sync.Mutex
	got     []time.Duration
	block   bool
	release chan struct{}
}

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.got = append(w.got, d)
	block := w.block
	w.mu.Unlock()
	if block {
		select {
		case <-w.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (w *waits) list() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// fakeClock is a clock the test moves.
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

// readAll reads what the server sends until it closes the connection
// (within 10 s), and says whether it did.
func (rc *rawConn) readAll() (string, bool) {
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(rc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return string(b), false
	}
	return string(b), true
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// TestGuessingOverSockets: a guesser gets its connection closed after
// MaxFailures failures, the delays grow per source across connections, a
// correct password is never delayed, and guesses pipelined after the last
// allowed one are not checked.
func TestGuessingOverSockets(t *testing.T) {
	r := newRig(t)
	w := &waits{}
	var logs logBuffer
	d := r.deviceWith("a", Config{Login: LoginLimits{Wait: w.wait}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	rc := dialRaw(t, d.addr)
	rc.cmd("a1 LOGIN alice guess-one")
	if got := rc.until("a1 "); !strings.Contains(got, "a1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("first wrong password: %q, want NO [AUTHENTICATIONFAILED]", got)
	}
	rc.cmd("a2 LOGIN mallory guess-two")
	if got := rc.until("a2 "); !strings.Contains(got, "a2 NO") {
		t.Fatalf("second wrong login: %q, want NO", got)
	}
	rc.cmd("a3 LOGIN alice guess-three")
	got, closed := rc.readAll()
	if !strings.Contains(got, "* BYE too many failed logins") || !strings.Contains(got, "a3 NO [AUTHENTICATIONFAILED]") || !closed {
		t.Fatalf("third wrong password: %q (closed %v), want BYE, NO and the connection closed", got, closed)
	}
	if want := []time.Duration{ms(500), ms(1000), ms(2000)}; !slices.Equal(w.list(), want) {
		t.Fatalf("delays %v, want %v", w.list(), want)
	}

	// A new connection from the same source starts where the source is.
	rc = dialRaw(t, d.addr)
	rc.cmd("b1 LOGIN alice guess-four")
	if got := rc.until("b1 "); !strings.Contains(got, "b1 NO") {
		t.Fatalf("wrong password on a new connection: %q, want NO", got)
	}
	if got := w.list(); len(got) != 4 || got[3] != ms(4000) {
		t.Fatalf("delays %v, want the fourth to be 4s: the source's count holds across connections", got)
	}
	rc.cmd(`b2 LOGIN alice "` + testPassword + `"`)
	if got := rc.until("b2 "); !strings.Contains(got, "b2 OK") {
		t.Fatalf("correct password after failures: %q, want OK", got)
	}
	if n := len(w.list()); n != 4 {
		t.Errorf("a correct password waited: %d waits, want 4", n)
	}
	if f, _, _ := d.srv.guard.state(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}); f != 4 {
		t.Errorf("source failures %d, want 4", f)
	}

	// Pipelined: three guesses, then the right password, in one write. Only
	// three are checked and answered; the connection closes before the
	// fourth.
	rc = dialRaw(t, d.addr)
	rc.cmd(`c1 LOGIN alice x1` + "\r\n" + `c2 LOGIN alice x2` + "\r\n" + `c3 LOGIN alice x3` + "\r\n" + `c4 LOGIN alice "` + testPassword + `"`)
	got, closed = rc.readAll()
	if !closed || strings.Contains(got, "c4 ") || strings.Count(got, "* BYE") != 1 || !strings.Contains(got, "c3 NO") {
		t.Fatalf("pipelined guesses: %q (closed %v), want c1 to c3 refused, one BYE, nothing for c4, the connection closed", got, closed)
	}
	if n := len(w.list()); n != 7 {
		t.Errorf("%d guesses checked in all, want 7 (4 + 3 on the pipelined connection)", n)
	}

	// 3000 guesses in one write: three are checked, then the connection
	// ends (the server closes with the rest unread, so the client may see a
	// reset rather than every reply).
	rc = dialRaw(t, d.addr)
	var many strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&many, "m%d LOGIN alice m%d\r\n", i, i)
	}
	go rc.c.Write([]byte(many.String()))
	if got, closed := rc.readAll(); !closed || strings.Count(got, "NO [AUTHENTICATIONFAILED]") > 3 {
		t.Fatalf("3000 pipelined guesses: %d refusals (closed %v), want at most 3 and the connection closed",
			strings.Count(got, "NO [AUTHENTICATIONFAILED]"), closed)
	}
	if n := len(w.list()); n != 10 {
		t.Errorf("%d guesses checked in all, want 10 (7 + 3 of the 3000)", n)
	}
	if err := d.srv.Close(); err != nil {
		t.Fatal(err)
	}
	log := logs.String()
	for _, secret := range []string{"guess-", "x1", "mallory", testPassword} {
		if strings.Contains(log, secret) {
			t.Errorf("the log holds %q:\n%s", secret, log)
		}
	}
	if n := strings.Count(log, "failed IMAP login"); n != 5 {
		t.Errorf("%d lines for failed logins, want 5 (the budget) before the summary:\n%s", n, log)
	}
	if !strings.Contains(log, "IMAP log lines held back") || !strings.Contains(log, "count=5 ") || len(logs.lines()) != 6 {
		t.Errorf("want 6 lines, the last a summary of the 5 failures past the budget:\n%s", log)
	}
}

// TestGuessingRefusedWhileWaiting: while MaxWaiting failed logins of a
// source wait out their delay, the next login from it is refused without
// its password being checked, and no further connection is held.
func TestGuessingRefusedWhileWaiting(t *testing.T) {
	r := newRig(t)
	w := &waits{block: true, release: make(chan struct{})}
	d := r.deviceWith("a", Config{Login: LoginLimits{Wait: w.wait, MaxWaiting: 2}})
	replies := make(chan string, 2)
	for i := range 2 {
		rc := dialRaw(t, d.addr)
		go func() {
			rc.c.Write(fmt.Appendf(nil, "w%d LOGIN alice wrong\r\n", i))
			rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			line, _ := rc.br.ReadString('\n')
			replies <- line
		}()
	}
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	for i := 0; ; i++ {
		if _, waiting, _ := d.srv.guard.state(lo); waiting == 2 {
			break
		}
		if i > 1000 {
			t.Fatal("the two failed logins never waited")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rc := dialRaw(t, d.addr)
	rc.cmd(`r1 LOGIN alice "` + testPassword + `"`)
	if got := rc.until("r1 "); !strings.Contains(got, "r1 NO [UNAVAILABLE]") {
		t.Fatalf("login while two failures wait: %q, want NO [UNAVAILABLE] without a check", got)
	}
	if n := len(w.list()); n != 2 {
		t.Errorf("%d waits, want 2: the refused login must not wait", n)
	}
	close(w.release)
	for range 2 {
		if got := <-replies; !strings.Contains(got, "NO [AUTHENTICATIONFAILED]") {
			t.Errorf("waiting login answered %q, want NO [AUTHENTICATIONFAILED]", got)
		}
	}
	rc.cmd(`r2 LOGIN alice "` + testPassword + `"`)
	if got := rc.until("r2 "); !strings.Contains(got, "r2 OK") {
		t.Fatalf("login once the waits ended: %q, want OK", got)
	}
}

func tcpAddr(s string) net.Addr {
	return &net.TCPAddr{IP: net.ParseIP(s), Port: 40000}
}

// TestLoginGuardSources drives the guard with addresses from several
// sources: one source's guessing does not touch another's logins, and the
// table stays within MaxSources.
func TestLoginGuardSources(t *testing.T) {
	clock := newFakeClock()
	g := newLoginGuard(LoginLimits{MaxWaiting: 1, MaxSources: 100, Now: clock.Now}, slog.New(slog.DiscardHandler))
	defer g.close()

	bad, good := tcpAddr("192.0.2.1"), tcpAddr("192.0.2.2")
	src, d := g.fail(bad, 1, true, false)
	if d != ms(500) {
		t.Errorf("first delay %v, want 500ms", d)
	}
	if err := g.admit(bad); !errors.Is(err, errLoginsWaiting) {
		t.Errorf("admit of a source with a failure waiting: %v, want refused", err)
	}
	if err := g.admit(good); err != nil {
		t.Errorf("admit of another source: %v, want admitted", err)
	}
	g.done(src)
	if err := g.admit(bad); err != nil {
		t.Errorf("admit once the wait ended: %v", err)
	}

	// The same /64, the same source; every loopback address, one source.
	g.done(must(g.fail(tcpAddr("2001:db8::1"), 1, false, false)))
	if f, _, _ := g.state(tcpAddr("2001:db8::ffff:1")); f != 1 {
		t.Errorf("another address of the /64: %d failures, want 1", f)
	}
	g.done(must(g.fail(tcpAddr("127.0.0.5"), 1, false, false)))
	if f, _, _ := g.state(tcpAddr("::1")); f != 1 {
		t.Errorf("::1 after a failure from 127.0.0.5: %d failures, want 1 (one loopback source)", f)
	}

	// Delays double per failure up to MaxDelay.
	var delays []time.Duration
	for i := range 8 {
		s, d := g.fail(bad, i+1, true, false)
		g.done(s)
		delays = append(delays, d)
	}
	want := []time.Duration{ms(1000), ms(2000), ms(4000), ms(8000), ms(16000), ms(16000), ms(16000), ms(16000)}
	if !slices.Equal(delays, want) {
		t.Errorf("delays %v, want %v", delays, want)
	}

	// 10000 sources: the table stays at 100, the rest share one entry.
	for i := range 10000 {
		a := tcpAddr(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
		g.done(must(g.fail(a, 1, false, false)))
	}
	if _, _, n := g.state(bad); n > 100 {
		t.Errorf("%d sources remembered, want at most 100", n)
	}
	if g.overflow.failures < 9900 {
		t.Errorf("the shared entry counts %d failures, want at least 9900", g.overflow.failures)
	}
	// Forgotten after Forget: the table makes room again, and counts
	// start over.
	clock.add(16 * time.Minute)
	g.done(must(g.fail(tcpAddr("198.51.100.7"), 1, false, false)))
	if f, _, n := g.state(tcpAddr("198.51.100.7")); f != 1 || n != 1 {
		t.Errorf("after Forget: %d failures, %d sources; want 1 and 1", f, n)
	}
	if f, _, _ := g.state(bad); f != 0 {
		t.Errorf("a forgotten source still has %d failures", f)
	}
}

func must(s *source, _ time.Duration) *source { return s }

// TestLoginGuardLog: 3000 failures make LogLines lines and one summary per
// interval, with the count and the busiest source.
func TestLoginGuardLog(t *testing.T) {
	clock := newFakeClock()
	var logs logBuffer
	g := newLoginGuard(LoginLimits{Now: clock.Now}, slog.New(slog.NewTextHandler(&logs, nil)))
	defer g.close()
	for i := range 3000 {
		src := "192.0.2.1"
		if i%3 == 0 {
			src = "192.0.2.2"
		}
		g.done(must(g.fail(tcpAddr(src), 1, false, false)))
	}
	if n := len(logs.lines()); n != 5 {
		t.Fatalf("%d lines after 3000 failures in one interval, want 5:\n%s", n, logs.String())
	}
	clock.add(time.Minute)
	g.done(must(g.fail(tcpAddr("192.0.2.3"), 1, false, false)))
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
