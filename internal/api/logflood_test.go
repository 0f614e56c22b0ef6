package api

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStrangerCannotFloodTheLog: requests anyone can send without a key,
// as fast as they like, leave a bounded trace in the server's log: unknown
// routes and methods (404), percent-encoded paths, paths that are not clean
// (`..`, `//`, the `*` of `GET *`), user names that are no names, queries
// that name a parameter twice (400), all refused before any signature is
// checked, and /v1/health, which needs none. Their log lines
// are thinned out to refusalLogsPerSecond a second each, as the other
// refusals before the signature are, and no line carries more than
// maxLogged bytes of the request's method or path. Before, each was logged
// whole, every time: a 404 asked with a path of a megabyte wrote two
// megabytes of log, and one connection wrote 300 MB of log in 3 s. A path
// that is not clean was answered by net/http's mux itself, a 307 redirect
// to the clean path (a plain 400 for `*`), logged every time and never
// slowed.
//
// The address's refusal rate is off here, so that only the thinning of the
// log lines bounds them.
func TestStrangerCannotFloodTheLog(t *testing.T) {
	var out lockedBuffer
	e := newEnv(t, false, func(c *Config) {
		c.RefusalRate = -1
		c.Logger = slog.New(slog.NewTextHandler(&out, nil))
	})
	long := strings.Repeat("x", 16<<10)
	name := strings.Repeat("x", (maxQueryBytes-8)/2) // twice, within the bound on a query
	// A header the server parses (the key is real, the time now) over a
	// request whose query it then refuses, before the signature.
	signed, err := http.NewRequest("GET", e.srv.URL+"/v1/users/alice/entries", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := SignRequest(signed, nil, e.stranger, time.Now()); err != nil {
		t.Fatal(err)
	}
	kinds := []struct {
		name, method, path string
		auth               bool
		n, status          int
	}{
		{"unknown path", "GET", "/" + long, false, 150, http.StatusNotFound},
		{"unknown method", "X" + long, "/v1/users/alice/entries", false, 150, http.StatusNotFound},
		{"percent-encoded path", "GET", "/v1/users/%61" + long + "/entries", false, 150, http.StatusBadRequest},
		{"no user name", "GET", "/v1/users/" + long + "/head", false, 150, http.StatusBadRequest},
		{"parameter twice", "GET", "/v1/users/alice/entries?" + name + "=1&" + name + "=2", true, 150, http.StatusBadRequest},
		{"query too long", "GET", "/v1/users/alice/entries?" + long + "=1", true, 150, http.StatusBadRequest},
		{"unclean path", "GET", "/v1/users/alice/../" + long + "/entries", false, 150, http.StatusBadRequest},
		{"doubled slash", "GET", "/v1//health", false, 150, http.StatusBadRequest},
		{"no path", "GET", "*", false, 150, http.StatusBadRequest},
		{"health", "GET", "/v1/health", false, 3000, http.StatusOK},
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: len(kinds)},
		// A redirect is an answer of its own, not one to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	defer hc.CloseIdleConnections()
	start := time.Now()
	var wg sync.WaitGroup
	var sent int
	for _, k := range kinds {
		sent += k.n
		wg.Go(func() {
			for i := range k.n {
				req, err := http.NewRequest(k.method, e.srv.URL, nil)
				if err != nil {
					t.Error(err)
					return
				}
				req.URL.Opaque = strings.SplitN(k.path, "?", 2)[0]
				if q := strings.SplitN(k.path, "?", 2); len(q) == 2 {
					req.URL.RawQuery = q[1]
				}
				if k.auth {
					req.Header.Set("Authorization", signed.Header.Get("Authorization"))
				}
				resp, err := hc.Do(req)
				if err != nil {
					t.Errorf("%s, request %d: %v", k.name, i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != k.status {
					t.Errorf("%s, request %d: status %d, want %d", k.name, i, resp.StatusCode, k.status)
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if t.Failed() {
		return
	}
	var lines, longest int
	var left int
	for l := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(l, `msg="http request"`) {
			continue
		}
		lines++
		longest = max(longest, len(l))
		for _, attr := range []string{"similar_refusals_not_logged", "similar_requests_not_logged"} {
			var n int
			if i := strings.Index(l, " "+attr+"="); i >= 0 {
				fmt.Sscanf(l[i+len(attr)+2:], "%d", &n)
				left += n
			}
		}
	}
	// Two samplers (refusals, and answers without a signature), each
	// refusalLogsPerSecond lines in each second the flood touched.
	bound := 2 * refusalLogsPerSecond * int(math.Ceil(took.Seconds())+1)
	t.Logf("%d requests in %v: %d log lines (bound %d), %d said left out, the longest %d bytes", sent, took.Round(time.Millisecond), lines, bound, left, longest)
	if lines > bound {
		t.Errorf("%d requests without a signature logged %d lines in %v; want at most %d", sent, lines, took.Round(time.Millisecond), bound)
	}
	if maxLine := 4 * maxLogged; longest > maxLine {
		t.Errorf("a request line of the flood was logged in %d bytes; want at most %d", longest, maxLine)
	}
	if lines+left > sent {
		t.Errorf("%d lines logged and %d said left out, for %d requests", lines, left, sent)
	}
}

// TestFailedHandshakesThinned: connections to the server's own TLS
// (ListenerTLS) that fail their handshake, each on a connection of its own
// (plain HTTP to the TLS port, and bytes that are no TLS at all), are
// logged at most refusalLogsPerSecond a second, the next line saying how
// many were left out. Before, every one was: anyone who reached the port
// wrote 6,500 lines a second to the log from one client on loopback.
func TestFailedHandshakesThinned(t *testing.T) {
	var out lockedBuffer
	e := newEnv(t, false, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&out, nil))
	})
	certs := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate
	t.Cleanup(certs.Close)
	srv := httptest.NewUnstartedServer(e.api)
	srv.Listener = e.api.ListenerTLS(srv.Listener, certs.TLS)
	srv.Start()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	const n = 600
	start := time.Now()
	for i := range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hello := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
		if i%2 == 1 {
			hello = "\x16\x03\x01\x00\x05hello"
		}
		if _, err := io.WriteString(conn, hello); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, conn) // until the server closes it
		conn.Close()
	}
	took := time.Since(start)
	// Each failed handshake is logged (or counted) before its
	// connection is closed.
	var lines, left int
	for l := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
		if !strings.Contains(l, `msg="TLS handshake failed"`) {
			continue
		}
		lines++
		if i := strings.Index(l, " similar_not_logged="); i >= 0 {
			var k int
			fmt.Sscanf(l[i+len(" similar_not_logged="):], "%d", &k)
			left += k
		}
	}
	bound := refusalLogsPerSecond * int(math.Ceil(took.Seconds())+1)
	t.Logf("%d failed handshakes in %v: %d lines (bound %d), %d said left out", n, took.Round(time.Millisecond), lines, bound, left)
	if lines == 0 || lines > bound {
		t.Errorf("%d failed handshakes logged %d lines in %v; want 1 to %d", n, lines, took.Round(time.Millisecond), bound)
	}
	if lines+left > n {
		t.Errorf("%d lines logged and %d said left out, for %d failed handshakes", lines, left, n)
	}
}
