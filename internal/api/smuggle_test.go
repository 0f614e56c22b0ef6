package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestChunkedRequestEndsItsConnection: a request whose body is chunked is
// answered with its connection closed after it, so that bytes after its
// last chunk are never read as a request of their own. A request that
// gives both Content-Length and Transfer-Encoding is read by the chunks
// (net/http drops the length), and a proxy in front that went by the
// length instead passes what follows the last chunk, here a request for
// /v1/health, as part of this one: RFC 9112 section 6.1 has the server
// close the connection after answering such a request. Before, the server
// kept it and answered the bytes after the chunks as a second request,
// which such a proxy would have handed to its next client.
//
// So for a request of HTTP/1.0 that names a Transfer-Encoding, which
// net/http ignores there and reads by its Content-Length, and which RFC
// 9112 has the server take for faulty framing and close the connection
// after: a proxy in front that read its chunks instead passed, as the
// body, a request that the server answered as one of its own.
func TestChunkedRequestEndsItsConnection(t *testing.T) {
	e := newEnv(t, false, nil)
	smuggled := "GET /v1/health HTTP/1.1\r\nHost: spool\r\n\r\n"
	batch := EncodeBatch([][]byte{[]byte("an entry")})
	for i, c := range []struct {
		name, proto string
		// body is what the server reads as the body (and what is signed),
		// chunks what follows the header.
		body, chunks string
	}{
		{"HTTP/1.1, chunked, with a Content-Length of all that follows", "HTTP/1.1",
			string(batch), fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(batch), batch) + smuggled},
		{"HTTP/1.0, chunked, with a Content-Length of the first chunk's size", "HTTP/1.0",
			fmt.Sprintf("%x\r\n", len(smuggled)), fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)},
	} {
		req, err := http.NewRequest("POST", e.srv.URL+"/v1/users/alice/entries", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(req, []byte(c.body), e.alice, time.Now()); err != nil {
			t.Fatal(err)
		}
		length := len(c.chunks)
		if c.proto == "HTTP/1.0" {
			length = len(c.body)
		}
		raw := "POST /v1/users/alice/entries " + c.proto + "\r\nHost: spool\r\nConnection: keep-alive\r\n" +
			"Authorization: " + req.Header.Get("Authorization") + "\r\n" +
			"Content-Type: " + ContentType + "\r\n" +
			fmt.Sprintf("Content-Length: %d\r\n", length) +
			"Transfer-Encoding: chunked\r\n\r\n" + c.chunks
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
		// Bounds only a server that keeps the connection; one that closes
		// it ends the reading at once.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", c.name, err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !resp.Close {
			t.Errorf("%s: %d %s, Connection %q; want the connection closed",
				c.name, resp.StatusCode, strings.TrimSpace(string(msg)), resp.Header.Get("Connection"))
		}
		if i == 0 {
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %d %s; want 200", c.name, resp.StatusCode, strings.TrimSpace(string(msg)))
			}
			if h, _ := e.store.Head(testCtx(t), "alice"); h != 1 {
				t.Errorf("%s: head %d, want 1", c.name, h)
			}
		}
		if rest, err := io.ReadAll(br); len(rest) > 0 || err != nil {
			t.Errorf("%s: after the answer the connection gave %q (%v); want it closed, the request in the body not served",
				c.name, firstLine(rest), err)
		}
	}
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\r\n")
	return s
}

