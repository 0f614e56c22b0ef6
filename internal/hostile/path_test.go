package hostile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/spool"
	"cspool/internal/syncer"
	"cspool/internal/testproc"
)

// The tests of this file put a broken or meddling path between a device and
// an honest spool: a proxy on 127.0.0.1 that forwards each request to the
// real server and, when told, mangles the transfer (cuts an answer short,
// drops its length, answers twice, loses a request, holds an answer). The
// spool itself never lies here: what the device may not do is take a fault
// of transport for the spool's word, raise an integrity alarm for it, lose
// or apply twice what was acknowledged, or stay stuck once the path heals.

// pathRig is a real spool (devicetest's SQLite store behind the HTTP API)
// and the path proxy in front of it, both on ports of the test range.
type pathRig struct {
	t        testing.TB
	sp       *devicetest.Spool
	upstream string
	proxy    *pathProxy
	sent     int
}

func newPathRig(t *testing.T) *pathRig {
	t.Helper()
	sp := devicetest.NewSpool(t)
	r := &pathRig{t: t, sp: sp}
	r.upstream = sp.ServeAPI(fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t))).URL()
	r.proxy = newPathProxy(t, r.upstream)
	return r
}

// device is a device reaching the spool through the proxy (direct: to the
// server itself).
func (r *pathRig) device(name string, direct bool) *device {
	r.t.Helper()
	base := r.proxy.url
	if direct {
		base = r.upstream
	}
	d := r.sp.Device(name, syncer.Config{Source: r.sp.Client(base, r.sp.UserKey), Logger: devicetest.Logger(),
		CheckpointMin: -1, CheckpointTail: -1, Wait: time.Second, MaxBackoff: 100 * time.Millisecond})
	return &device{name: name, base: base, s: d.Sync, ms: d.Store}
}

// deliver delivers n messages into the spool's store, as the spool's LMTP
// would.
func (r *pathRig) deliver(n int) uint64 {
	var pos uint64
	for range n {
		r.sent++
		pos = r.sp.Deliver(message(r.sent))
	}
	return pos
}

// fault is what the proxy does to one exchange. before runs on the
// request, its body read, before it is forwarded: true when it answered
// w itself (nothing forwarded). after runs on the server's answer, its
// body read: true when it answered w itself. Either may be nil.
type fault struct {
	before func(w http.ResponseWriter, r *http.Request, body []byte) bool
	after  func(w http.ResponseWriter, r *http.Request, resp *http.Response, body []byte) bool
}

// pathProxy forwards every request to the server on its own transport and
// gives each exchange to its fault, if any.
type pathProxy struct {
	url      string
	upstream string
	tr       *http.Transport
	srv      *http.Server

	mu    sync.Mutex
	fault *fault
}

func newPathProxy(t *testing.T, upstream string) *pathProxy {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	p := &pathProxy{url: "http://" + ln.Addr().String(), upstream: upstream, tr: &http.Transport{}}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve)}
	go p.srv.Serve(ln)
	t.Cleanup(func() {
		p.srv.Close()
		p.tr.CloseIdleConnections()
	})
	return p
}

// set makes f the fault of every exchange from now on (nil: honest).
func (p *pathProxy) set(f *fault) {
	p.mu.Lock()
	p.fault = f
	p.mu.Unlock()
}

func (p *pathProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	f := p.fault
	p.mu.Unlock()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if f != nil && f.before != nil && f.before(w, r, body) {
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	out.ContentLength = int64(len(body))
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	if f != nil && f.after != nil && f.after(w, r, resp, rb) {
		return
	}
	copyAnswer(w, resp, rb)
}

// copyAnswer writes the server's answer as it was.
func copyAnswer(w http.ResponseWriter, resp *http.Response, body []byte) {
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

// closeDelimited answers with the server's status and headers but without
// Content-Length or chunking, so that the body ends where the connection
// does (as an HTTP/1.0 proxy answers), and sends only its first n bytes.
func closeDelimited(w http.ResponseWriter, resp *http.Response, body []byte, n int) {
	conn, bw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	writeHead(bw, resp)
	bw.Write(body[:min(n, len(body))])
	bw.Flush()
}

// writeHead writes resp's status line and headers, but for its length and
// transfer coding, and a Connection: close.
func writeHead(bw *bufio.ReadWriter, resp *http.Response) {
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
	for k, vs := range resp.Header {
		if k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			fmt.Fprintf(bw, "%s: %s\r\n", k, v)
		}
	}
	bw.WriteString("Connection: close\r\n\r\n")
}

func isCheckpointGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/checkpoint")
}

