package api

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/spool"
)

// Parking a long-poll. A device that is up to date holds one read waiting
// on the server at all times, so with many devices nearly every connection
// is a read that waits. Left to net/http, each holds two goroutines (the
// handler and the background read that watches for the client going away),
// a 4 KiB read buffer, 6 KiB of write buffers and the parsed request: about
// 60 KB of the server's memory a device. A parked read holds only its
// connection, the few values it needs to answer, and one goroutine that has
// done nothing but wait (its stack stays small).
//
// A read with a wait parks once it has been authenticated and holds its
// user's share of long-polls, before it reads anything: the wait reads the
// head first and returns at once if there are entries. The handler takes the
// connection from net/http (http.Hijacker), and returns. When the wait ends
// the parked read's goroutine answers on the connection, an HTTP/1.1
// response with a chunked body, exactly what the handler would have written,
// then reads the next request on the connection: a renewal of the
// long-poll (the device's next read, sent as soon as it has the answer) is
// served on the same goroutine (serveNext), anything else goes back to the
// HTTP server through the listener that accepted it (Server.Listener), as
// a new connection: the client keeps its connection alive as before. Only HTTP/1.1 connections accepted
// by that listener park (plain, or over the TLS of ListenerTLS, which is
// under the listener's connection), and only GETs; anything else (TLS put
// on top by http.Server.ServeTLS, HTTP/2, HTTP/1.0, a HEAD, a request that
// asked to close its connection) waits in its handler as before.
//
// What a parked read no longer sees by itself is the client going away:
// nothing reads its connection while it waits. Its wait, and its place in
// the user's share of long-polls, would run until the wait ends, at most
// Config.MaxWait, so a device restarted over and over (a crash loop, a
// laptop that suspends often) would fill its user's share with reads
// nobody waits for, and every read of the user's devices that would wait
// would be refused (429) for minutes. So a read that finds its user's share
// full first looks at the user's parked reads (freeGone): each whose
// client has closed its connection, or whose connection failed, is ended
// and its place given back; a live client's read, its connection open and
// idle, is never ended this way. The look is a system call on each of
// those connections, made only when the share is full, with no goroutine
// or buffer kept for it.

// parked is a read waiting outside net/http.
type parked struct {
	conn     net.Conn
	user     string
	p        readParams
	ri       *reqInfo
	start    time.Time
	method   string
	path     string
	pattern  string
	remote   string
	reusable bool // the client keeps the connection alive
	// ctx is the wait's; freeGone cancels it when the client went away.
	ctx    context.Context
	cancel context.CancelFunc
}

// park takes r's connection over and waits for user's log to move beyond
// p.after on a goroutine of its own, which then answers. It reports false,
// having changed nothing, when r cannot be parked; the handler then waits
// itself.
func (s *Server) park(w http.ResponseWriter, r *http.Request, user string, p readParams) bool {
	// Only a GET: the parked answer always has a body, which an answer
	// to a HEAD must not (net/http leaves it out), or a client that keeps
	// the connection reads it as the start of the next response.
	if !s.parking.Load() || r.Method != http.MethodGet || r.TLS != nil || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close ||
		r.ContentLength != 0 || s.stopping.Err() != nil {
		return false
	}
	if !s.acquirePoll(user) {
		return false // the handler's own wait answers 429
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.polls.release(user)
		return false
	}
	ri := info(r)
	ri.parked = true
	pk := &parked{conn: conn, user: user, p: p, ri: ri, start: time.Now(), method: r.Method,
		path: r.URL.Path, pattern: r.Pattern, remote: r.RemoteAddr,
		// Bytes after the request: a client that pipelines. Its connection
		// is closed after the answer rather than given back without them.
		reusable: brw.Reader.Buffered() == 0}
	pk.ctx, pk.cancel = context.WithCancel(context.Background())
	s.polls.hold(pk)
	s.cfg.Metrics.LongPoll(1)
	s.parkedReads.Add(1)
	s.parkedNow.Add(1)
	if iw := inplaceOf(w); iw != nil {
		iw.pk = pk // serveNext's goroutine waits for it
	} else {
		go s.waitParked(pk)
	}
	return true
}

