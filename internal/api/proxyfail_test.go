package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/syncer"
)

// failingProxy is a reverse proxy in front of the spool server, as an
// operator puts nginx or a load balancer there. Armed, it forwards the
// next conditional append (if_head) and, once the server has answered
// 200 (the entry is in the log), answers the device 504 (gateway timeout)
// or closes the connection without an answer, as a proxy whose upstream
// was slow or a cut connection does.
type failingProxy struct {
	srv    *httptest.Server
	armed  atomic.Int32 // 0, or what to do to the next conditional append
	failed chan int     // the status the server gave an append the proxy failed
}

const (
	proxyAnswer504 = 1
	proxyCut       = 2
	// A forged 503 refusing the request's timestamp (Cspool-Earliest-Ts):
	// the client signs it again and sends it once more, and the server
	// answers that copy 409.
	proxyForged503 = 3
	// A forged 409 naming the head the append made.
	proxyForged409 = 4
)

// proxyFail is how ModifyResponse tells ErrorHandler what to do.
type proxyFail struct {
	mode int32
	head uint64 // the head the append made
}

func (f *proxyFail) Error() string { return fmt.Sprintf("failing the answer (mode %d)", f.mode) }

func newFailingProxy(t *testing.T, upstream string) *failingProxy {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &failingProxy{failed: make(chan int, 8)}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.Method != http.MethodPost || r.URL.Query().Get("if_head") == "" {
			return nil
		}
		mode := p.armed.Swap(0)
		if mode == 0 {
			return nil
		}
		p.failed <- resp.StatusCode
		h, _ := strconv.ParseUint(r.URL.Query().Get("if_head"), 10, 64)
		return &proxyFail{mode: mode, head: h + 1}
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		var f *proxyFail
		if !errors.As(err, &f) {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		switch f.mode {
		case proxyCut:
			conn, _, herr := http.NewResponseController(w).Hijack()
			if herr == nil {
				conn.Close()
				return
			}
		case proxyForged503:
			w.Header().Set(HeaderEarliestTS, strconv.FormatInt(time.Now().Unix(), 10))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":"request signed before the server started"}`))
			return
		case proxyForged409:
			w.Header().Set("Cspool-Head", strconv.FormatUint(f.head, 10))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			w.Write([]byte(`{"error":"head moved"}`))
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusGatewayTimeout)
		w.Write([]byte("<html><body>504 Gateway Time-out</body></html>\n"))
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(p.srv.Close)
	return p
}

// startDeviceAt is startDevice with the spool reached at base.
func (e *env) startDeviceAt(t *testing.T, base string) (*device, *mailstore.Store) {
	t.Helper()
	ms, err := mailstore.Open(filepath.Join(e.dir, "device.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	c, err := NewClient(base, "alice", e.alice, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := syncer.New(syncer.Config{User: "alice", UserKey: e.alice, SpoolKey: e.spoolK.Public(),
		Source: c, Store: ms, Logger: testLogger(t),
		CheckpointMin: -1, Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &device{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- s.Run(ctx) }()
	t.Cleanup(d.stop)
	return d, ms
}

// TestProxyFailsAfterAppend: a device reaches the spool through a reverse
// proxy, which forwards its append, lets the server commit it, and then
// answers the device 504, or cuts the connection. The device has no answer;
// the change is in the log. It must be there once, applied once, with no
// replay alarm, and so too when the proxy forges a 409, or a 503 refusing
// the request's timestamp (the client's second copy then gets the server's
// 409), and the device's next changes must go through (docs/API.md §4;
// docs/SECURITY.md section 10).
func TestProxyFailsAfterAppend(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode int32
	}{{"504", proxyAnswer504}, {"cut", proxyCut}, {"forged503", proxyForged503}, {"forged409", proxyForged409}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, false, nil)
			p := newFailingProxy(t, e.srv.URL)
			ctx := testCtx(t)
			head := e.deliver(t, 1)
			d, ms := e.startDeviceAt(t, p.srv.URL)
			waitFor(t, "the delivery applied", func() bool { return d.s.Status().Position == head })

			draft := func(i int) *command.Command {
				return &command.Command{Kind: command.Append, Mailbox: "Drafts", Date: 1,
					Body: fmt.Appendf(nil, "Subject: draft %d\r\nMessage-ID: <%d@proxyfail>\r\n\r\nx\r\n", i, i)}
			}
			p.armed.Store(tc.mode)
			outs, err := d.s.Submit(ctx, draft(1))
			if err != nil {
				t.Fatalf("submit through a failing proxy: %v (the change is in the log)", err)
			}
			if len(outs) != 1 || outs[0].Status == mailstore.Rejected {
				t.Fatalf("outcome %+v", outs)
			}
			select {
			case st := <-p.failed:
				if st != http.StatusOK {
					t.Fatalf("the server answered the failed append %d, want 200 (committed)", st)
				}
			default:
				t.Fatal("the proxy failed no append")
			}
			// The device's next changes: one while the first may still be
			// queued, and one once all is applied.
			if _, err := d.s.Submit(ctx, draft(2)); err != nil {
				t.Fatalf("second submit: %v", err)
			}
			waitFor(t, "the queue drained and the log applied", func() bool {
				st := d.s.Status()
				h, _ := e.store.Head(ctx, "alice")
				return st.Alarm != "" || (st.Queued == 0 && st.Position == h && h >= head+2)
			})
			if _, err := d.s.Submit(ctx, draft(3)); err != nil {
				t.Fatalf("third submit: %v", err)
			}
			waitFor(t, "the third change applied", func() bool {
				st := d.s.Status()
				h, _ := e.store.Head(ctx, "alice")
				return st.Alarm != "" || (st.Queued == 0 && st.Position == h && h >= head+3)
			})
			st := d.s.Status()
			if st.Alarm != "" {
				t.Fatalf("alarm: %s", st.Alarm)
			}
			h, err := e.store.Head(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if h != head+3 {
				t.Fatalf("log head %d: want %d (a delivery and three changes, each once)", h, head+3)
			}
			drafts, err := ms.MailboxByName(ctx, "Drafts")
			if err != nil {
				t.Fatal(err)
			}
			if drafts.Messages != 3 {
				t.Fatalf("Drafts holds %d messages, want 3", drafts.Messages)
			}
		})
	}
}

