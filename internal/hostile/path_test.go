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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
	"cspool/internal/syncer"
	"cspool/internal/testproc"
	"cspool/internal/userdb"
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

func isRead(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/entries")
}

func isAppend(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/entries")
}

// times lets a fault act on its first n matching exchanges only.
type times struct {
	mu   sync.Mutex
	left int
	done int
}

func (c *times) take() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.left == 0 {
		return false
	}
	c.left--
	c.done++
	return true
}

func (c *times) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// syncThrough runs the device's loop until it has applied pos (at most
// 20 s), then stops it.
func syncThrough(t *testing.T, d *device, pos uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	err := d.s.WaitApplied(ctx, pos)
	cancel()
	if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) && !errors.Is(rerr, context.DeadlineExceeded) {
		t.Fatalf("device %s: sync loop: %v", d.name, rerr)
	}
	if err != nil {
		t.Fatalf("device %s: position %d, did not apply %d: %v (status error %q)", d.name, d.position(t), pos, err, d.s.Status().LastError)
	}
}

// TestReadsCutMidEntry: the path cuts the answers to reads (long-polls
// included) short: with their length kept (the connection closed early)
// and without it (a body that ends with its connection), in the middle of
// an entry's framing, of its data, and just before the end marker. The
// device takes each for a failed transfer: nothing applied of the cut
// answer, no rejection, no alarm; once the path heals it applies the log,
// each entry once, and ends as a device that read it directly.
func TestReadsCutMidEntry(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	ref := r.device("ref", true)
	head := r.deliver(6)
	type cut struct {
		name   string
		keepCL bool
		at     func(body []byte) int
	}
	cuts := []cut{
		{"framing, with length", true, func([]byte) int { return 1 }},
		{"data, with length", true, func(b []byte) int { return len(b) / 2 }},
		{"before the end marker, with length", true, func(b []byte) int { return len(b) - 1 }},
		{"framing, no length", false, func([]byte) int { return 1 }},
		{"data, no length", false, func(b []byte) int { return len(b) / 2 }},
		{"before the end marker, no length", false, func(b []byte) int { return len(b) - 1 }},
	}
	for i, c := range cuts {
		d := r.device(fmt.Sprintf("d%d", i), false)
		if i%2 == 1 {
			// Part of the log applied first: the cut hits a read after
			// a position, long-polling at the head.
			d.mustSync(t)
			head = r.deliver(3)
		}
		before := d.position(t)
		n := &times{left: 2}
		r.proxy.set(&fault{after: func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
			if !isRead(req) || resp.StatusCode != http.StatusOK || len(body) < 3 || !n.take() {
				return false
			}
			if !c.keepCL {
				closeDelimited(w, resp, body, c.at(body))
				return true
			}
			conn, bw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return true
			}
			defer conn.Close()
			fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
			resp.Header.Write(bw)
			fmt.Fprintf(bw, "Content-Length: %d\r\n\r\n", len(body))
			bw.Write(body[:c.at(body)])
			bw.Flush()
			return true
		}})
		for range 2 {
			err := d.sync(t)
			if !errors.Is(err, spool.ErrUnavailable) {
				t.Fatalf("%s: sync over a cut read: %v: want a temporary error", c.name, err)
			}
			if p := d.position(t); p != before {
				t.Fatalf("%s: position %d after a cut read: want %d", c.name, p, before)
			}
			noFalseAlarm(t, d)
		}
		if n.count() != 2 {
			t.Fatalf("%s: %d reads cut: want 2", c.name, n.count())
		}
		r.proxy.set(nil)
		syncThrough(t, d, head)
		noFalseAlarm(t, d)
		ref.mustSync(t)
		if !bytes.Equal(d.state(t), ref.state(t)) {
			t.Fatalf("%s: the device's state after the path healed is not the direct device's", c.name)
		}
	}
}

