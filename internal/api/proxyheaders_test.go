package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

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

// TestLongPollEndedByProxyNamed: a reverse proxy whose read timeout is
// shorter than a device's long poll answers an idle device's every read
// 504 when it runs out. The error, which the device's status and log
// show, said only "temporarily unavailable (HTTP 504)"; it now names the
// proxy's timeout and what to raise. A quick 502 (the spool server down
// behind the proxy) is not taken for it.
func TestLongPollEndedByProxyNamed(t *testing.T) {
	e := newEnv(t, false, nil)
	head := e.deliver(t, 1)
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("wait") {
		case "":
			proxy.ServeHTTP(w, r)
		case "10":
			time.Sleep(1500 * time.Millisecond) // the proxy's read timeout
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusGatewayTimeout)
			w.Write([]byte("<html><body>504 Gateway Time-out</body></html>\n"))
		default:
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			w.Write([]byte("<html><body>502 Bad Gateway</body></html>\n"))
		}
	}))
	t.Cleanup(front.Close)
	c, err := NewClient(front.URL, "alice", e.alice, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Read(testCtx(t), head, 0, 0, 10*time.Second)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "read timeout is shorter than the long poll") {
		t.Errorf("a long poll the proxy ended after 1.5 s with 504: %v; want a temporary error naming the proxy's read timeout", err)
	}
	_, _, err = c.Read(testCtx(t), head, 0, 0, 20*time.Second)
	if !errors.Is(err, ErrUnavailable) || strings.Contains(err.Error(), "read timeout") {
		t.Errorf("a long poll the proxy answered 502 at once: %v; want a temporary error that does not blame a read timeout", err)
	}
}

// TestRetryAfterAsAProxySendsIt: a proxy's own 503 or 429 (maintenance,
// rate limiting) with a Retry-After the API never sends. The client takes
// delay-seconds only, at most 2 minutes (maxRetryAfter); anything else is
// no advice, and the sync loop waits its own backoff (docs/API.md §7,
// "Behind a proxy"): neither a wait of years nor a retry at once.
func TestRetryAfterAsAProxySendsIt(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  time.Duration
	}{
		{"7", 7 * time.Second},
		{"", 0},
		{"0", 0},
		{"-1", 0},
		{"Wed, 21 Oct 2015 07:28:00 GMT", 0},
		{"1e9", 0},
		{"5, 5", 0},
		{"3600", maxRetryAfter},
		{"4000000000", maxRetryAfter},
		{"99999999999999999999", 0},
	} {
		for _, status := range []int{http.StatusServiceUnavailable, http.StatusTooManyRequests} {
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.value != "" {
					w.Header().Set("Retry-After", tc.value)
				}
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(status)
				w.Write([]byte("<html><body>try later</body></html>\n"))
			}))
			c, err := NewClient(front.URL, "alice", genKey(t), &http.Client{})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Read(testCtx(t), 0, 0, 0, 0)
			front.Close()
			var e *Error
			if !errors.As(err, &e) || !IsTemporary(err) || e.RetryAfter != tc.want {
				t.Errorf("%d with Retry-After %q: %v; want a temporary error, retry after %v", status, tc.value, err, tc.want)
			}
		}
	}
}
