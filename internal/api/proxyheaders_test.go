package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"cspool/internal/spool"
)

// TestNonceHeaderCopies: a proxy that passes the answer's headers on
// twice (nginx with the upstream's header and an add_header of its own),
// or merges the copies of Cspool-Nonce into one list, still passes the
// answer to this request, which the client takes; one with a second,
// other nonce mixed answers up and is refused as before (docs/API.md §2,
// "The answer names its request"). A device took the copies for an
// answer to another request and read again twice a second for as long as
// the proxy sent them.
func TestNonceHeaderCopies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(h http.Header)
		taken bool
	}{
		{"every header twice", func(h http.Header) {
			for k, v := range h {
				h[k] = append(v, v...)
			}
		}, true},
		{"nonce merged", func(h http.Header) {
			h.Set(HeaderNonce, h.Get(HeaderNonce)+", "+h.Get(HeaderNonce))
		}, true},
		{"another nonce too", func(h http.Header) {
			h.Add(HeaderNonce, strings.Repeat("ab", nonceSize))
		}, false},
		{"another nonce merged", func(h http.Header) {
			h.Set(HeaderNonce, h.Get(HeaderNonce)+", "+strings.Repeat("ab", nonceSize))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			head := e.deliver(t, 2)
			u, err := url.Parse(e.srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := httputil.NewSingleHostReverseProxy(u)
			proxy.ModifyResponse = func(resp *http.Response) error {
				if resp.Header.Get(HeaderNonce) != "" {
					tc.edit(resp.Header)
				}
				return nil
			}
			front := httptest.NewServer(proxy)
			t.Cleanup(front.Close)
			c, err := NewClient(front.URL, "alice", e.alice, &http.Client{})
			if err != nil {
				t.Fatal(err)
			}
			entries, h, err := c.Read(testCtx(t), 0, 0, 0, 0)
			switch {
			case tc.taken && (err != nil || h != head || len(entries) != 2):
				t.Fatalf("read through a proxy that copies the answer's headers: %d entries, head %d, %v; want the 2 entries and head %d", len(entries), h, err, head)
			case !tc.taken && !errors.Is(err, ErrTransport):
				t.Fatalf("read answered with another request's nonce too: %d entries, %v; want a failed transfer (ErrTransport)", len(entries), err)
			}
		})
	}
}

// TestContentTypeAsAProxyPassesIt: a proxy that adds a charset to the
// answer's Content-Type (nginx's charset with charset_types *) or writes
// its name in capitals passes the same media type on (RFC 9110 section
// 8.3.1): reads and a checkpoint's download are taken. A device took either
// for a protocol error, told its user to check the server's version, and
// synced nothing for 10 minutes at a time. One without Cspool-Head, or of
// another type, is refused with a hint that names the proxy.
func TestContentTypeAsAProxyPassesIt(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(h http.Header)
		taken bool
	}{
		{"charset added", func(h http.Header) { h.Set("Content-Type", h.Get("Content-Type")+"; charset=utf-8") }, true},
		{"capitals", func(h http.Header) { h.Set("Content-Type", strings.ToUpper(h.Get("Content-Type"))) }, true},
		{"another type", func(h http.Header) { h.Set("Content-Type", "text/html") }, false},
		{"no Cspool-Head", func(h http.Header) { h.Del("Cspool-Head"); h.Del("Cspool-Checkpoint-Pos") }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			ctx := testCtx(t)
			own := e.client(t, "alice", e.alice)
			appendNumbered(t, own, 4)
			if _, err := own.PutCheckpoint(ctx, spool.Checkpoint{Pos: 2, Data: []byte("cp")}, nil); err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(e.srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := httputil.NewSingleHostReverseProxy(u)
			proxy.ModifyResponse = func(resp *http.Response) error {
				if resp.StatusCode == http.StatusOK && resp.Request.Method == http.MethodGet {
					tc.edit(resp.Header)
				}
				return nil
			}
			front := httptest.NewServer(proxy)
			t.Cleanup(front.Close)
			c, err := NewClient(front.URL, "alice", e.alice, &http.Client{})
			if err != nil {
				t.Fatal(err)
			}
			lr, rerr := c.ReadLog(ctx, 2, 0, 0, 0)
			cp, cerr := c.Checkpoint(ctx)
			if tc.taken {
				if rerr != nil || lr.Head != 4 || len(lr.Entries) != 2 {
					t.Errorf("read: %d entries, head %d, %v; want 2 entries and head 4", len(lr.Entries), lr.Head, rerr)
				}
				if cerr != nil || cp.Pos != 2 || string(cp.Data) != "cp" {
					t.Errorf("checkpoint: pos %d, %q, %v; want pos 2, \"cp\"", cp.Pos, cp.Data, cerr)
				}
				return
			}
			for what, err := range map[string]error{"read": rerr, "checkpoint": cerr} {
				if !errors.Is(err, ErrProtocol) || !strings.Contains(Hint(err), "reverse proxy") {
					t.Errorf("%s: %v, hint %q; want a protocol error whose hint names a proxy", what, err, Hint(err))
				}
			}
		})
	}
}
