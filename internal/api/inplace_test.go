package api

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// signedRawBy returns a request signed now with key, as bytes.
func signedRawBy(t testing.TB, e *env, key *keys.SecretKey, method, path, query string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = query
	if err := SignRequest(req, nil, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	if err := req.Write(&raw); err != nil {
		t.Fatal(err)
	}
	return raw.Bytes()
}

// TestRenewalInPlaceAnswersAsNetHTTP: a request sent on the connection of
// an answered parked read, where the server reads a renewal itself, is
// answered as net/http answers it as the first request of a connection:
// the same status, and the connection kept or closed alike. Each request is
// a renewal bent the way a client or an attacker between might bend it.
func TestRenewalInPlaceAnswersAsNetHTTP(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = time.Second })
	ctx := testCtx(t)
	if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	host := "Host: " + e.srv.Listener.Addr().String() + "\r\n"
	renewal := func() []byte {
		return signedRawBy(t, e, e.alice, "GET", "/v1/users/alice/entries", "after=0&wait=1")
	}
	bent := func(old, new string) func() []byte {
		return func() []byte {
			r := renewal()
			if !bytes.Contains(r, []byte(old)) {
				t.Fatalf("%q not in %q", old, r)
			}
			return bytes.Replace(r, []byte(old), []byte(new), 1)
		}
	}
	cases := []struct {
		what string
		req  func() []byte
	}{
		{"a renewal", renewal},
		{"bob's renewal of alice's log", func() []byte {
			return signedRawBy(t, e, e.bob, "GET", "/v1/users/alice/entries", "after=0&wait=1")
		}},
		{"a stranger's renewal", func() []byte {
			return signedRawBy(t, e, e.stranger, "GET", "/v1/users/alice/entries", "after=0&wait=1")
		}},
		{"a malformed Host", bent(host, "Host: a b\r\n")},
		{"a Host with a slash", bent(host, "Host: a/b\r\n")},
		{"two Hosts", bent(host, host+"Host: other\r\n")},
		{"no Host", bent(host, "")},
		{"an obs-fold header", bent(host, host+"X-A: a\r\n b\r\n")},
		{"a header with a NUL", bent(host, host+"X-A: a\x00b\r\n")},
		{"a header name with a space", bent(host, host+"X A: a\r\n")},
		{"Content-Length and Transfer-Encoding", bent("\r\n\r\n", "\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")},
		{"two Content-Lengths", bent("\r\n\r\n", "\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\n")},
		{"HTTP/1.0", bent("HTTP/1.1", "HTTP/1.0")},
		{"absolute form", bent("GET /", "GET http://example.com/")},
		{"Connection: close", bent(host, host+"Connection: close\r\n")},
		{"Expect", bent(host, host+"Expect: 100-continue\r\n")},
	}
	addr := e.srv.Listener.Addr().String()
	for _, c := range cases {
		wantStatus, wantClosed, status, closed := bothWays(t, addr, renewal, c.req, 30*time.Second)
		if status != wantStatus || closed != wantClosed {
			t.Errorf("%s after a parked read: %d, close %v; as the first request: %d, close %v",
				c.what, status, closed, wantStatus, wantClosed)
		}
		if strings.Contains(c.what, "renewal") && status == http.StatusOK && c.what != "a renewal" {
			t.Errorf("%s: 200", c.what)
		}
	}
}

// TestDrainWaitsForTheNextRequest: the goroutine that answered a parked
// read and goes on to read the connection's next request stays counted
// for Drain from the answer to the end of that request, so that Drain
// never finds none in between (where a WaitGroup reaching zero under a
// Wait and counted up again makes the Wait panic) and does not return
// while the connection is still being served.
func TestDrainWaitsForTheNextRequest(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = time.Second })
	ctx := testCtx(t)
	if _, err := e.store.Append(ctx, "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	hook := func(s *Server) {
		if s == e.api {
			close(entered)
			<-release
		}
	}
	testHookServeNext.Store(&hook)
	t.Cleanup(func() { testHookServeNext.Store(nil) })
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(signedRaw(t, e, "GET", "/v1/users/alice/entries", "after=0&wait=1")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	<-entered // answered; the connection's next request is to be read
	e.api.Shutdown()
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = e.api.Drain(dctx)
	cancel()
	if err == nil {
		t.Error("Drain returned while the goroutine of an answered parked read still serves its connection")
	}
	close(release)
	dctx, cancel = context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := e.api.Drain(dctx); err != nil {
		t.Fatalf("Drain once the connection is done: %v", err)
	}
}