// waitParked waits for pk's log to move, then answers pk; then, on the same
// goroutine, serves the next request on pk's connection (serveNext) and
// waits for it too if it parks, and so on: the renewals of a device that
// long-polls are answered by one goroutine, whose stack has grown to what
// the store's reads need, instead of two new ones each (net/http's for the
// connection given back, and the parked read's).
//
// Each parked read is counted for Drain (parkedReads) from park until the
// request after it on the connection is done with: counted out only once
// that one has parked (and been counted in) or the connection is given
// back or closed, so that Drain never finds none while this goroutine
// still holds the connection (a WaitGroup counted up again after reaching
// zero under a Wait makes that Wait panic).
func (s *Server) waitParked(pk *parked) {
	for pk != nil {
		var next *parked
		if lc := s.answerParked(pk); lc != nil {
			next = s.serveNext(lc)
		}
		s.parkedReads.Done()
		pk = next
	}
}

// answerParked waits for pk's log to move, then answers pk. It returns the
// connection if it is to serve further requests, else nil (closed).
func (s *Server) answerParked(pk *parked) *limitedConn {
	defer s.parkedNow.Add(-1)
	defer pk.cancel()
	ctx := pk.ctx
	moved, waited, ok, err := spool.WaitForTip(ctx, s.cfg.Store, pk.user, pk.p.after, slotted(time.Now(), pk.p.wait), s.stopping)
	s.polls.releaseParked(pk) // unless freeGone did
	s.cfg.Metrics.LongPoll(-1)

	// What ServeHTTP and the handler had, rebuilt for the answer.
	r := (&http.Request{Method: pk.method, URL: &url.URL{Path: pk.path}, Pattern: pk.pattern,
		RemoteAddr: pk.remote, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}}).WithContext(context.WithValue(ctx, reqInfoKey{}, pk.ri))
	cw := newConnWriter(pk.conn, &s.answers)
	// A read freeGone ended (ctx cancelled) is answered as a waiting
	// handler whose client went away is (500, logged with
	// client_gone), to a client that reads no more.
	keep := pk.reusable && s.stopping.Err() == nil && ctx.Err() == nil
	if !keep {
		cw.header.Set("Connection", "close")
	}
	rw := &recorder{ResponseWriter: cw, status: http.StatusOK}
	rw.Header().Set("Cspool-Request-Id", pk.ri.id)
	s.setBudget(rw.Header(), pk.ri)
	var entries []spool.Entry
	var known *spool.Tip
	// Its entries held until answered, as any read's (readHold).
	h := &readHold{s: s, key: pk.ri.keyID}
	defer h.release()
	if err == nil && moved {
		if err = s.stillAllowed(ctx, pk.user, pk.ri.key); err == nil {
			entries, err = h.first(ctx, pk.user, pk.p)
		}
	} else if ok {
		known = &waited
	}
	s.answerRead(ctx, rw, r, pk.user, pk.p, entries, h, known, err)
	if err := cw.finish(); err != nil {
		keep = false
		if pk.ri.err == nil {
			pk.ri.err = err
		}
	}
	s.answered(r, rw, pk.start, pk.ri)
	lc, ok := pk.conn.(*limitedConn)
	if !keep || !ok || lc.ln == nil {
		pk.conn.Close()
		return nil
	}
	return lc
}

// acquirePoll takes a place in user's share of long-polls
// (Config.MaxLongPolls). When the share is full it first ends the user's
// parked reads whose clients went away (freeGone), which would otherwise
// hold their places until their waits end.
func (s *Server) acquirePoll(user string) bool {
	if s.polls.acquire(user, s.cfg.MaxLongPolls) {
		return true
	}
	return s.freeGone(user) > 0 && s.polls.acquire(user, s.cfg.MaxLongPolls)
}

// freeGone ends each parked read of user whose client has closed its
// connection or whose connection failed (clientGone), giving its place in
// the share back at once, and returns how many it ended. The read's own
// goroutine wakes, answers as to a client gone (nobody reads it) and
// closes the connection.
func (s *Server) freeGone(user string) int {
	n := 0
	for _, pk := range s.polls.parkedOf(user) {
		if clientGone(pk.conn) && s.polls.releaseParked(pk) {
			pk.cancel()
			n++
		}
	}
	return n
}

// nextRequestGrace is how long the goroutine that answered a parked read
// waits on its connection for the client's next request before it gives
// the connection back to the HTTP server. A device renews its long-poll as
// soon as it has the answer.
const nextRequestGrace = time.Second

