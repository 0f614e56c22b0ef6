package imapd

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
)

// writesConn is a connection that keeps a copy of each write to it.
type writesConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// written returns the writes so far.
func (c *writesConn) written() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

// writesListener hands out its connections as writesConns.
type writesListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*writesConn
}

func (l *writesListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wc := &writesConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, wc)
	l.mu.Unlock()
	return wc, nil
}

// TestFetchFirstBlockGoesOutAtOnce: the first responses of a FETCH the
// session writes itself reach the socket in a write of about
// firstBlockBytes, not after a whole block of holdBytes; the rest follow
// in blocks, and the client gets every response, as before.
func TestFetchFirstBlockGoesOutAtOnce(t *testing.T) {
	const n = 800
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for i := range n {
		pos = r.Deliver([]byte(fmt.Sprintf("From: s%d@example.org\r\nSubject: first %d\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: text/plain; charset=utf-8\r\n\r\nhello %d\r\n", i, i, i)))
	}
	d.synced(pos)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := &writesListener{Listener: ln}
	served := make(chan struct{})
	go func() {
		defer close(served)
		d.srv.Serve(wl)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-served
	})

	for _, c := range []struct {
		items, first string
		blocks       bool // more than two blocks of responses
	}{
		{"(BODYSTRUCTURE)", "* 1 FETCH (BODYSTRUCTURE (", true},
		{"(ENVELOPE)", "* 1 FETCH (ENVELOPE (", true},
		{"(RFC822.SIZE)", "* 1 FETCH (RFC822.SIZE ", false},
	} {
		rc := dialRaw(t, wl.Addr().String())
		rc.cmd(`a LOGIN alice "` + testPassword + `"`)
		rc.until("a OK")
		rc.cmd("b EXAMINE INBOX")
		rc.until("b OK")
		rc.cmd("c FETCH 1:* " + c.items)
		got := rc.until("c OK")
		if k := strings.Count(got, " FETCH ("); k != n {
			t.Fatalf("%s: %d responses, want %d:\n%.1000s", c.items, k, n, got)
		}
		wl.mu.Lock()
		wc := wl.conns[len(wl.conns)-1]
		wl.mu.Unlock()
		// The writes from the one with the first response to the one with
		// the last.
		last := []byte(fmt.Sprintf("* %d FETCH (", n))
		var sizes []int
		var firstWrite []byte
		for _, w := range wc.written() {
			if firstWrite == nil && !bytes.HasPrefix(w, []byte(c.first)) {
				continue
			}
			if firstWrite == nil {
				firstWrite = w
			}
			sizes = append(sizes, len(w))
			if bytes.Contains(w, last) {
				break
			}
		}
		if firstWrite == nil {
			t.Fatalf("%s: no write starts with %q", c.items, c.first)
		}
		rc.cmd("z LOGOUT")
		rc.until("z OK")
		// The first write holds firstBlockBytes and at most one response
		// more, whole responses.
		if len(firstWrite) < firstBlockBytes || len(firstWrite) >= firstBlockBytes+512 || !bytes.HasSuffix(firstWrite, []byte(")\r\n")) {
			t.Fatalf("%s: the first write of the FETCH has %d bytes, want whole responses, %d to %d; writes %v",
				c.items, len(firstWrite), firstBlockBytes, firstBlockBytes+512, sizes)
		}
		if !c.blocks {
			continue
		}
		// Then blocks, the last one short: no write of a few responses.
		if len(sizes) < 3 {
			t.Fatalf("%s: writes %v, want at least a block between the first and the last", c.items, sizes)
		}
		for i, s := range sizes[1 : len(sizes)-1] {
			if s < holdBytes {
				t.Fatalf("%s: write %d of the FETCH has %d bytes, less than a block; writes %v", c.items, i+2, s, sizes)
			}
		}
	}
}
