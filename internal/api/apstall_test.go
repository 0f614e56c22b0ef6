package api

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestStalledAppendsOfFourKeys: four users' keys each open an append of
// the largest body and send one byte of it. Each key holds its share of
// AppendMemory (a quarter), so together they hold all of it, and every
// other append (another user's change, every delivery over HTTP) waits
// and gets 503. Before, they held it until the HTTP server's read timeout
// (10 minutes in cspool server; never, without one), and could open the
// next four as soon as those ended. Now each piece of an append's body
// must come within WriteStall, as a checkpoint upload's must: the stalled
// appends are cut off and let their share go, a fifth user's append goes
// through, and an append that keeps sending, though over several
// WriteStalls, is appended.
func TestStalledAppendsOfFourKeys(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, true, func(c *Config) {
		c.MaxBody = limit
		c.AppendMemory = 4 * limit // each key's share is the largest body
		c.CheckpointWait = time.Second
		c.WriteStall = 5 * time.Second
	})
	ctx := testCtx(t)
	users := []string{"alice", "bob", "carol", "dave", "erin"}
	userKeys := map[string]*keys.SecretKey{"alice": e.alice, "bob": e.bob}
	for _, u := range users {
		if userKeys[u] == nil {
			userKeys[u] = genKey(t)
		}
		// Registers the name in test mode.
		if _, err := e.client(t, u, userKeys[u]).Head(ctx); err != nil {
			t.Fatal(err)
		}
	}
	held := func() int64 {
		e.api.apMem.mu.Lock()
		defer e.api.apMem.mu.Unlock()
		return e.api.apMem.held
	}
	// One entry of the largest body: a 3-byte length and its bytes.
	body := EncodeBatch([][]byte{make([]byte, limit-3)})
	if len(body) != limit {
		t.Fatalf("the body is %d bytes, want %d", len(body), limit)
	}
	// appendOpen opens an append of the whole body by user on a
	// connection of its own and sends its first byte.
	appendOpen := func(user string) (net.Conn, *http.Request) {
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		req, err := http.NewRequest("POST", e.srv.URL+"/v1/users/"+user+"/entries", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = limit
		req.Header.Set("Content-Type", ContentType)
		if err := SignRequest(req, body, userKeys[user], time.Now()); err != nil {
			t.Fatal(err)
		}
		var head bytes.Buffer
		req.Header.Write(&head)
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n", req.URL.RequestURI(), req.Host, limit, head.Bytes())
		conn.Write(body[:1])
		return conn, req
	}
	for _, u := range users[:4] {
		appendOpen(u)
	}
	waitFor(t, "four stalled appends held", func() bool { return held() == 4*limit })
	if _, err := e.client(t, "erin", userKeys["erin"]).Append(ctx, "erin", [][]byte{[]byte("a change")}); err == nil {
		t.Fatal("a fifth user's append went through while four stalled appends held the whole budget")
	}

	// Cut off after WriteStall, the stalled appends let their bytes go.
	for start := time.Now(); held() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("four stalled appends still hold %d bytes of the budget of %d after %v", held(), 4*limit, time.Since(start).Round(time.Second))
		}
	}
	if _, err := e.client(t, "erin", userKeys["erin"]).Append(ctx, "erin", [][]byte{[]byte("a change")}); err != nil {
		t.Fatalf("a fifth user's append after four stalled: %v", err)
	}

	// A slow append that keeps sending, a piece of 64 KiB at a time, is
	// read whole, though it takes longer than WriteStall.
	conn, req := appendOpen("alice")
	go func() {
		for off := 1; off < limit; off += 64 << 10 {
			time.Sleep(400 * time.Millisecond)
			if _, err := conn.Write(body[off:min(limit, off+64<<10)]); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("the slow append: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the slow append: %d %s; want 200", resp.StatusCode, msg)
	}
}
