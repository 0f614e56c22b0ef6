package submit_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/loginguard"
	"cspool/internal/sendtest"
	"cspool/internal/submit"
)

// TestStalledTLSHandshakeEnded: a connection whose TLS handshake never
// ends (a record header announcing a ClientHello that never comes), on
// the implicit TLS port or after STARTTLS, is bounded like any connection
// that has not logged in: pushed out by newer ones past MaxPending, and
// closed at LoginDeadline. The 421 the guard had written first waited for
// the handshake with no bound on its read, so such connections were never
// closed, past every limit.
func TestStalledTLSHandshakeEnded(t *testing.T) {
	t.Parallel()
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	srv, err := submit.New(submit.Config{User: user, Password: password, Identities: []string{"alice@example.org"},
		Queue: &memQueue{}, Hostname: "device.test", Logger: slog.New(slog.DiscardHandler),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		// LoginDeadline long enough for the plain connection's EHLO and
		// STARTTLS on a loaded machine (at 2 s it was closed before its
		// EHLO was answered once), short of the 20 s the test waits.
		Login: loginguard.Limits{MaxPending: 2, MaxPendingPerSource: 2, LoginDeadline: 6 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	listen := func(serve func(net.Listener) error) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); serve(ln) }()
		return ln.Addr().String()
	}
	plain, implicit := listen(srv.Serve), listen(srv.ServeTLS)
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	stall := func(c net.Conn) {
		if _, err := c.Write([]byte("\x16\x03\x01\x02\x00")); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(addr string) net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var conns []net.Conn
	for range 2 {
		c := dial(implicit)
		stall(c)
		conns = append(conns, c)
	}
	// After STARTTLS: the greeting, EHLO and STARTTLS read in the clear.
	c := dial(plain)
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, cmd := range []string{"", "EHLO client.test\r\n", "STARTTLS\r\n"} {
		if cmd != "" {
			if _, err := c.Write([]byte(cmd)); err != nil {
				t.Fatal(err)
			}
		}
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", cmd, err)
			}
			if len(line) < 4 || line[3] != '-' {
				if cmd == "STARTTLS\r\n" && !strings.HasPrefix(line, "220 ") {
					t.Fatalf("STARTTLS: %q", line)
				}
				break
			}
		}
	}
	stall(c)
	conns = append(conns, c)
	deadline := time.Now().Add(20 * time.Second)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		_, err := c.Read(make([]byte, 64))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("connection %d, its TLS handshake stalled: still open after 20 s (MaxPending 2, LoginDeadline 6 s)", i+1)
		}
	}
}