// bothWays sends req as the first request of a connection (net/http reads
// it) and on another connection after a parked read's answer (the server
// reads it itself), and returns the status and whether the connection was
// closed, each way; a response not read within limit counts as closed.
func bothWays(t testing.TB, addr string, renewal, req func() []byte, limit time.Duration) (firstStatus int, firstClosed bool, status int, closed bool) {
	t.Helper()
	dial := func() (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(limit))
		return conn, bufio.NewReader(conn)
	}
	send := func(conn net.Conn, br *bufio.Reader, b []byte) (status int, closed bool) {
		if _, err := conn.Write(b); err != nil {
			return 0, true
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return 0, true
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Close
	}
	conn, br := dial()
	firstStatus, firstClosed = send(conn, br, req())
	conn.Close()
	conn, br = dial()
	defer conn.Close()
	if st, cl := send(conn, br, renewal()); st != http.StatusOK || cl {
		t.Fatalf("a long-poll: %d, close %v", st, cl)
	}
	status, closed = send(conn, br, req())
	return firstStatus, firstClosed, status, closed
}

// FuzzRenewalInPlace: a renewal with any bytes among its header lines is
// answered alike as the first request of a connection (net/http) and after
// a parked read's answer (the server's own reading). Its status and
// whether the connection stays open must be the same both ways; and a
// renewal that was bent must never get 200 where net/http refused it.
func FuzzRenewalInPlace(f *testing.F) {
	for _, s := range []string{"", "X-A: b\r\n", "Host: other\r\n", "X-A: a\r\n b\r\n", "X A: a\r\n",
		"Content-Length: 0\r\nContent-Length: 3\r\n", "Transfer-Encoding: chunked\r\n", "Connection: close\r\n",
		"Expect: 100-continue\r\n", "X-A: a\x00b\r\n", "\r\nGET / HTTP/1.1\r\n"} {
		f.Add(false, []byte(s))
	}
	f.Add(true, []byte("Host: a b\r\n"))
	// Many requests of one key from one address, refused ones among them:
	// no nonce budget or refusal rate may answer one way and not the other.
	e := newEnv(f, false, func(c *Config) {
		c.MaxWait, c.MaxNonces, c.RefusalRate, c.MaxConnsPerAddr = time.Second, 1<<24, -1, -1
	})
	if _, err := e.store.Append(testCtx(f), "alice", [][]byte{[]byte("one")}); err != nil {
		f.Fatal(err)
	}
	addr := e.srv.Listener.Addr().String()
	host := "Host: " + addr + "\r\n"
	f.Fuzz(func(t *testing.T, dropHost bool, extra []byte) {
		renewal := func() []byte {
			return signedRawBy(t, e, e.alice, "GET", "/v1/users/alice/entries", "after=0&wait=1")
		}
		bent := func() []byte {
			r := renewal()
			with := append([]byte(host), extra...)
			if dropHost {
				with = extra
			}
			return bytes.Replace(r, []byte(host), with, 1)
		}
		ws, wc, st, cl := bothWays(t, addr, renewal, bent, 3*time.Second)
		if (st != ws || cl != wc) && (st == 0 || ws == 0) {
			// One way unanswered within 3 s, the other answered: a slow
			// machine, or a real difference; a longer wait tells.
			ws, wc, st, cl = bothWays(t, addr, renewal, bent, 15*time.Second)
		}
		if st != ws || cl != wc {
			t.Fatalf("after a parked read: %d, close %v; as the first request: %d, close %v", st, cl, ws, wc)
		}
	})
}