// TestRefusalDoesNotWaitForTheBody: a request refused before its body is
// read (no signature, an unknown route) is answered at once, though the
// body it announced never comes, and its connection is closed after the
// answer. Before, net/http read the announced body (up to 256 KiB) before
// it wrote the answer: a client that announced one and sent nothing got
// no answer and held its connection, and the goroutine serving it, until
// the server's read timeout (10 minutes), where a request's header is
// given 30 s.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	e := newEnv(t, false, nil)
	var wg sync.WaitGroup
	for _, c := range []struct {
		head string
		body int // bytes of the body sent with the head
	}{
		{"POST /v1/users/alice/entries HTTP/1.1\r\nHost: spool\r\nContent-Type: " + ContentType + "\r\nContent-Length: 1000\r\n\r\n", 0},
		{"PUT /v1/users/alice/checkpoint?pos=1 HTTP/1.1\r\nHost: spool\r\nContent-Length: 100000\r\n\r\n", 0},
		{"POST /v1/nothing HTTP/1.1\r\nHost: spool\r\nContent-Length: 1000\r\n\r\n", 0},
		// A client that sends its body at once gets the answer and the
		// connection's end, not a reset: the body is read (and thrown
		// away) before the connection closes. Closed at once with the
		// body unread, the connection was reset, and a client still
		// writing its body got "broken pipe" instead of the answer.
		{"PUT /v1/users/alice/checkpoint?pos=1 HTTP/1.1\r\nHost: spool\r\nContent-Length: 100000\r\n\r\n", 100000},
		{"POST /v1/users/alice/entries HTTP/1.1\r\nHost: spool\r\nContent-Type: " + ContentType + "\r\nContent-Length: 1000\r\n\r\n", 1000},
	} {
		// At once: a connection whose body never comes ends after
		// refusedBodyGrace.
		wg.Go(func() {
			what := firstLine([]byte(c.head))
			if c.body > 0 {
				what += " with its body"
			} else {
				what += ", its body not sent"
			}
			conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.head+strings.Repeat("x", c.body)); err != nil {
				t.Error(err)
				return
			}
			// Bounds only a server that waits for the body.
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Errorf("%s: no answer (%v); want a refusal", what, err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 400 || !resp.Close {
				t.Errorf("%s: %s, Connection %q; want a refusal closing the connection", what, resp.Status, resp.Header.Get("Connection"))
			}
			if rest, err := io.ReadAll(br); len(rest) > 0 || err != nil {
				t.Errorf("%s: after the answer the connection gave %q (%v); want it closed", what, firstLine(rest), err)
			}
		})
	}
	wg.Wait()
	// A client that sends what it announced keeps its connection.
	resp, msg := e.send(t, rawRequest{method: "POST", path: "/v1/users/alice/entries", body: EncodeBatch([][]byte{[]byte("x")}), key: e.alice})
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Errorf("an append: %d %s, closing %v; want 200 on a connection kept", resp.StatusCode, msg, resp.Close)
	}
}

// TestHealthDoesNotWaitForTheBody: /v1/health, which anyone may ask
// without a key, announced with a body it does not send, is answered at
// once and its connection ends, as a refusal is
// (TestRefusalDoesNotWaitForTheBody). Before, net/http waited for the
// body before it wrote the answer: the stranger's connection was held,
// unanswered, for the server's read timeout (10 minutes with cspool
// server, where a header is given 30 s and an idle connection 2
// minutes). One that sends its body keeps being answered.
func TestHealthDoesNotWaitForTheBody(t *testing.T) {
	e := newEnv(t, false, nil)
	for _, c := range []struct {
		head string
		body int
	}{
		{"GET /v1/health HTTP/1.1\r\nHost: spool\r\nContent-Length: 1000\r\n\r\n", 0},
		{"GET /v1/health HTTP/1.1\r\nHost: spool\r\nContent-Length: 100000\r\n\r\n", 10},
		{"GET /v1/health HTTP/1.1\r\nHost: spool\r\nContent-Length: 1000\r\n\r\n", 1000},
	} {
		what := fmt.Sprintf("%s with %d bytes of its body", firstLine([]byte(c.head)), c.body)
		conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, c.head+strings.Repeat("x", c.body)); err != nil {
			t.Fatal(err)
		}
		// Bounds only a server that waits for the body.
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: no answer (%v); want one at once", what, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !resp.Close {
			t.Errorf("%s: %s, Connection %q; want 200 closing the connection", what, resp.Status, resp.Header.Get("Connection"))
		}
		if rest, err := io.ReadAll(br); len(rest) > 0 || err != nil {
			t.Errorf("%s: after the answer the connection gave %q (%v); want it closed", what, firstLine(rest), err)
		}
	}
}
