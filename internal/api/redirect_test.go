package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRedirectNotFollowed: a spool that answers with a redirect, to
// another host or to itself in a loop, gets no request followed there:
// the read fails at once with ErrProtocol naming the spool's URL, the
// status and where it pointed, and Hint says what to do. Before, the
// client followed up to 10 redirects, sent its reads (and an append's
// body, after a 307) to whatever host the spool named, and a loop ended
// as a transport failure naming neither the spool nor the problem
// ("Get \"/v1/users/...\": stopped after 10 redirects"), retried as an
// unreachable spool.
func TestRedirectNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		http.Error(w, "not the spool", http.StatusNotFound)
	}))
	defer other.Close()
	for _, tc := range []struct {
		name     string
		status   int
		location func(r *http.Request) string
	}{
		{"to another host", http.StatusTemporaryRedirect, func(r *http.Request) string { return other.URL + r.URL.RequestURI() }},
		{"in a loop", http.StatusFound, func(r *http.Request) string { return r.URL.RequestURI() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				http.Redirect(w, r, tc.location(r), tc.status)
			}))
			defer srv.Close()
			c, err := NewClient(srv.URL, "alice", genKey(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.ReadLog(testCtx(t), 0, 1, 0, 0)
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "the spool at "+srv.URL+" answered HTTP") {
				t.Fatalf("ReadLog: %v; want ErrProtocol naming the spool at %s and its redirect", err, srv.URL)
			}
			if _, err := c.Append(testCtx(t), "alice", [][]byte{[]byte("sealed")}); !errors.Is(err, ErrProtocol) {
				t.Fatalf("Append: %v; want ErrProtocol", err)
			}
			if h := Hint(err); !strings.Contains(h, "never redirected") {
				t.Errorf("Hint: %q; want it to say the API is never redirected", h)
			}
			if n, m := asked.Load(), elsewhere.Load(); n != 2 || m != 0 {
				t.Errorf("the spool was asked %d times and the other host %d, want 2 (a read and an append) and 0", n, m)
			}
		})
	}
}
