package imapd

import (
	"bufio"
	"crypto/tls"
	"net"
	"os"
	"testing"
	"time"

	"cspool/internal/sendtest"
)

// openFiles counts the descriptors this process holds open; it skips the
// test where /proc does not list them.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	return len(fds)
}

// TestPushedOutStalledTLSClosed: a flood of connections on the implicit
// TLS port whose handshakes stall holds at most twice MaxPending of them
// open on the server: MaxPending waiting to log in and as many being ended
// with a BYE (which waits for the handshake, up to 5 s); the others
// pushed out are closed at once, without a word. Before, each one pushed
// out held its descriptor and goroutines for those 5 s: 1,500 such
// connections, made in 0.4 s, held 1,358 descriptors on the server with a
// MaxPending of 64. Not parallel: it counts the process's descriptors.
func TestPushedOutStalledTLSClosed(t *testing.T) {
	r := newRig(t)
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	const maxPending = 4
	d := r.deviceWith("flood", Config{
		TLS:   &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		Login: LoginLimits{MaxPending: maxPending, MaxPendingPerSource: maxPending, LoginDeadline: time.Hour},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); d.srv.ServeTLS(ln) }()
	t.Cleanup(func() { d.srv.Close(); <-done })
	dialTLS := func() *rawConn {
		tc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tc.Close() })
		rc := &rawConn{t: t, c: tc, br: bufio.NewReader(tc)}
		rc.until("* OK")
		return rc
	}
	// A first client, so that the server's reader connections and
	// goroutines are there before the count starts.
	noopOK(t, dialTLS(), "n", "a first client")
	before := openFiles(t)

	const flood = 200
	for range flood {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte("\x16\x03\x01\x02\x00")); err != nil {
			t.Fatal(err)
		}
	}
	// Served after all of them were accepted: connections are accepted
	// in order.
	client := dialTLS()
	noopOK(t, client, "c", "a client come after the flood")
	// The flood's and the client's ends in this process, then the
	// server's: those waiting to log in, those given a BYE, and the
	// first client's; a few more for the store's readers.
	const slack = 8
	want := 2*maxPending + 1 + slack
	var server int
	for range 20 {
		if server = openFiles(t) - before - flood - 1; server <= want {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if server > want {
		t.Fatalf("%d descriptors open on the server side after %d stalled TLS connections, want at most %d (MaxPending %d, twice, and a few)",
			server, flood, want, maxPending)
	}
	loginRaw(t, client)
}
