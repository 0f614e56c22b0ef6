package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestMalformed(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxBatchCount = 4 })
	entries := "/v1/users/alice/entries"
	post := func(body []byte) rawRequest {
		return rawRequest{method: "POST", path: entries, body: body, key: e.alice}
	}
	tests := []struct {
		name string
		rr   rawRequest
		want int
	}{
		{"empty body", post([]byte{}), 400},
		{"truncated data", post([]byte{5, 'a', 'b'}), 400},
		{"truncated varint", post([]byte{0x80}), 400},
		{"non-minimal varint", post([]byte{0x81, 0x00, 'a'}), 400},
		{"overflowing varint", post(bytes.Repeat([]byte{0xff}, 11)), 400},
		{"huge length", post([]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 'a'}), 400},
		{"too many entries", post(EncodeBatch([][]byte{{1}, {2}, {3}, {4}, {5}})), 400},
		{"wrong content type", rawRequest{method: "POST", path: entries, body: EncodeBatch([][]byte{{1}}), key: e.alice,
			tamper: func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }}, 415},
		{"after not a number", rawRequest{method: "GET", path: entries, query: "after=x", key: e.alice}, 400},
		{"negative after", rawRequest{method: "GET", path: entries, query: "after=-1", key: e.alice}, 400},
		{"max_count zero", rawRequest{method: "GET", path: entries, query: "max_count=0", key: e.alice}, 400},
		{"bad wait", rawRequest{method: "GET", path: entries, query: "wait=1.5", key: e.alice}, 400},
		// Over maxQueryBytes: refused before it is parsed, whoever signed
		// it (served, its parameters ignored, before).
		{"query too long", rawRequest{method: "GET", path: entries, query: longQuery(maxQueryBytes + 1), key: e.alice}, 400},
		{"bad user name", rawRequest{method: "GET", path: "/v1/users/.hidden/entries", key: e.alice}, 400},
		{"unknown route", rawRequest{method: "GET", path: "/v1/nothing", key: e.alice}, 404},
		{"unknown version", rawRequest{method: "GET", path: "/v2/users/alice/entries", key: e.alice}, 404},
		{"unknown method", rawRequest{method: "DELETE", path: entries, key: e.alice}, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, msg := e.send(t, tc.rr)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, msg, tc.want)
			}
			// The server keeps serving.
			if _, err := e.client(t, "alice", e.alice).Head(testCtx(t)); err != nil {
				t.Errorf("after the bad request: %v", err)
			}
		})
	}
	if h, _ := e.store.Head(testCtx(t), "alice"); h != 0 {
		t.Errorf("bad requests appended: head %d, want 0", h)
	}
}

func TestOversize(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.MaxBody = 1000 })
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	if _, err := c.Append(ctx, "alice", [][]byte{make([]byte, 990)}); err != nil {
		t.Fatalf("body under the limit: %v", err)
	}
	_, err := c.Append(ctx, "alice", [][]byte{make([]byte, 1000)})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 413 || IsTemporary(err) {
		t.Errorf("body over the limit: %v; want permanent 413", err)
	}
	// Without Content-Length (chunked), the limit applies while reading.
	body := EncodeBatch([][]byte{make([]byte, 5000)})
	resp, msg := e.send(t, rawRequest{method: "POST", path: "/v1/users/alice/entries", body: body, key: e.alice,
		tamper: func(r *http.Request) {
			r.ContentLength = -1
			r.Body = readerOnly{bytes.NewReader(body)}
		}})
	if resp.StatusCode != 413 {
		t.Errorf("chunked body over the limit: %d %s, want 413", resp.StatusCode, msg)
	}
	if h, _ := c.Head(ctx); h != 1 {
		t.Errorf("head %d after refused appends, want 1", h)
	}
}

type readerOnly struct{ r *bytes.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r readerOnly) Close() error               { return nil }

func TestUnavailable(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.RetryAfter = 7 * time.Second })
	e.store.Close()
	resp, msg := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/entries", key: e.alice})
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("closed store: %d %q, Retry-After %q; want 503, 7", resp.StatusCode, msg, resp.Header.Get("Retry-After"))
	}
	if strings.Contains(msg, "spool:") {
		t.Errorf("error text %q leaks store detail", msg)
	}
}

// TestPercentEncodedPath: a path with a percent-encoded byte is refused
// (400, the API's JSON error), though its signature, over the decoded
// path, verifies: a name is never percent-encoded (docs/API.md §1), and a
// cache, a proxy or a log could take al%69ce for another user than alice.
func TestPercentEncodedPath(t *testing.T) {
	e := newEnv(t, false, nil)
	for _, path := range []string{
		"/v1/users/al%69ce/entries",
		"/v1/users/%61lice/head",
		"/v1/users/alice/%65ntries",
		"/v1/users/alice/checkpoint%2F",
	} {
		resp, msg := e.send(t, rawRequest{method: "GET", path: path, key: e.alice})
		if resp.StatusCode != 400 || !strings.Contains(msg, "percent-encoded") {
			t.Errorf("GET %s: status %d (%s), want 400 naming the percent-encoding", path, resp.StatusCode, msg)
		}
	}
	body := EncodeBatch([][]byte{{1}})
	resp, msg := e.send(t, rawRequest{method: "POST", path: "/v1/users/al%69ce/entries", body: body, key: e.alice})
	if resp.StatusCode != 400 {
		t.Errorf("POST: status %d (%s), want 400", resp.StatusCode, msg)
	}
	if h, _ := e.store.Head(testCtx(t), "alice"); h != 0 {
		t.Errorf("a percent-encoded append appended: head %d, want 0", h)
	}
	// The plain path still serves.
	if resp, msg := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/head", key: e.alice}); resp.StatusCode != 200 {
		t.Errorf("plain path: %d (%s)", resp.StatusCode, msg)
	}
}

// longQuery is a query of distinct parameters, at least n bytes long in
// its canonical form.
func longQuery(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "&p%d=%d", i, i)
	}
	return b.String()[1:]
}
