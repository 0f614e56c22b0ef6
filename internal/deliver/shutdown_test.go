package deliver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestShutdownEndsConnections: Shutdown must not wait for clients to
// leave. A connection idle after LHLO is answered 421 and closed at once;
// one that keeps delivering gets the replies of the message it is sending
// and then 421; every message a client saw acknowledged is in the log, and
// no other. Before, Shutdown waited for each client to quit (an idle one
// for the read timeout, ten minutes; a busy one forever), so a server
// stopped under steady delivery always took its whole grace and then cut
// a delivery short.
func TestShutdownEndsConnections(t *testing.T) {
	f := newFixture(t, "alice")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewLMTP(f.d, LMTPOptions{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	served := make(chan error, 1)
	go func() { served <- l.Serve(ln) }()
	addr := ln.Addr().String()

	// An idle connection, greeted and introduced.
	idle, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	if _, err := fmt.Fprintf(idle, "LHLO mta.test\r\n"); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := idleR.ReadString('\n')
		if err != nil {
			t.Fatalf("reading LHLO reply: %v", err)
		}
		if strings.HasPrefix(line, "250 ") {
			break
		}
	}

	// A busy connection: one message after another until the server
	// ends it (at most 20,000 messages or 60 s).
	busy := dialLMTP(t, addr)
	type outcome struct {
		acked int
		err   error
	}
	done := make(chan outcome, 1)
	started := make(chan struct{})
	go func() {
		acked := 0
		deadline := time.Now().Add(60 * time.Second)
		for i := 0; i < 20000 && time.Now().Before(deadline); i++ {
			ok, err := sendOne(busy, []byte(fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i)), []string{"alice@example.org"})
			acked += len(ok)
			if err != nil {
				done <- outcome{acked, err}
				return
			}
			if acked == 3 {
				close(started)
			}
		}
		done <- outcome{acked, errors.New("the server never ended the connection")}
	}()
	select {
	case <-started:
	case o := <-done:
		t.Fatalf("delivery stopped after %d messages before Shutdown: %v", o.acked, o.err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a connection idle and one delivering: %v, want nil before its grace ends", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve returned %v after Shutdown, want nil", err)
	}

	_ = idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := idleR.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "421 ") {
		t.Errorf("idle connection got %q (%v) at shutdown, want a 421 reply", line, err)
	}
	if _, err := idleR.ReadString('\n'); err == nil {
		t.Errorf("idle connection still open after its 421")
	}

	o := <-done
	var se *smtp.SMTPError
	if errors.As(o.err, &se) && se.Code != 421 {
		t.Errorf("busy connection ended with %v, want 421 or the connection closed", o.err)
	}
	got := f.bodies(t, "alice")
	if len(got) != o.acked {
		t.Fatalf("log holds %d messages, the client saw %d acknowledged", len(got), o.acked)
	}
	for i, b := range got {
		if want := fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i); string(b) != want {
			t.Errorf("message %d stored as %q, want %q", i, b, want)
		}
	}
}

// TestServeAfterStop: a server stopped right after it started may be shut
// down or closed before the goroutine that serves its listener has run.
// That Serve returns nil at once and closes the listener, rather than wait
// in Accept for ever. Also with the stop and the Serve racing.
func TestServeAfterStop(t *testing.T) {
	f := newFixture(t, "alice")
	stops := map[string]func(*LMTP) error{
		"Shutdown": func(l *LMTP) error { return l.Shutdown(context.Background()) },
		"Close":    func(l *LMTP) error { return l.Close() },
	}
	for name, stop := range stops {
		for i := 0; i < 40; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l := NewLMTP(f.d, LMTPOptions{Logger: slog.New(slog.DiscardHandler)})
			done := make(chan error, 1)
			if i == 0 {
				// Stopped before Serve was called at all.
				if err := stop(l); err != nil {
					t.Errorf("%s before Serve: %v", name, err)
				}
				go func() { done <- l.Serve(ln) }()
			} else {
				go func() { done <- l.Serve(ln) }()
				stop(l)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s, round %d: Serve returned %v, want nil", name, i, err)
				}
			case <-time.After(30 * time.Second):
				ln.Close()
				t.Fatalf("%s, round %d: Serve had not returned 30s after the stop", name, i)
			}
			if c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
				c.Close()
				t.Errorf("%s, round %d: the listener still accepts connections after Serve returned", name, i)
			}
			ln.Close()
		}
	}
}
