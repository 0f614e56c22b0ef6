package statuspage

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"cspool/internal/loginguard"
)

// pageConn is one connection to the page, speaking HTTP/1.1 by hand so the
// test knows which connection each request takes.
type pageConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialPage(t *testing.T, addr string) *pageConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pageConn{t: t, c: c, br: bufio.NewReader(c)}
}

// get sends a GET with the login auth ("" for none) and returns the
// status code, the body read and dropped.
func (pc *pageConn) get(auth string) int {
	pc.t.Helper()
	req := "GET /status.json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	if auth != "" {
		req += "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(auth)) + "\r\n"
	}
	pc.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(pc.c, req+"\r\n"); err != nil {
		pc.t.Fatalf("writing a request: %v", err)
	}
	resp, err := http.ReadResponse(pc.br, nil)
	if err != nil {
		pc.t.Fatalf("reading a response: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// closed checks that the server closes the connection within 10 s.
func (pc *pageConn) closed(what string) {
	pc.t.Helper()
	pc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(pc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		pc.t.Fatalf("%s: still open after 10 s (read %q), want it closed", what, b)
	}
}

// servePage serves a handler of cfg through its Listener, as the daemon
// does.
func servePage(t *testing.T, cfg Config) string {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: h.ConnContext, ReadHeaderTimeout: time.Hour, IdleTimeout: time.Hour}
	go srv.Serve(h.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestWaitingToLogIn: as on IMAP, the page's connections without a good
// login are bounded in number and in time. Past MaxPending the one that
// waited longest is closed; a connection whose request carried the login
// no longer counts and is never closed for it; one without a good login
// within LoginDeadline is closed, even one that keeps asking. Before, any
// number of connections were held as long as each sent a request now and
// then.
func TestWaitingToLogIn(t *testing.T) {
	t.Parallel()
	const login = "alice:s3cret"
	cfg := func(lim loginguard.Limits) Config {
		return Config{Source: &fixedSource{r: sampleReport()}, User: "alice", Password: "s3cret", Hosts: []string{"127.0.0.1"}, Login: lim}
	}
	t.Run("over the cap", func(t *testing.T) {
		addr := servePage(t, cfg(loginguard.Limits{MaxPending: 2, LoginDeadline: time.Hour}))
		first, second := dialPage(t, addr), dialPage(t, addr)
		// A request answered proves the connection accepted, in order.
		for _, pc := range []*pageConn{first, second} {
			if code := pc.get(""); code != http.StatusUnauthorized {
				t.Fatalf("no login: %d, want 401", code)
			}
		}
		browser := dialPage(t, addr)
		if code := browser.get(login); code != http.StatusOK {
			t.Fatalf("the right login: %d, want 200", code)
		}
		first.closed("the oldest without a login, a third come")
		if code := second.get(""); code != http.StatusUnauthorized {
			t.Fatalf("the second, within MaxPending: %d, want 401", code)
		}
		for range 3 {
			if code := dialPage(t, addr).get(""); code != http.StatusUnauthorized {
				t.Fatalf("a newer one: %d, want 401", code)
			}
		}
		second.closed("the second, newer ones come")
		if code := browser.get(login); code != http.StatusOK {
			t.Fatalf("the logged-in connection, after the others: %d, want 200", code)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		addr := servePage(t, cfg(loginguard.Limits{LoginDeadline: 2 * time.Second}))
		browser := dialPage(t, addr)
		if code := browser.get(login); code != http.StatusOK {
			t.Fatalf("the right login: %d, want 200", code)
		}
		idle := dialPage(t, addr)
		if code := idle.get(""); code != http.StatusUnauthorized {
			t.Fatalf("no login: %d, want 401", code)
		}
		idle.closed("a connection without a login, past the deadline")
		if code := browser.get(login); code != http.StatusOK {
			t.Fatalf("the logged-in connection, older than the deadline: %d, want 200", code)
		}
	})
}

// TestSessionsBounded: at most MaxSessions of the page's connections are
// logged in at once; a request with the right login on one more gets 503
// with Retry-After, and that connection logs in once a session has
// closed. Before, any number of connections stayed logged in, each as
// long as it asked again within 30 s.
func TestSessionsBounded(t *testing.T) {
	t.Parallel()
	const login = "alice:s3cret"
	addr := servePage(t, Config{Source: &fixedSource{r: sampleReport()}, User: "alice", Password: "s3cret",
		Hosts: []string{"127.0.0.1"}, Login: loginguard.Limits{MaxSessions: 2}})
	first, second, late := dialPage(t, addr), dialPage(t, addr), dialPage(t, addr)
	for _, pc := range []*pageConn{first, second} {
		if code := pc.get(login); code != http.StatusOK {
			t.Fatalf("a login within MaxSessions: %d, want 200", code)
		}
	}
	if code := late.get(login); code != http.StatusServiceUnavailable {
		t.Fatalf("a third connection's login with MaxSessions 2: %d, want 503", code)
	}
	if code := second.get(login); code != http.StatusOK {
		t.Fatalf("a connection logged in before the limit was met: %d, want 200", code)
	}
	first.c.Close()
	// The server sees the close at its next read; the late connection
	// asks until it does, a bounded number of times.
	for i := 0; ; i++ {
		code := late.get(login)
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable || i == 100 {
			t.Fatalf("the late connection after a session closed: %d (try %d), want 200", code, i+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
