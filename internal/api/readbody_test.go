package api

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestReadWithBodyRefused: a read (GET) signs the hash of an empty body;
// one that carries a body anyway, by its length or in chunks, is refused
// (401) before anything is read, and the same request without the body is
// taken. Before, the body was ignored and the read answered: the server
// took bytes the signature does not cover ("BODY: SHA-256 of the exact
// request body bytes", docs/API.md §2).
func TestReadWithBodyRefused(t *testing.T) {
	e := newEnv(t, false, nil)
	if _, err := e.client(t, "alice", e.alice).Append(testCtx(t), "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	send := func(t *testing.T, framing string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/users/alice/head", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := SignRequest(req, nil, e.alice, time.Now()); err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: spool\r\nAuthorization: %s\r\n%s",
			req.URL.RequestURI(), req.Header.Get("Authorization"), framing); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for name, framing := range map[string]string{
		"by its length": "Content-Length: 3\r\n\r\nabc",
		"in chunks":     "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			if resp := send(t, framing); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("a read with a body: %s, want 401", resp.Status)
			}
		})
	}
	if resp := send(t, "Content-Length: 0\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Errorf("a read with an empty body: %s, want 200", resp.Status)
	}
	if resp := send(t, "\r\n"); resp.StatusCode != http.StatusOK {
		t.Errorf("a read with no body: %s, want 200", resp.Status)
	}
}
