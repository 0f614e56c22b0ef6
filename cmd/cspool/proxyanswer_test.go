package main

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/syncer"
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

// TestReadCutByProxyBacksOff: a reverse proxy passes the server's 200 to
// every read on and cuts its body short (a proxy whose buffer or temporary
// file is full does so). The sync loop took that for a spool that did not
// answer, asked /v1/health every half second whether it was back, found it
// answering, and read again at once: a read and a health check twice a
// second for as long as the proxy cut, each read fetching what the proxy
// let through, however long the outage. Something answered, so it is
// retried after the loop's backoff, doubling up to 30 s, and no health
// check is made; once the proxy passes reads whole, the device syncs.
func TestReadCutByProxyBacksOff(t *testing.T) {
	t.Parallel()
	s := newDeliverSetup(t)
	var out bytes.Buffer
	e := &env{stdin: strings.NewReader("Subject: before the cut\r\nMessage-ID: <before@example.org>\r\n\r\nx\r\n"),
		stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	if code := run(e, []string{"deliver", "--user", "alice", "--user-key", s.userPub, "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir}); code != 0 {
		t.Fatalf("deliver into the store: exit %d:\n%s", code, out.String())
	}
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
	var cutting atomic.Bool
	var reads, health atomic.Int64
	cutting.Store(true)
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !cutting.Load() {
			return nil
		}
		switch {
		case resp.Request.URL.Path == "/v1/health":
			health.Add(1)
		case resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/entries") && resp.StatusCode == http.StatusOK:
			reads.Add(1)
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(b[:len(b)/2])) // the length stays
		}
		return nil
	}
	proxy.ErrorLog = log.New(io.Discard, "", 0)
	front := httptest.NewServer(proxy)
	defer front.Close()

	ms, err := mailstore.Open(filepath.Join(s.dir, "device.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	c, err := api.NewClient(front.URL, "alice", s.userSec, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The daemon's settings (device.go, startSync) that decide retries.
	sy, err := syncer.New(syncer.Config{User: "alice", UserKey: s.userSec, SpoolKey: s.spoolSec.Public(), Source: c, Store: ms,
		Logger: slog.New(slog.DiscardHandler), Unreachable: spoolUnreachable, Permanent: api.Hint, CheckpointMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sy.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// 6 s of cut reads: the backoff allows a read at 0, 0.25, 0.75, 1.75
	// and 3.75 s; probing allowed one every half second.
	time.Sleep(6 * time.Second)
	cutting.Store(false)
	r, h := reads.Load(), health.Load()
	if h != 0 || r > 7 {
		t.Errorf("while the proxy cut every read for 6 s: %d reads and %d health checks, want at most 7 reads (the backoff) and no health check (the spool answered)", r, h)
	}
	t.Logf("while the proxy cut every read for 6 s: %d reads, %d health checks", r, h)
	if r == 0 {
		t.Fatal("the proxy cut no read")
	}
	if msg := sy.Status().LastError; !strings.Contains(msg, "cut short") {
		t.Errorf("the device's status says %q, want it to say the answer was cut short", msg)
	}
	deadline := time.Now().Add(60 * time.Second)
	for sy.Status().Position != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the device did not sync once the proxy passed reads whole: %+v", sy.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a := sy.Status().Alarm; a != "" {
		t.Fatalf("alarm after the proxy cut reads: %s", a)
	}
}
