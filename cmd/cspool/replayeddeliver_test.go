package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/spool/sqlitestore"
)

// retryOnRefusal is a balancer in front of one server process that sends
// a request the server answered 503 or 507 once more, the same bytes, and
// gives the client the second answer (HAProxy's retry-on, or nginx's
// proxy_next_upstream with the server listed twice).
type retryOnRefusal struct {
	upstream atomic.Pointer[string]
	statuses chan [2]int // the answers to a request sent twice
}

func (b *retryOnRefusal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	send := func() (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, *b.upstream.Load()+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		return resp, data, err
	}
	resp, data, err := send()
	if err == nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusInsufficientStorage) {
		first := resp.StatusCode
		if resp, data, err = send(); err == nil {
			b.statuses <- [2]int{first, resp.StatusCode}
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(data)
}

// TestDeliverRefusedThenReplayed: a delivery refused for the user's quota
// (507, temporary: the mail transfer agent keeps the message) and sent
// again by a balancer to the same server process, which refuses the copy
// as a replay (401 "replayed": it appended nothing and keeps no record of
// it, docs/API.md §4). cspool deliver took that 401 for a key the server
// refuses and exited 77 (EX_NOPERM), so the mail transfer agent bounced a
// message that was only deferred; it exits 75 now, and the message is
// delivered once when the agent tries again after the user made room.
func TestDeliverRefusedThenReplayed(t *testing.T) {
	t.Parallel()
	s := newDeliverSetup(t)
	st, err := sqlitestore.Open(s.spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	users := oneUser{"alice", s.userSec.Public()}
	message := "Subject: deferred, not bounced\r\nMessage-ID: <quota@example.org>\r\n\r\n" + strings.Repeat("x", 4000) + "\r\n"
	deliver := func(t *testing.T, url string) (int, string) {
		var out bytes.Buffer
		e := &env{stdin: strings.NewReader(message), stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
		code := run(e, []string{"deliver", "--user", "alice", "--user-key", s.userPub, "--spool-key", s.spoolSecKey,
			"--spool-server", url, "--timeout", "30s"})
		return code, out.String()
	}

	full := api.NewServer(api.Config{Store: st, Users: users, SpoolKey: s.spoolSec.Public(), Quota: 2000})
	defer full.Shutdown()
	up := httptest.NewServer(full)
	defer up.Close()
	lb := &retryOnRefusal{statuses: make(chan [2]int, 4)}
	lb.upstream.Store(&up.URL)
	front := httptest.NewServer(lb)
	defer front.Close()
	code, out := deliver(t, front.URL)
	// A new server refuses the first request for its timestamp (503, the
	// restart rule of docs/API.md §2), and that refusal is sent twice too.
	var sent [][2]int
	for len(lb.statuses) > 0 {
		sent = append(sent, <-lb.statuses)
	}
	if len(sent) == 0 || sent[len(sent)-1] != [2]int{http.StatusInsufficientStorage, http.StatusUnauthorized} {
		t.Fatalf("the server answered %v to the copies, want 507 then 401 last; deliver exited %d:\n%s", sent, code, out)
	}
	if code != exTempFail {
		t.Fatalf("a delivery refused for the quota, then its copy as a replay: exit status %d, want %d (temporary); output:\n%s", code, exTempFail, out)
	}

	// The user made room (here: a larger quota); the agent tries again.
	roomy := api.NewServer(api.Config{Store: st, Users: users, SpoolKey: s.spoolSec.Public(), Quota: 1 << 20})
	defer roomy.Shutdown()
	up2 := httptest.NewServer(roomy)
	defer up2.Close()
	lb.upstream.Store(&up2.URL)
	if code, out := deliver(t, front.URL); code != 0 {
		t.Fatalf("the agent's next try: exit status %d, want 0; output:\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h, err := st.Head(ctx, "alice"); err != nil || h != 1 {
		t.Fatalf("head %d (%v), want 1: the message delivered once", h, err)
	}
}
