package api

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// TestStalledCheckpointDownload: a user's key whose client asks for its
// checkpoint and never reads the answer. The server loaded the whole
// checkpoint for each such request and held it for as long as the
// connection stayed open, so one key could hold a checkpoint for each of
// the connections its address may open (64 at the default): 16 MiB
// checkpoints, 12 connections, 192 MiB held. Now a key downloads one at a
// time (503 with Retry-After for another meanwhile), the download's bytes
// are taken from the checkpoint budget, and a write that waits
// Config.WriteStall for the client cuts it off and lets them go.
func TestStalledCheckpointDownload(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.WriteStall = time.Second })
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 10)
	data := make([]byte, 8<<20)
	rand.Read(data)
	if _, err := c.PutCheckpoint(ctx, spool.Checkpoint{Pos: 6, Data: data}, nil); err != nil {
		t.Fatal(err)
	}
	get := func() *http.Request {
		req, err := http.NewRequest("GET", e.srv.URL+"/v1/users/alice/checkpoint", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(req, nil, e.alice, time.Now()); err != nil {
			t.Fatal(err)
		}
		return req
	}

	// The stalled client: a small receive buffer, and no read.
	stalled, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4096)
	if err := get().Write(stalled); err != nil {
		t.Fatal(err)
	}
	held := func() int64 {
		e.api.cpMem.mu.Lock()
		defer e.api.cpMem.mu.Unlock()
		return e.api.cpMem.held
	}
	waitFor(t, "the stalled download's bytes held", func() bool { return held() >= int64(len(data)) })

	// Another download by the same key meanwhile: refused, to come back.
	resp, err := http.DefaultClient.Do(get())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("a second download by the key while the first stalls: %d (Retry-After %q), want 503 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	// The stalled write gives up after WriteStall: the bytes go, and the
	// key downloads again.
	waitFor(t, "the stalled download let go", func() bool { return held() == 0 })
	cp, err := c.Checkpoint(ctx)
	if err != nil || cp.Pos != 6 || len(cp.Data) != len(data) {
		t.Fatalf("download after the stall: position %d, %d bytes, %v; want 6 and %d bytes", cp.Pos, len(cp.Data), err, len(data))
	}

	// A slow client that keeps reading gets the whole checkpoint, though
	// it takes several WriteStalls: the wait is for each piece, not for
	// the whole answer, which net/http hands to the connection in one
	// write.
	slow, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.(*net.TCPConn).SetReadBuffer(64 << 10)
	req := get()
	if err := req.Write(slow); err != nil {
		t.Fatal(err)
	}
	slow.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err = http.ReadResponse(bufio.NewReader(slow), req)
	if err != nil {
		t.Fatal(err)
	}
	got, start := 0, time.Now()
	buf := make([]byte, 512<<10)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		got += n
		if err != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp.Body.Close()
	if got != len(data) {
		t.Fatalf("a slow client read %d bytes of the checkpoint in %v, want %d", got, time.Since(start).Round(time.Millisecond), len(data))
	}
	if n := held(); n != 0 {
		t.Errorf("%d bytes still held after the downloads", n)
	}
}

// TestStalledCheckpointUploads: a user's key opens a checkpoint upload
// without a length and stalls it after its first byte, then opens another.
// Each held the size limit from the budget until the server's read timeout
// (10 minutes), so two such filled the default budget, and every other
// user's upload waited 10 s and got 503. Now a key uploads one at a time:
// its second gets 503 at once, and another user's upload goes through.
func TestStalledCheckpointUploads(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.CheckpointWait = 2 * time.Second })
	ctx := testCtx(t)
	alice := e.client(t, "alice", e.alice)
	appendNumbered(t, alice, 8)
	bob := e.client(t, "bob", e.bob)
	if _, err := bob.Append(ctx, "bob", [][]byte{[]byte("1"), []byte("2"), []byte("3"), []byte("4"), []byte("5"), []byte("6")}); err != nil {
		t.Fatal(err)
	}
	put := func() (*http.Request, *io.PipeWriter) {
		pr, pw := io.Pipe()
		req, err := http.NewRequest("PUT", e.srv.URL+"/v1/users/alice/checkpoint?pos=6&"+ReadsParam+"=4", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		req.Header.Set("Content-Type", CheckpointContentType)
		if err := SignRequest(req, []byte("a checkpoint never sent whole"), e.alice, time.Now()); err != nil {
			t.Fatal(err)
		}
		return req, pw
	}
	for i := range 2 {
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req, pw := put()
		defer pw.Close()
		go req.Write(conn)
		pw.Write([]byte{0}) // the kept count: none; then nothing more
		if i == 0 {
			waitFor(t, "the stalled upload's hold", func() bool {
				e.api.cpMem.mu.Lock()
				defer e.api.cpMem.mu.Unlock()
				return e.api.cpMem.held > 0
			})
			continue
		}
		// The second's body ends after its byte: net/http reads what is
		// left of a body before it sends a refusal.
		pw.Close()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), req)
		if err != nil {
			t.Fatalf("the key's second upload: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("the key's second upload while its first stalls: %d, want 503 with Retry-After", resp.StatusCode)
		}
	}
	if _, err := bob.PutCheckpoint(ctx, spool.Checkpoint{Pos: 6, Data: []byte("bob's checkpoint")}, nil); err != nil {
		t.Fatalf("another user's upload while alice's stall: %v", err)
	}
}