// serveNext reads the next request on lc, a connection whose parked read
// was just answered, and serves it on this goroutine if it is a renewal:
// a GET of a log's entries with a wait, on HTTP/1.1, with no body and
// nothing that net/http's own reading would refuse or treat specially,
// complete in what one read of the connection brought. The request goes
// through ServeHTTP as any other, authenticated and logged the same; if it
// parks, serveNext returns it for waitParked to wait for; if it is
// answered at once (a refusal, say), its answer is written here and the
// next request read (or, if the client sent more already, the connection
// goes to net/http with those bytes). Anything else, or no request within
// nextRequestGrace, and the connection goes back to the HTTP server
// through its listener, with the bytes read so far, which net/http then
// reads first. It returns nil once the connection is given back or closed.
func (s *Server) serveNext(lc *limitedConn) *parked {
	if h := testHookServeNext.Load(); h != nil {
		(*h)(s)
	}
	for {
		if s.stopping.Err() != nil {
			lc.Close()
			return nil
		}
		nr, _ := s.nextReaders.Get().(*nextReader)
		if nr == nil {
			nr = &nextReader{br: bufio.NewReaderSize(nil, 4<<10), pr: bufio.NewReaderSize(nil, 512)}
		}
		nr.br.Reset(lc)
		pk, again := s.serveOne(lc, nr)
		nr.br.Reset(nil)
		nr.pr.Reset(nil)
		s.nextReaders.Put(nr)
		if !again {
			return pk
		}
	}
}

// testHookServeNext, when set, runs as serveNext starts (tests).
var testHookServeNext atomic.Pointer[func(*Server)]

// nextReader holds the buffers serveNext reads a request with: br on the
// connection, pr over what br holds, for parsing. Pooled: taken only while
// a request is read and served.
type nextReader struct {
	br, pr *bufio.Reader
	rd     bytes.Reader
}

// serveOne reads and serves one request on lc (serveNext). again: the
// request was answered here and the connection serves the next.
func (s *Server) serveOne(lc *limitedConn, nr *nextReader) (pk *parked, again bool) {
	lc.SetReadDeadline(time.Now().Add(nextRequestGrace))
	_, err := nr.br.Peek(1)
	lc.SetReadDeadline(time.Time{})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) && nr.br.Buffered() == 0 {
			lc.ln.resume(lc)
		} else {
			lc.Close() // the client closed it, or it failed
		}
		return nil, false
	}
	buf, _ := nr.br.Peek(nr.br.Buffered())
	r, n := parseRenewal(buf, nr)
	if r == nil {
		// Not a renewal, or not all of it here: net/http reads it.
		lc.pending = append([]byte(nil), buf...)
		lc.ln.resume(lc)
		return nil, false
	}
	nr.br.Discard(n)
	r.RemoteAddr = lc.remote
	iw := &inplaceWriter{cw: newConnWriter(lc, &s.answers), conn: lc, br: nr.br}
	s.ServeHTTP(iw, r)
	if iw.pk != nil {
		iw.cw.release()
		return iw.pk, false
	}
	err = iw.cw.finish()
	if err != nil || iw.cw.header.Get("Connection") == "close" {
		lc.Close()
		return nil, false
	}
	if n := nr.br.Buffered(); n > 0 {
		// The client sent its next request already: net/http reads it.
		rest, _ := nr.br.Peek(n)
		lc.pending = append([]byte(nil), rest...)
		lc.ln.resume(lc)
		return nil, false
	}
	return nil, true
}

// parseRenewal parses buf as a renewal served by serveNext, returning the
// request and its length in buf, or nil.
func parseRenewal(buf []byte, nr *nextReader) (*http.Request, int) {
	nr.rd.Reset(buf)
	nr.pr.Reset(&nr.rd)
	r, err := http.ReadRequest(nr.pr)
	if err != nil || r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close ||
		r.ContentLength != 0 || len(r.TransferEncoding) != 0 || r.Host == "" || r.URL.Host != "" ||
		!strings.HasPrefix(r.URL.Path, "/v1/users/") || !strings.HasSuffix(r.URL.Path, "/entries") ||
		!strings.Contains(r.URL.RawQuery, "wait=") || !onlyBytes(r.Host, hostPunct) {
		return nil, 0
	}
	for name, vs := range r.Header {
		if name == "Expect" || name == "Upgrade" || name == "Host" || name == "" || !onlyBytes(name, tokenPunct) {
			return nil, 0
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
					return nil, 0
				}
			}
		}
	}
	return r, len(buf) - nr.rd.Len() - nr.pr.Buffered()
}