// noFalseAlarm fails the test if d raised an alarm or recorded a rejection.
func noFalseAlarm(t *testing.T, d *device) {
	t.Helper()
	st := d.s.Status()
	if st.Alarm != "" || st.BadCheckpoint != 0 || st.Rejected != 0 {
		t.Fatalf("device %s: alarm %q, bad checkpoint %d, %d rejected: want none from a fault of transport", d.name, st.Alarm, st.BadCheckpoint, st.Rejected)
	}
	rej, err := d.ms.Rejected(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 0 {
		t.Fatalf("device %s: rejections recorded %+v: want none", d.name, rej)
	}
}

// compacted makes a log a new device can only rebuild from the checkpoint:
// 8 deliveries, 4 of them expunged by device a, which then writes a
// checkpoint that compacts their entries away. It returns a and the head.
func (r *pathRig) compacted(t *testing.T) (*device, uint64) {
	t.Helper()
	a := r.device("a", true)
	r.deliver(8)
	a.mustSync(t)
	msgs := a.inbox(t)
	a.submit(t, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[0].ID, msgs[2].ID, msgs[4].ID, msgs[6].ID}})
	_, pos, err := a.s.WriteCheckpoint(context.Background())
	if err != nil || pos != 9 {
		t.Fatalf("checkpoint: position %d, %v: want 9", pos, err)
	}
	return a, pos
}

// TestCheckpointCutWithoutLength: the path drops the checkpoint download's
// Content-Length and chunking (a close-delimited body, as an HTTP/1.0
// proxy answers) and cuts it short. The client cannot tell the cut from
// the end by the transfer; the device took what it got for the
// checkpoint, rejected it as invalid (recorded among the rejections, and
// the checkpoint at that position never tried again) and, on a log
// compacted past it, could not sync at all even once the path healed. A
// cut checkpoint is a fault of transport: the sealed entry says its own
// length, the device retries, raises nothing, and rebuilds once the path
// carries the whole.
func TestCheckpointCutWithoutLength(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	a, _ := r.compacted(t)
	var mu sync.Mutex
	cuts := 0
	r.proxy.set(&fault{after: func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
		if !isCheckpointGet(req) || resp.StatusCode != http.StatusOK {
			return false
		}
		mu.Lock()
		cuts++
		mu.Unlock()
		closeDelimited(w, resp, body, len(body)/2)
		return true
	}})
	var buf bytes.Buffer
	_, _, err := r.sp.Client(r.proxy.url, r.sp.UserKey).CheckpointTo(context.Background(), &buf)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Kind != api.ErrTransport {
		t.Fatalf("downloading a checkpoint cut without a length: %v: want a transport error", err)
	}
	n := r.device("n", false)
	for i := range 2 {
		err := n.sync(t)
		if !errors.Is(err, spool.ErrUnavailable) {
			t.Fatalf("sync %d over a path that cuts the checkpoint: %v: want a temporary error", i, err)
		}
		noFalseAlarm(t, n)
		if p := n.position(t); p != 0 {
			t.Fatalf("position %d after a cut checkpoint: want 0", p)
		}
	}
	mu.Lock()
	if cuts == 0 {
		t.Fatal("the checkpoint was never downloaded")
	}
	mu.Unlock()
	r.proxy.set(nil)
	n.mustSync(t)
	noFalseAlarm(t, n)
	a.mustSync(t)
	if !bytes.Equal(n.state(t), a.state(t)) {
		t.Fatal("the device rebuilt once the path healed, but its state is not the writer's")
	}
}