// reset closes the connection of w with a reset (RST), no answer.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// logIDs opens every entry of the spool's log and counts each entry id.
func (r *pathRig) logIDs(t *testing.T) map[command.ID]int {
	t.Helper()
	es, err := r.sp.Store.Read(context.Background(), devicetest.User, 0, 100000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[command.ID]int{}
	for _, e := range es {
		o, err := entry.Open(e.Data, r.sp.UserKey, devicetest.User, r.sp.UserKey.Public(), r.sp.SpoolKey.Public())
		if err != nil {
			t.Fatalf("entry %d: %v", e.Pos, err)
		}
		ids[o.ID]++
	}
	return ids
}

// TestAppendsReset: the path resets the connection of a device's append,
// before forwarding it (the spool never sees it) and after (the spool
// appended it; the answer is lost). Each change the device's client was
// told of lands in the log once and applies once, no alarm, and the
// device ends as one that read the log directly.
func TestAppendsReset(t *testing.T) {
	t.Parallel()
	for _, after := range []bool{false, true} {
		name := "before forwarding"
		if after {
			name = "after forwarding"
		}
		t.Run(name, func(t *testing.T) {
			r := newPathRig(t)
			ref := r.device("ref", true)
			d := r.device("d", false)
			r.deliver(6)
			d.mustSync(t)
			msgs := d.inbox(t)
			n := &times{left: 3}
			f := &fault{}
			if after {
				f.after = func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
					if !isAppend(req) || !n.take() {
						return false
					}
					reset(w)
					return true
				}
			} else {
				f.before = func(w http.ResponseWriter, req *http.Request, body []byte) bool {
					if !isAppend(req) || !n.take() {
						return false
					}
					reset(w)
					return true
				}
			}
			r.proxy.set(f)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- d.s.Run(ctx) }()
			for i, m := range msgs[:4] {
				o, err := d.s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$k%d", i)}, IDs: []command.ID{m.ID}})
				if err != nil || len(o) != 1 || o[0].Status == mailstore.Rejected {
					t.Fatalf("submit %d: %+v, %v", i, o, err)
				}
			}
			r.proxy.set(nil)
			// The changes queued while appends failed are sent once the
			// path carries them.
			var head uint64
			for range 200 {
				if d.s.Status().Queued == 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			head = r.sp.Head()
			if err := d.s.WaitApplied(ctx, head); err != nil {
				t.Fatalf("device at %d, head %d: %v (status %q)", d.position(t), head, err, d.s.Status().LastError)
			}
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("sync loop: %v", err)
			}
			if n.count() == 0 {
				t.Fatal("no append was reset")
			}
			noFalseAlarm(t, d)
			if q := d.s.Status().Queued; q != 0 {
				t.Fatalf("%d changes still queued", q)
			}
			for id, k := range r.logIDs(t) {
				if k != 1 {
					t.Fatalf("entry %x is %d times in the log: want once", id, k)
				}
			}
			if head != 10 {
				t.Fatalf("head %d: want 10, the 6 deliveries and the 4 changes once each", head)
			}
			ref.mustSync(t)
			d.mustSync(t)
			if !bytes.Equal(d.state(t), ref.state(t)) {
				t.Fatal("the device's state is not the direct device's")
			}
			for i, m := range d.inbox(t)[:4] {
				if !slices.Contains(m.Flags, fmt.Sprintf("$k%d", i)) {
					t.Fatalf("message %d: flags %v: want $k%d", i, m.Flags, i)
				}
			}
		})
	}
}

