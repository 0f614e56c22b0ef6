package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/spool/sqlitestore"
)

// TestDeliverAnswerCutByProxy: a reverse proxy passes the server's 200 to
// a delivery on and cuts its body short (the connection closed before the
// length it announced, or the status passed on with no body at all). The
// message is in the log; cspool deliver took the unreadable answer for a
// protocol error and exited 76 (EX_PROTOCOL), which a mail transfer agent
// bounces (Postfix: 5.5.0): the sender was told of a failure for a
// message the user has. Such an answer is lost, as one cut before its
// headers: exit 75, with a hint that the message may be delivered twice
// (docs/DELIVERY.md, "Exit status"; docs/API.md, "Behind a proxy").
func TestDeliverAnswerCutByProxy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cut  func(resp *http.Response)
	}{
		{"cut", func(resp *http.Response) {
			b, _ := io.ReadAll(resp.Body)
			resp.Body = io.NopCloser(bytes.NewReader(b[:len(b)/2])) // the length stays
		}},
		{"no body", func(resp *http.Response) {
			resp.Body, resp.ContentLength = http.NoBody, 0
			resp.Header.Set("Content-Length", "0")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newDeliverSetup(t)
			st, err := sqlitestore.Open(s.spoolDir, sqlitestore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			srv := api.NewServer(api.Config{Store: st, Users: oneUser{"alice", s.userSec.Public()}, SpoolKey: s.spoolSec.Public()})
			defer srv.Shutdown()
			up := httptest.NewServer(srv)
			defer up.Close()
			u, err := url.Parse(up.URL)
			if err != nil {
				t.Fatal(err)
			}
			proxy := httputil.NewSingleHostReverseProxy(u)
			proxy.ModifyResponse = func(resp *http.Response) error {
				if resp.Request.Method == http.MethodPost && resp.StatusCode == http.StatusOK {
					tc.cut(resp)
				}
				return nil
			}
			proxy.ErrorLog = log.New(io.Discard, "", 0)
			front := httptest.NewServer(proxy)
			defer front.Close()

			var out bytes.Buffer
			e := &env{stdin: strings.NewReader("Subject: cut short\r\nMessage-ID: <cut@example.org>\r\n\r\nx\r\n"),
				stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
			code := run(e, []string{"deliver", "--user", "alice", "--user-key", s.userPub, "--spool-key", s.spoolSecKey,
				"--spool-server", front.URL, "--timeout", "30s"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if h, err := st.Head(ctx, "alice"); err != nil || h != 1 {
				t.Fatalf("head %d (%v), want 1: the server appended the delivery before its answer was cut", h, err)
			}
			if code != exTempFail {
				t.Fatalf("a delivery in the log whose answer a proxy cut short: exit status %d, want %d (an answer lost: try again, never a bounce); output:\n%s", code, exTempFail, out.String())
			}
			if !strings.Contains(out.String(), "may be delivered twice") {
				t.Errorf("the output does not say the message may be in the log already:\n%s", out.String())
			}
		})
	}
}
