package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
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
