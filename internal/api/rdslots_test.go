package api

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReadsOfOneKeyBounded: a user's key opens reads of a large entry on
// connections of their own and takes nothing of the answers. Each read
// holds its entries in the server's memory until its answer is written,
// which a client that does not take it makes last WriteStall (each 256
// KiB) and can start again. Before, every such read was answered: one key
// held as many as its address had connections (64), each with an entry of
// up to MaxBody, and with cspool server 30 reads of a 20 MB entry took
// the server from 71 to 811 MB. Now a key holds MaxReadsPerKey reads with
// entries at once; the others wait CheckpointWait for a place and get
// 429. Long-polls that wait hold no place, and once the stalled readers
// go, the key reads again.
func TestReadsOfOneKeyBounded(t *testing.T) {
	const perKey, stalled, size = 2, 6, 32 << 20
	m := &recMetrics{}
	e := newEnv(t, false, func(c *Config) {
		c.Metrics = m
		c.MaxBody = 2 * size
		c.MaxReadsPerKey = perKey
		c.CheckpointWait = time.Second
	})
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	if _, err := c.Append(ctx, "alice", [][]byte{make([]byte, size)}); err != nil {
		t.Fatal(err)
	}

	// Long-polls waiting for the next entry hold no place.
	var polls sync.WaitGroup
	for range perKey + 1 {
		polls.Go(func() {
			c.Read(ctx, 1, 1, 0, 3*time.Second)
		})
	}
	waitFor(t, "the long-polls waiting", func() bool {
		e.api.polls.mu.Lock()
		defer e.api.polls.mu.Unlock()
		return e.api.polls.waiting["alice"] == perKey+1
	})
	if _, _, err := c.Read(ctx, 1, 1, 0, 0); err != nil {
		t.Fatalf("a read beside %d waiting long-polls: %v", perKey+1, err)
	}

	statuses := make(chan int, stalled)
	var conns []net.Conn
	for range stalled {
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		conns = append(conns, conn)
		if _, err := conn.Write(signedRaw(t, e, "GET", "/v1/users/alice/entries", "after=0&max_count=1")); err != nil {
			t.Fatal(err)
		}
		go func() {
			// The status line only: the answer's body is never taken.
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			f := strings.Fields(line)
			code := 0
			if len(f) > 1 {
				code = map[string]int{"200": 200, "429": 429}[f[1]]
			}
			statuses <- code
		}()
	}
	got := map[int]int{}
	for range stalled {
		got[<-statuses]++
	}
	if got[http.StatusOK] != perKey || got[http.StatusTooManyRequests] != stalled-perKey {
		t.Errorf("%d reads of a %d-byte entry, none taken: %v; want %d answered 200 and the others 429", stalled, size, got, perKey)
	}
	if told := m.readRefusals(); len(told) != got[http.StatusTooManyRequests] || slices.ContainsFunc(told, func(r string) bool { return r != ReadRefusedKeyReads }) {
		t.Errorf("ReadRefused told %q for %d answers 429; want %s for each", told, got[http.StatusTooManyRequests], ReadRefusedKeyReads)
	}
	for _, conn := range conns {
		conn.Close()
	}
	waitFor(t, "alice reads again once the stalled readers are gone", func() bool {
		_, _, err := c.Read(ctx, 0, 1, 0, 0)
		return err == nil
	})
	polls.Wait()
}
