package imapd

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestFetchToAClientGone: a client that asks for a large message and goes
// away with a reset while the server writes it: the connection's session
// ends. The response left open held the library's encoder, the tagged
// reply after the write error waited on it for good, and the connection's
// goroutine with it (and, at shutdown, its BYE).
func TestFetchToAClientGone(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	d.synced(r.Deliver([]byte("Subject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 1<<19))))
	open := func() int {
		d.srv.connMu.Lock()
		defer d.srv.connMu.Unlock()
		return len(d.srv.conns)
	}
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	before := open()
	w.send("f1 FETCH 1 (BODY.PEEK[])\r\n")
	// Read a little, so that the server is inside the literal, then
	// reset the connection.
	buf := make([]byte, 4096)
	if _, err := w.br.Read(buf); err != nil {
		t.Fatal(err)
	}
	tc := w.c.(*net.TCPConn)
	_ = tc.SetLinger(0)
	tc.Close()
	deadline := time.Now().Add(20 * time.Second)
	for open() >= before {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open 20 s after the client went away in a FETCH (%d before)", open(), before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
