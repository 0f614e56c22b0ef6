package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestNotTheAPI: what answers at the spool server URL is not a cspool
// server. These used to be transport failures, temporary: cspool deliver
// exited 75 and the MTA retried for days, where 76 (a permanent protocol
// error) says to fix the URL (docs/DELIVERY.md, exit statuses).
func TestNotTheAPI(t *testing.T) {
	t.Parallel()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotImplemented) // python3 -m http.server's answer to POST
		w.Write([]byte("<html>Unsupported method</html>"))
	}))
	defer web.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				c.Read(buf)
				c.Write([]byte("+OK POP3 server ready\r\n"))
			}()
		}
	}()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	// A status page's login: 401, text/plain, a Basic challenge.
	login := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="status"`)
		http.Error(w, "log in", http.StatusUnauthorized)
	}))
	defer login.Close()
	key := genKey(t)
	for _, c := range []struct{ name, url, hint string }{
		{"another web server", web.URL, "check the spool server URL"},
		{"not HTTP at all", "http://" + ln.Addr().String(), "check the spool server URL"},
		{"https:// for plain HTTP", strings.Replace(plain.URL, "http://", "https://", 1), "write http://"},
		{"a page that wants a login", login.URL, "check the spool server URL"},
		{"a page that is not there", plain.URL, "check the spool server URL"},
	} {
		cl, err := NewClient(c.url, "alice", key, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = cl.Deliveries().Append(ctx, "alice", [][]byte{[]byte("x")})
		cancel()
		if !errors.Is(err, ErrProtocol) || IsTemporary(err) {
			t.Errorf("%s: %v, want a permanent protocol error", c.name, err)
			continue
		}
		if h := Hint(err); !strings.Contains(h, c.hint) {
			t.Errorf("%s: hint %q, want it to say %q", c.name, h, c.hint)
		}
	}
}

// TestSpoolKeyAsUserKeyHint: a device run with the spool's secret key as
// the user's got "the spool server knows this key as another user's:
// check the user name", which sent the user after the name.
func TestSpoolKeyAsUserKeyHint(t *testing.T) {
	err := &Error{Op: "reading", Kind: ErrForbidden, Status: http.StatusForbidden, Msg: "the spool key may only append entries"}
	if h := Hint(err); !strings.Contains(h, "this key is the spool's") {
		t.Errorf("hint %q", h)
	}
	err.Msg = "this key belongs to another user"
	if h := Hint(err); !strings.Contains(h, "another user's") {
		t.Errorf("hint for another user's key %q", h)
	}
}
