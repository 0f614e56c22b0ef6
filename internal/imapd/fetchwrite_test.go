package imapd

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
)

// countingListener counts the writes to the sockets it accepts.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestFetchWritesInBlocks: a FETCH of many messages reaches the socket in
// blocks, not in one write per message (go-imap flushes each response);
// every response is still there, in order, and the EXISTS and EXPUNGE
// tracking of the framer sees the updates written around it.
func TestFetchWritesInBlocks(t *testing.T) {
	t.Parallel()
	const n = 400
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for i := range n {
		pos = r.Deliver([]byte(fmt.Sprintf("Subject: block %d\r\nFrom: a@example.org\r\n\r\nhello\r\n", i)))
	}
	d.synced(pos)

	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &countingListener{Listener: inner}
	go d.srv.Serve(ln)
	rc := dialRaw(t, ln.Addr().String())
	rc.cmd(`a LOGIN alice "` + testPassword + `"`)
	rc.until("a OK")
	rc.cmd("b EXAMINE INBOX")
	rc.until("b OK")
	before := ln.writes.Load()
	rc.cmd("c FETCH 1:* (UID FLAGS ENVELOPE)")
	var lines []string
	for range n {
		lines = append(lines, rc.until("* "))
	}
	end := rc.until("c ")
	writes := ln.writes.Load() - before
	if !strings.HasPrefix(end, "c OK") {
		t.Fatalf("FETCH ended with %q", end)
	}
	for i, l := range lines {
		want := fmt.Sprintf("* %d FETCH (UID %d FLAGS (", i+1, i+1)
		if !strings.HasPrefix(l, want) || !strings.Contains(l, fmt.Sprintf(`"block %d"`, i)) {
			t.Fatalf("response %d is %q, want it to start %q and hold its subject", i+1, l, want)
		}
	}
	if writes > n/10 {
		t.Errorf("FETCH of %d messages took %d writes to the socket, want at most %d", n, writes, n/10)
	}

	// A new message arrives: the next command's EXISTS goes through the
	// framer's count as before, so FETCH of the new number is taken.
	d.synced(r.Deliver([]byte("Subject: one more\r\n\r\nhello\r\n")))
	rc.cmd("d NOOP")
	if got := rc.until("d "); !strings.Contains(got, fmt.Sprintf("* %d EXISTS", n+1)) {
		t.Fatalf("NOOP after a delivery: %q, want EXISTS %d", got, n+1)
	}
	rc.cmd(fmt.Sprintf("e FETCH %d (UID)", n+1))
	if got := rc.until("e "); !strings.Contains(got, fmt.Sprintf("* %d FETCH (UID %d)", n+1, n+1)) || !strings.Contains(got, "e OK") {
		t.Fatalf("FETCH of the new message: %q", got)
	}
}
