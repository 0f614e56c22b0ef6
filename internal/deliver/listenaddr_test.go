package deliver

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// addrListener is a loopback listener that reports another address, as a
// listener on that address would.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// lockedBuffer is a log sink the server and the test share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// An LMTP listener on a wildcard or another non-loopback address (an
// operator's --lmtp :2424 or 0.0.0.0:2424) is warned about: LMTP has no
// authentication, so anyone who reaches it delivers mail to every user,
// signed with the spool key, past the mail server in front. It was
// served without a word.
func TestWarnsBeyondLocalhost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		addr net.Addr // nil: the listener's own
		warn bool
	}{
		{"IPv4 wildcard", &net.TCPAddr{IP: net.IPv4zero, Port: 2424}, true},
		{"IPv6 wildcard", &net.TCPAddr{IP: net.IPv6unspecified, Port: 2424}, true},
		{"another address", &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 2424}, true},
		{"IPv6 loopback", &net.TCPAddr{IP: net.IPv6loopback, Port: 2424}, false},
		{"127.0.0.1", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "alice")
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dial := ln.Addr().String()
			var served net.Listener = ln
			if c.addr != nil {
				served = addrListener{Listener: ln, addr: c.addr}
			}
			var logs lockedBuffer
			l := NewLMTP(f.d, LMTPOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			done := make(chan error, 1)
			go func() { done <- l.Serve(served) }()
			// The greeting comes after Serve logged.
			s := dialScripted(t, dial)
			s.cmd("QUIT", "221")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			out := logs.String()
			warned := strings.Contains(out, "level=WARN") && strings.Contains(out, "LMTP LISTENS BEYOND LOCALHOST")
			if warned != c.warn {
				t.Errorf("listening on %v: warned %v, want %v; log:\n%s", served.Addr(), warned, c.warn, out)
			}
		})
	}
}