// The checks net/http's server makes of a request beyond http.ReadRequest
// (golang.org/x/net/http/httpguts, vendored in the standard library): a
// Host of these bytes, header names that are tokens. A request that fails
// them goes to net/http, which answers 400 and closes the connection.
const (
	hostPunct  = "!$%&'()*+,-.:;=[]_~"
	tokenPunct = "!#$%&'*+-.^_`|~"
)

// onlyBytes reports whether s has only letters, digits and bytes of punct.
func onlyBytes(s, punct string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte(punct, c) >= 0) {
			return false
		}
	}
	return true
}

// inplaceWriter is the http.ResponseWriter of a request served by
// serveNext: it answers as connWriter does, and a read that parks hijacks
// it (park), which hands the parked read back to serveNext rather than to
// a goroutine of its own.
type inplaceWriter struct {
	cw   *connWriter
	conn net.Conn
	br   *bufio.Reader
	pk   *parked // set by park
}

func (w *inplaceWriter) Header() http.Header         { return w.cw.Header() }
func (w *inplaceWriter) WriteHeader(code int)        { w.cw.WriteHeader(code) }
func (w *inplaceWriter) Write(b []byte) (int, error) { return w.cw.Write(b) }

// Hijack lets park take the connection (http.ResponseController).
func (w *inplaceWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.conn, bufio.NewReadWriter(w.br, nil), nil
}

// inplaceOf returns the inplaceWriter under w, if any.
func inplaceOf(w http.ResponseWriter) *inplaceWriter {
	for {
		switch v := w.(type) {
		case *inplaceWriter:
			return v
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return nil
		}
	}
}

// parkedCount returns the reads parked now.
func (s *Server) parkedCount() int64 { return s.parkedNow.Load() }

// Drain waits until every parked read has been answered (Shutdown answers
// them at once), or ctx ends. Call it after Shutdown so that the process
// does not exit before their answers are written.
func (s *Server) Drain(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.parkedReads.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connWriter is the http.ResponseWriter of a parked read: an HTTP/1.1
// response with a chunked body, written on the connection.
type connWriter struct {
	conn        net.Conn
	bw          *bufio.Writer // from pool, once the header is written
	pool        *sync.Pool
	header      http.Header
	wroteHeader bool
	err         error
}

// newConnWriter writes on c through a buffer of pool, taken only while
// the answer is written.
func newConnWriter(c net.Conn, pool *sync.Pool) *connWriter {
	return &connWriter{conn: c, pool: pool, header: http.Header{}}
}

func (cw *connWriter) Header() http.Header { return cw.header }

func (cw *connWriter) WriteHeader(code int) {
	if cw.wroteHeader {
		return
	}
	cw.wroteHeader = true
	cw.bw, _ = cw.pool.Get().(*bufio.Writer)
	if cw.bw == nil {
		cw.bw = bufio.NewWriterSize(nil, 4<<10)
	}
	cw.bw.Reset(cw.conn)
	cw.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	cw.header.Set("Transfer-Encoding", "chunked")
	cw.header.Del("Content-Length")
	cw.bw.WriteString("HTTP/1.1 " + strconv.Itoa(code) + " " + http.StatusText(code) + "\r\n")
	cw.header.Write(cw.bw)
	_, cw.err = cw.bw.WriteString("\r\n")
}

func (cw *connWriter) Write(b []byte) (int, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.err != nil {
		return 0, cw.err
	}
	if len(b) == 0 {
		return 0, nil // an empty chunk would end the body
	}
	cw.bw.WriteString(strconv.FormatInt(int64(len(b)), 16) + "\r\n")
	cw.bw.Write(b)
	if _, cw.err = cw.bw.WriteString("\r\n"); cw.err != nil {
		return 0, cw.err
	}
	return len(b), nil
}

// finish ends the body, flushes the answer and returns the buffer to the
// pool.
func (cw *connWriter) finish() error {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	if cw.err == nil {
		cw.bw.WriteString("0\r\n\r\n")
		cw.err = cw.bw.Flush()
	}
	cw.release()
	if cw.err != nil {
		return errors.Join(errClientGone, cw.err)
	}
	return nil
}

// release returns the buffer, if one was taken, to the pool.
func (cw *connWriter) release() {
	if cw.bw != nil {
		cw.bw.Reset(nil)
		cw.pool.Put(cw.bw)
		cw.bw = nil
	}
}

var errClientGone = errors.New("writing the answer of a parked read")
