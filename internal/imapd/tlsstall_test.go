package imapd

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"cspool/internal/sendtest"
)

// TestStalledTLSHandshakeEnded: on the implicit TLS port, a connection
// whose TLS handshake never ends (a record header announcing a
// ClientHello that never comes) is bounded like any connection that has
// not logged in: pushed out by newer ones past MaxPending, and closed at
// LoginDeadline. The BYE the guard had written first waited for the
// handshake with no bound on its read, so such connections were never
// closed: each held a descriptor and goroutines for as long as the peer
// kept it open, past every limit, and a local user (or, with --addr, a
// remote one) could use up the daemon's open files.
func TestStalledTLSHandshakeEnded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	d := r.deviceWith("stall", Config{
		TLS:   &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Login: LoginLimits{MaxPending: 2, MaxPendingPerSource: 2, LoginDeadline: 2 * time.Second},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); d.srv.ServeTLS(ln) }()
	t.Cleanup(func() { d.srv.Close(); <-done })
	stalled := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("\x16\x03\x01\x02\x00")); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The third pushes out the first; the other two reach the deadline.
	conns := []net.Conn{stalled(), stalled(), stalled()}
	deadline := time.Now().Add(20 * time.Second)
	for i, c := range conns {
		c.SetReadDeadline(deadline)
		_, err := c.Read(make([]byte, 64))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("connection %d, its TLS handshake stalled: still open after 20 s (MaxPending 2, LoginDeadline 2 s)", i+1)
		} else if err == nil {
			t.Errorf("connection %d, its TLS handshake stalled: the server wrote to it", i+1)
		}
	}
}
