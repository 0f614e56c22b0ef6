package api

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
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
// then gives the connection back to the HTTP server through the listener
// that accepted it (Server.Listener), as a new connection: the client keeps
// its connection alive as before. Only plain HTTP/1.1 connections accepted
// by that listener park; anything else (TLS, HTTP/2, HTTP/1.0, a request
// that asked to close its connection) waits in its handler as before.
//
// What a parked read no longer sees is the client going away: its wait,
// and the share of long-polls it holds, run until the wait ends, at most
// Config.MaxWait, and its answer then fails to be written.

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
}

// park takes r's connection over and waits for user's log to move beyond
// p.after on a goroutine of its own, which then answers. It reports false,
// having changed nothing, when r cannot be parked; the handler then waits
// itself.
func (s *Server) park(w http.ResponseWriter, r *http.Request, user string, p readParams) bool {
	if !s.parking.Load() || r.TLS != nil || r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close ||
		r.ContentLength != 0 || s.stopping.Err() != nil {
		return false
	}
	if !s.polls.acquire(user, s.cfg.MaxLongPolls) {
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
	s.cfg.Metrics.LongPoll(1)
	s.parkedReads.Add(1)
	s.parkedNow.Add(1)
	go s.waitParked(pk)
	return true
}

// waitParked waits for pk's log to move, then answers pk.
func (s *Server) waitParked(pk *parked) {
	defer s.parkedReads.Done()
	defer s.parkedNow.Add(-1)
	ctx := context.Background()
	moved, err := spool.WaitFor(ctx, s.cfg.Store, pk.user, pk.p.after, pk.p.wait, s.stopping)
	s.polls.release(pk.user)
	s.cfg.Metrics.LongPoll(-1)

	// What ServeHTTP and the handler had, rebuilt for the answer.
	r := (&http.Request{Method: pk.method, URL: &url.URL{Path: pk.path}, Pattern: pk.pattern,
		RemoteAddr: pk.remote, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}}).WithContext(context.WithValue(ctx, reqInfoKey{}, pk.ri))
	cw := newConnWriter(pk.conn, &s.answers)
	keep := pk.reusable && s.stopping.Err() == nil
	if !keep {
		cw.header.Set("Connection", "close")
	}
	rw := &recorder{ResponseWriter: cw, status: http.StatusOK}
	rw.Header().Set("Cspool-Request-Id", pk.ri.id)
	var entries []spool.Entry
	if err == nil && moved {
		entries, err = s.cfg.Store.Read(ctx, pk.user, pk.p.after, pk.p.maxCount, min(pk.p.maxBytes, s.cfg.ChunkBytes))
	}
	s.answerRead(ctx, rw, r, pk.user, pk.p, entries, err)
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
		return
	}
	lc.ln.resume(lc)
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
	bw          *bufio.Writer
	pool        *sync.Pool
	header      http.Header
	wroteHeader bool
	err         error
}

// newConnWriter writes on c through a buffer of pool, taken only while
// the answer is written.
func newConnWriter(c net.Conn, pool *sync.Pool) *connWriter {
	bw, _ := pool.Get().(*bufio.Writer)
	if bw == nil {
		bw = bufio.NewWriterSize(nil, 4<<10)
	}
	bw.Reset(c)
	return &connWriter{bw: bw, pool: pool, header: http.Header{}}
}

func (cw *connWriter) Header() http.Header { return cw.header }

func (cw *connWriter) WriteHeader(code int) {
	if cw.wroteHeader {
		return
	}
	cw.wroteHeader = true
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
	cw.bw.Reset(nil)
	cw.pool.Put(cw.bw)
	cw.bw = nil
	if cw.err != nil {
		return errors.Join(errClientGone, cw.err)
	}
	return nil
}

var errClientGone = errors.New("writing the answer of a parked read")