// retryingBalancer is a load balancer in front of two server processes on
// one store (docs/POSTGRES.md's setup), set to retry a request on the other
// upstream when the first does not answer in time (nginx's
// proxy_next_upstream timeout non_idempotent). Armed, it sends the next
// conditional append to the first server, which appends it, takes the
// answer as too late, and sends the same request to the second, whose
// answer it gives the device: the second process has not seen the nonce,
// finds the head moved, and answers 409.
type retryingBalancer struct {
	srv     *httptest.Server
	armed   atomic.Bool
	answers chan [2]int // the two servers' statuses for the retried append
	// deliveries: retry the next append without if_head instead (a
	// delivery over HTTP).
	deliveries atomic.Bool
}

func newRetryingBalancer(t *testing.T, first, second string) *retryingBalancer {
	b := &retryingBalancer{answers: make(chan [2]int, 8)}
	forward := func(r *http.Request, body []byte, base string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, base+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header = r.Header.Clone()
		return http.DefaultTransport.RoundTrip(req)
	}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		upstream := first
		conditional := r.URL.Query().Get("if_head") != ""
		if r.Method == http.MethodPost && conditional != b.deliveries.Load() && b.armed.CompareAndSwap(true, false) {
			resp, err := forward(r, body, first)
			if err != nil {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			firstStatus := resp.StatusCode
			upstream = second
			defer func() { b.answers <- [2]int{firstStatus, 0} }()
		}
		resp, err := forward(r, body, upstream)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// TestBalancerRetriesAppend: an append that a balancer sent to a second
// server process after the first appended it gets that process's 409. The
// device must find its own entry at the position after the head it sent
// on, take the append as done, and not send it again: the log holds it
// once, no replay alarm, and the next changes go through.
func TestBalancerRetriesAppend(t *testing.T) {
	e := newEnv(t, false, nil)
	second := serve(t, NewServer(Config{Store: e.store, Users: e.users, SpoolKey: e.spoolK.Public(),
		Logger: testLogger(t), Started: time.Now().Add(-time.Hour)}))
	b := newRetryingBalancer(t, e.srv.URL, second.URL)
	ctx := testCtx(t)
	head := e.deliver(t, 1)
	d, ms := e.startDeviceAt(t, b.srv.URL)
	waitFor(t, "the delivery applied", func() bool { return d.s.Status().Position == head })

	draft := func(i int) *command.Command {
		return &command.Command{Kind: command.Append, Mailbox: "Drafts", Date: 1,
			Body: fmt.Appendf(nil, "Subject: draft %d\r\nMessage-ID: <%d@balancer>\r\n\r\nx\r\n", i, i)}
	}
	b.armed.Store(true)
	outs, err := d.s.Submit(ctx, draft(1))
	if err != nil {
		t.Fatalf("submit through a retrying balancer: %v (the change is in the log)", err)
	}
	if len(outs) != 1 || outs[0].Status == mailstore.Rejected {
		t.Fatalf("outcome %+v", outs)
	}
	select {
	case st := <-b.answers:
		if st[0] != http.StatusOK {
			t.Fatalf("the first server answered the append %d, want 200 (committed)", st[0])
		}
	default:
		t.Fatal("the balancer retried no append")
	}
	if _, err := d.s.Submit(ctx, draft(2)); err != nil {
		t.Fatalf("second submit: %v", err)
	}
	waitFor(t, "the log applied", func() bool {
		st := d.s.Status()
		h, _ := e.store.Head(ctx, "alice")
		return st.Alarm != "" || (st.Queued == 0 && st.Position == h && h >= head+2)
	})
	if a := d.s.Status().Alarm; a != "" {
		t.Fatalf("alarm: %s", a)
	}
	if h, _ := e.store.Head(ctx, "alice"); h != head+2 {
		t.Fatalf("log head %d: want %d (a delivery and two changes, each once)", h, head+2)
	}
	drafts, err := ms.MailboxByName(ctx, "Drafts")
	if err != nil {
		t.Fatal(err)
	}
	if drafts.Messages != 2 {
		t.Fatalf("Drafts holds %d messages, want 2", drafts.Messages)
	}
}
