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
	t.Parallel()
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
	if f, _, _ := d.srv.guard.State(rc.c.LocalAddr()); f != 4 { // the source: this program's user on loopback
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
	t.Parallel()
	r := newRig(t)
	w := &waits{block: true, release: make(chan struct{})}
	d := r.deviceWith("a", Config{Login: LoginLimits{Wait: w.wait, MaxWaiting: 2}})
	replies := make(chan string, 2)
	var lo net.Addr // the source: this program's user on loopback
	for i := range 2 {
		rc := dialRaw(t, d.addr)
		lo = rc.c.LocalAddr()
		go func() {
			rc.c.Write(fmt.Appendf(nil, "w%d LOGIN alice wrong\r\n", i))
			rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			line, _ := rc.br.ReadString('\n')
			replies <- line
		}()
	}
	for i := 0; ; i++ {
		if _, waiting, _ := d.srv.guard.State(lo); waiting == 2 {
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