// TestAppendAnsweredNotForwarded: the path answers a device's append 200
// itself, with the position the entry would have had, and never forwards
// it. That is a forged acknowledgement: the device may not take the
// change for landed without the log showing it.
func TestAppendAnsweredNotForwarded(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	d := r.device("d", false)
	r.deliver(6)
	d.mustSync(t)
	msgs := d.inbox(t)
	n := &times{left: 1}
	r.proxy.set(&fault{before: func(w http.ResponseWriter, req *http.Request, body []byte) bool {
		if !isAppend(req) || !n.take() {
			return false
		}
		head := req.URL.Query().Get("if_head")
		var h uint64
		fmt.Sscan(head, &h)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"first":%d,"count":1}`, h+1)
		return true
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second)
	o, err := d.s.Submit(sctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$forged"}, IDs: []command.ID{msgs[0].ID}})
	scancel()
	if err == nil {
		t.Fatalf("submit answered %+v on a forged acknowledgement: want it not answered OK until the log shows the change", o)
	}
	r.deliver(1) // 7: another entry where the device was told its own is
	for range 400 {
		if d.s.Status().Alarm != "" {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, syncer.ErrIntegrity) {
		t.Fatalf("sync loop: %v", err)
	}
	if a := d.s.Status().Alarm; !strings.Contains(a, "dropped or replaced the entry") {
		t.Fatalf("alarm %q: want the dropped append named", a)
	}
	if p := d.position(t); p != 6 {
		t.Fatalf("position %d: want 6, nothing applied past the forged position", p)
	}
}

// TestAnswersOfAnotherUser: the path mixes users up, as a cache that keys
// its answers without the path: alice's device gets, for its reads, the
// answers bob's device got for reads after the same position. Bob's
// entries are sealed to bob's key. Alice's device took the answers for
// its log: it recorded bob's entries as mail sealed to the wrong key
// (misdelivered, with advice to the operator), moved its position past
// them with bob's chain hashes, and so skipped alice's own entries at
// those positions for good; once the path healed, it raised the alarm
// "rewritten, rolled back or forked", which stood. Every answer now names
// the request it answers (Cspool-Nonce), and the client takes an answer
// to another request for a failed transfer: nothing is applied, and the
// device syncs alice's log once the path heals.
func TestAnswersOfAnotherUser(t *testing.T) {
	t.Parallel()
	sp := devicetest.NewSpool(t)
	bobKey := devicetest.Key(t)
	usersFile := filepath.Join(sp.Dir, "users2")
	if err := os.WriteFile(usersFile, []byte(devicetest.User+" "+sp.UserKey.Public().String()+"\nbob "+bobKey.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := userdb.Load(usersFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.NewServer(api.Config{Store: sp.Store, Users: users, SpoolKey: sp.SpoolKey.Public(), Logger: devicetest.Logger()})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	upstream := "http://" + ln.Addr().String()
	proxy := newPathProxy(t, upstream)
	ctx := context.Background()
	for i := range 3 {
		sp.Deliver(message(100 + i))
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: devicetest.DeliveryDate.UnixMilli(), Body: message(200 + i)}, sp.SpoolKey, bobKey.Public(), "bob", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sp.Store.Append(ctx, "bob", [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	bobs := map[string]struct {
		resp *http.Response
		body []byte
	}{}
	mixing := true
	proxy.set(&fault{after: func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
		if !isRead(req) || resp.StatusCode != http.StatusOK {
			return false
		}
		key := req.URL.Query().Get("after") + "/" + req.URL.Query().Get("max_count")
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(req.URL.Path, "/bob/") {
			bobs[key] = struct {
				resp *http.Response
				body []byte
			}{resp, body}
			return false
		}
		b, ok := bobs[key]
		if !mixing || !ok {
			return false
		}
		copyAnswer(w, b.resp, b.body)
		return true
	}})
	bobStore := devicetest.OpenStore(t, filepath.Join(sp.Dir, "bob.db"))
	bobClient, err := api.NewClient(proxy.url, "bob", bobKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := syncer.New(syncer.Config{User: "bob", UserKey: bobKey, SpoolKey: sp.SpoolKey.Public(), Store: bobStore, Source: bobClient,
		Logger: devicetest.Logger(), CheckpointMin: -1, Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	bd := &device{name: "bob", s: bob, ms: bobStore}
	bd.mustSync(t)
	a := (&pathRig{t: t, sp: sp, upstream: upstream, proxy: proxy}).device("alice", false)
	for i := range 2 {
		err := a.sync(t)
		if !errors.Is(err, spool.ErrUnavailable) {
			t.Fatalf("sync %d over a path that answers with bob's log: %v: want a temporary error", i, err)
		}
		noFalseAlarm(t, a)
		if st := a.s.Status(); st.Misdelivered != "" || a.position(t) != 0 {
			t.Fatalf("over the mixed path: misdelivered %q, position %d: want nothing taken of bob's log", st.Misdelivered, a.position(t))
		}
	}
	mu.Lock()
	mixing = false
	mu.Unlock()
	a.mustSync(t)
	noFalseAlarm(t, a)
	if n := len(a.inbox(t)); n != 3 || a.position(t) != 3 {
		t.Fatalf("once healed: %d messages at position %d: want alice's 3", n, a.position(t))
	}
}

// TestAppendAnswerDelayed: the path forwards a device's append at once but
// holds the server's answer for longer than the client waits for the
// change (the IMAP command's bound). The change lands once, applies once,
// and nothing is raised.
func TestAppendAnswerDelayed(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	d := r.device("d", false)
	r.deliver(4)
	d.mustSync(t)
	msgs := d.inbox(t)
	n := &times{left: 1}
	release := make(chan struct{})
	r.proxy.set(&fault{after: func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
		if !isAppend(req) || !n.take() {
			return false
		}
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
		copyAnswer(w, resp, body)
		return true
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	_, serr := d.s.Submit(sctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$late"}, IDs: []command.ID{msgs[0].ID}})
	scancel()
	// Another change meanwhile, and new mail.
	r.deliver(1)
	close(release)
	o, err := d.s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$next"}, IDs: []command.ID{msgs[1].ID}})
	if err != nil || len(o) != 1 || o[0].Status == mailstore.Rejected {
		t.Fatalf("the change after the held one: %+v, %v", o, err)
	}
	head := r.sp.Head()
	if err := d.s.WaitApplied(ctx, head); err != nil {
		t.Fatalf("position %d, head %d: %v", d.position(t), head, err)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("sync loop: %v", err)
	}
	t.Logf("the held change's submit: %v", serr)
	noFalseAlarm(t, d)
	for id, k := range r.logIDs(t) {
		if k != 1 {
			t.Fatalf("entry %x %d times in the log", id, k)
		}
	}
	if head != 7 {
		t.Fatalf("head %d: want 7 (4 deliveries, the held change, a delivery, the next change)", head)
	}
	in := d.inbox(t)
	if !slices.Contains(in[0].Flags, "$late") || !slices.Contains(in[1].Flags, "$next") {
		t.Fatalf("flags %v, %v: want both changes applied", in[0].Flags, in[1].Flags)
	}
}

// rawProxy reads requests off each connection itself and forwards them to
// the server one by one, writing each answer back; dup makes it write an
// answer twice, the copy left for the connection's next request to read
// (an answer duplicated on a kept-alive connection, read as the answer to
// the request after it, which is not forwarded).
type rawProxy struct {
	url      string
	upstream string
	tr       *http.Transport
	dup      func(r *http.Request) bool
}

func newRawProxy(t *testing.T, upstream string, dup func(r *http.Request) bool) *rawProxy {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testproc.FreePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	p := &rawProxy{url: "http://" + ln.Addr().String(), upstream: upstream, tr: &http.Transport{}, dup: dup}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		p.tr.CloseIdleConnections()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				p.serveConn(c)
			}()
		}
	}()
	return p
}

func (p *rawProxy) serveConn(c net.Conn) {
	br := bufio.NewReader(c)
	var stale []byte // an answer written again for the next request
	for range 10000 {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return
		}
		if stale != nil {
			// The copy of the last answer is what this request reads;
			// it is not forwarded.
			_, err := c.Write(stale)
			stale = nil
			if err != nil {
				return
			}
			continue
		}
		out, err := http.NewRequest(req.Method, p.upstream+req.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return
		}
		out.Header = req.Header.Clone()
		resp, err := p.tr.RoundTrip(out)
		if err != nil {
			return
		}
		rb, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return
		}
		resp.Body = io.NopCloser(bytes.NewReader(rb))
		resp.ContentLength = int64(len(rb))
		resp.TransferEncoding = nil
		resp.Close = false
		var buf bytes.Buffer
		resp.Write(&buf)
		if _, err := c.Write(buf.Bytes()); err != nil {
			return
		}
		if p.dup(req) {
			stale = buf.Bytes()
		}
	}
}

// TestAnswersDuplicated: the path writes some answers twice on a kept-alive
// connection, so that the copy may be read as the answer to the device's
// next request on it (an old read's entries, an old head). The device
// takes nothing of an answer that is not to its request, raises nothing,
// and ends with the log applied once.
func TestAnswersDuplicated(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	ref := r.device("ref", true)
	n := &times{left: 6}
	p := newRawProxy(t, r.upstream, func(req *http.Request) bool {
		return req.Method == http.MethodGet && n.take()
	})
	d := r.sp.Device("d", syncer.Config{Source: r.sp.Client(p.url, r.sp.UserKey), Logger: devicetest.Logger(),
		CheckpointMin: -1, CheckpointTail: -1, Wait: time.Second, MaxBackoff: 100 * time.Millisecond})
	dv := &device{name: "d", base: p.url, s: d.Sync, ms: d.Store}
	var errs []error
	for i := range 8 {
		r.deliver(2)
		errs = append(errs, dv.sync(t))
		noFalseAlarm(t, dv)
		_ = i
	}
	head := r.sp.Head()
	syncThrough(t, dv, head)
	noFalseAlarm(t, dv)
	ref.mustSync(t)
	if !bytes.Equal(dv.state(t), ref.state(t)) {
		t.Fatal("state differs from the direct device's")
	}
	t.Logf("duplicated %d answers; sync errors %v", n.count(), errs)
}

// TestNotModifiedAnswers: a cache on the path answers reads and head
// requests 304 Not Modified (the device never asks for revalidation). The
// device takes nothing from them, raises nothing, and syncs once the path
// answers again.
func TestNotModifiedAnswers(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	d := r.device("d", false)
	r.deliver(3)
	d.mustSync(t)
	head := r.deliver(3)
	n := &times{left: 4}
	r.proxy.set(&fault{before: func(w http.ResponseWriter, req *http.Request, body []byte) bool {
		if req.Method != http.MethodGet || !n.take() {
			return false
		}
		w.WriteHeader(http.StatusNotModified)
		return true
	}})
	for range 2 {
		if err := d.sync(t); err == nil {
			t.Fatal("sync over a path that answers 304: no error")
		}
		noFalseAlarm(t, d)
		if p := d.position(t); p != 3 {
			t.Fatalf("position %d: want 3", p)
		}
	}
	r.proxy.set(nil)
	syncThrough(t, d, head)
	noFalseAlarm(t, d)
}

// TestCheckpointCutLengthAgreeing: the path cuts the checkpoint download
// and gives the cut's length as its Content-Length (a proxy that counts
// what it got), or cuts it inside the sealed header, with no length. The
// client sees a whole transfer or too little to tell; the device tells
// the cut by the checkpoint's own header (or the lack of one) and tries
// again, raising nothing.
func TestCheckpointCutLengthAgreeing(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		at     func(n int) int
		length bool
	}{
		{"length lowered, mid-body", func(n int) int { return n / 2 }, true},
		{"length lowered, mid-header", func(int) int { return 20 }, true},
		{"no length, mid-header", func(int) int { return 20 }, false},
		{"no length, empty", func(int) int { return 0 }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newPathRig(t)
			a, _ := r.compacted(t)
			cuts := &times{left: 2}
			r.proxy.set(&fault{after: func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
				if !isCheckpointGet(req) || resp.StatusCode != http.StatusOK || !cuts.take() {
					return false
				}
				k := c.at(len(body))
				if !c.length {
					closeDelimited(w, resp, body, k)
					return true
				}
				for h, v := range resp.Header {
					w.Header()[h] = v
				}
				w.Header().Set("Content-Length", fmt.Sprint(k))
				w.WriteHeader(resp.StatusCode)
				w.Write(body[:k])
				return true
			}})
			n := r.device("n", false)
			for i := range 2 {
				err := n.sync(t)
				if !errors.Is(err, spool.ErrUnavailable) {
					t.Fatalf("sync %d over a path that cuts the checkpoint: %v: want a temporary error", i, err)
				}
				noFalseAlarm(t, n)
			}
			if cuts.count() != 2 {
				t.Fatalf("%d downloads cut: want 2", cuts.count())
			}
			n.mustSync(t)
			noFalseAlarm(t, n)
			a.mustSync(t)
			if !bytes.Equal(n.state(t), a.state(t)) {
				t.Fatal("the device rebuilt once the path healed, but its state is not the writer's")
			}
		})
	}
}

// TestLongPollHeld: the path holds the answers to the device's long-polls
// (reads that wait) and lets everything else through, as a path whose
// long-poll connection died without a word while new connections work. A
// change made on the device meanwhile landed in the log at once, but its
// command was not answered: the device read its own entry only when the
// long-poll ended, at the read's bound of minutes (the IMAP command gave
// up first, with NO, for a change made). Once its entries are appended and
// not applied within a grace of 2 s, Submit ends the loop's long-poll,
// and the loop reads again on a fresh request.
func TestLongPollHeld(t *testing.T) {
	t.Parallel()
	r := newPathRig(t)
	d := r.device("d", false)
	r.deliver(3)
	d.mustSync(t)
	msgs := d.inbox(t)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	held := &times{left: 100}
	r.proxy.set(&fault{after: func(w http.ResponseWriter, req *http.Request, resp *http.Response, body []byte) bool {
		if !isRead(req) || req.URL.Query().Get("wait") == "" || !held.take() {
			return false
		}
		select {
		case <-release:
		case <-req.Context().Done():
		case <-time.After(90 * time.Second):
		}
		copyAnswer(w, resp, body)
		return true
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	for range 500 {
		if held.count() > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held.count() == 0 {
		t.Fatal("no long-poll reached the path")
	}
	// The bound guards against a hang; the read's own bound is minutes.
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	o, err := d.s.Submit(sctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$held"}, IDs: []command.ID{msgs[0].ID}})
	scancel()
	free()
	cancel()
	if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) {
		t.Fatalf("sync loop: %v", rerr)
	}
	if err != nil || len(o) != 1 || o[0].Status != mailstore.Applied {
		t.Fatalf("submit while the long-poll's answer is held: %+v, %v: want it applied and answered", o, err)
	}
	noFalseAlarm(t, d)
	if !slices.Contains(d.inbox(t)[0].Flags, "$held") || r.sp.Head() != 4 {
		t.Fatalf("flags %v, head %d: want the change applied, once", d.inbox(t)[0].Flags, r.sp.Head())
	}
}
