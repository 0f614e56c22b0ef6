package api

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestHeadLongPollAnsweredWithoutBody: a HEAD of a log's entries with a
// wait is answered with headers only, as net/http answers any HEAD, so
// the next response on the connection is read where it starts. A parked
// read wrote its chunked body after the headers of a HEAD answer: a
// client or a proxy that keeps the connection took those bytes for the
// start of the next response.
func TestHeadLongPollAnsweredWithoutBody(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxWait = time.Second })
	if _, err := e.store.Append(testCtx(t), "alice", [][]byte{[]byte("one")}); err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	if _, err := conn.Write(signedRaw(t, e, "HEAD", "/v1/users/alice/entries", "after=1&wait=1")); err != nil {
		t.Fatal(err)
	}
	head, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil {
		t.Fatalf("the HEAD long-poll: %v", err)
	}
	head.Body.Close()
	if head.StatusCode != http.StatusOK || head.Header.Get("Cspool-Head") != "1" {
		t.Fatalf("the HEAD long-poll: %d, head %q; want 200, head 1", head.StatusCode, head.Header.Get("Cspool-Head"))
	}
	if head.Close {
		return // nothing more is read on the connection
	}
	if _, err := conn.Write(signedRaw(t, e, "GET", "/v1/users/alice/head", "")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the request after the HEAD long-poll on its connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cspool-Head") != "1" {
		t.Errorf("the request after the HEAD long-poll: %d, head %q; want 200, head 1", resp.StatusCode, resp.Header.Get("Cspool-Head"))
	}
}