// TestStalledUploadsOfTwoKeys: two users' keys each open a checkpoint
// upload of the size limit, send its first byte and stall. Together they
// held the whole checkpoint budget until the HTTP server's read timeout
// (10 minutes in cspool server; never, without one), and every other
// user's upload waited and got 503. Now each piece of an upload's body
// must come within WriteStall: the stalled ones are cut off and let their
// share go, a third user's upload goes through, and an upload that keeps
// sending, though over several WriteStalls, is stored.
func TestStalledUploadsOfTwoKeys(t *testing.T) {
	const limit = 1 << 20
	e := newEnv(t, true, func(c *Config) {
		c.MaxCheckpointBody = limit
		c.CheckpointMemory = 2 * limit // two uploads of the limit fill it
		c.CheckpointWait = time.Second
		c.WriteStall = 3 * time.Second
	})
	ctx := testCtx(t)
	carolKey := genKey(t)
	clients := map[string]*Client{}
	for name, k := range map[string]*keys.SecretKey{"alice": e.alice, "bob": e.bob, "carol": carolKey} {
		clients[name] = e.client(t, name, k)
		if _, err := clients[name].Append(ctx, name, [][]byte{{1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}}); err != nil {
			t.Fatal(err)
		}
	}
	held := func() int64 {
		e.api.cpMem.mu.Lock()
		defer e.api.cpMem.mu.Unlock()
		return e.api.cpMem.held
	}
	// upload opens a checkpoint upload of limit bytes by user on a
	// connection of its own and sends its first byte, the kept count.
	upload := func(user string, key *keys.SecretKey) (net.Conn, *http.Request) {
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		body := make([]byte, limit)
		req, err := http.NewRequest("PUT", e.srv.URL+"/v1/users/"+user+"/checkpoint?pos=6&"+ReadsParam+"=4", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = limit
		req.Header.Set("Content-Type", CheckpointContentType)
		if err := SignRequest(req, body, key, time.Now()); err != nil {
			t.Fatal(err)
		}
		var head bytes.Buffer
		req.Header.Write(&head)
		fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n", req.URL.RequestURI(), req.Host, limit, head.Bytes())
		conn.Write(body[:1])
		return conn, req
	}
	upload("alice", e.alice)
	upload("bob", e.bob)
	waitFor(t, "both stalled uploads held", func() bool { return held() == 2*limit })

	// Cut off after WriteStall, the stalled uploads let their bytes go.
	// (Bounded: before, they held them as long as their connections
	// stayed open.)
	for start := time.Now(); held() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("two stalled uploads still hold %d bytes of the budget of %d after %v", held(), 2*limit, time.Since(start).Round(time.Second))
		}
	}
	if _, err := clients["carol"].PutCheckpoint(ctx, spool.Checkpoint{Pos: 6, Data: []byte("carol's checkpoint")}, nil); err != nil {
		t.Fatalf("a third user's upload after two stalled: %v", err)
	}

	// A slow upload that keeps sending, a piece of 64 KiB at a time, is
	// read whole, though it takes longer than WriteStall.
	conn, req := upload("alice", e.alice)
	body := make([]byte, limit)
	go func() {
		for off := 1; off < limit; off += 64 << 10 {
			time.Sleep(200 * time.Millisecond)
			if _, err := conn.Write(body[off:min(limit, off+64<<10)]); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		t.Fatalf("the slow upload: %v", err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the slow upload: %d %s, want 200", resp.StatusCode, msg)
	}
	if n := held(); n != 0 {
		t.Errorf("%d bytes still held after the uploads", n)
	}
}
