package api

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestChangedBodySpendsTheNonce pins docs/API.md §2: a copy of a signed
// append that passed the nonce check and was then refused (its body
// changed, or its Content-Type) has spent the nonce, and the request it
// copied, sent after it, is refused as replayed; nothing is appended.
func TestChangedBodySpendsTheNonce(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	send := func(raw []byte) *http.Response {
		t.Helper()
		c, err := net.Dial("tcp", e.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	body := EncodeBatch([][]byte{[]byte("mine")})
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		status int
	}{
		{"body changed", func(raw []byte) []byte { return bytes.Replace(raw, []byte("mine"), []byte("MINE"), 1) }, http.StatusUnauthorized},
		{"Content-Type changed", func(raw []byte) []byte {
			return bytes.Replace(raw, []byte(ContentType), []byte("application/octet-stream"), 1)
		}, http.StatusUnsupportedMediaType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest("POST", e.srv.URL+"/v1/users/alice/entries?if_head=0", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", ContentType)
			req.Close = true
			if err := SignRequest(req, body, e.alice, time.Now()); err != nil {
				t.Fatal(err)
			}
			var raw bytes.Buffer
			if err := req.Write(&raw); err != nil {
				t.Fatal(err)
			}
			if resp := send(tc.change(raw.Bytes())); resp.StatusCode != tc.status {
				t.Fatalf("the changed copy: %s, want %d", resp.Status, tc.status)
			}
			resp := send(raw.Bytes())
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(HeaderReplayed) != "1" {
				t.Fatalf("the request after its changed copy: %s, %s %q; want 401 replayed", resp.Status, HeaderReplayed, resp.Header.Get(HeaderReplayed))
			}
		})
	}
	if h, err := e.store.Head(ctx, "alice"); err != nil || h != 0 {
		t.Fatalf("head %d, %v; want nothing appended", h, err)
	}
}
