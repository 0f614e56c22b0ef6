package api

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// excessGrace bounds how long a connection over its address's limit stays
// open: time to read one request and answer it 429.
const excessGrace = 5 * time.Second

// maxExcessConns bounds the connections over their address's limit being
// answered at once; while that many are open, a further one is closed
// without an answer.
const maxExcessConns = 64

// Listener returns ln with the connections of each client address bounded
// by Config.MaxConnsPerAddr. An address is an IPv4 address or an IPv6 /64
// (one host's share of a network). A connection beyond the bound is
// answered once, 429 with "Connection: close", and closed within 5 s; while
// 64 such connections are open, further ones are closed without an answer.
// Connections that are not TCP are not limited. Behind a proxy every
// connection comes from the proxy's address: raise the limit or turn it off.
//
// The listener also lets the server slow down an address that collects
// refusals (Config.RefusalRate): beyond the rate, the answer to each further
// request refused before its signature was checked, or over its caller's
// share, is held for up to 2 s, so that one address holding its 64
// connections gets a few dozen refusals a second, not thousands.
//
// Give Listener the plain TCP listener; for TLS, ListenerTLS.
//
// Served over HTTP/1.1 through this listener, a read that long-polls
// leaves net/http while it waits (park.go): once answered, its connection
// comes back through Accept, as a new connection to the HTTP server.
func (s *Server) Listener(ln net.Listener) net.Listener {
	l := &limitedListener{Listener: ln, l: s.conns, back: make(chan net.Conn), done: make(chan struct{}), log: s.log, failedTLS: s.failedTLS}
	s.parking.Store(true)
	return l
}

// ListenerTLS is Listener serving TLS with config, HTTP/1.1 only (ALPN
// "http/1.1"). TLS is under the limiter's connection, not above it as
// http.Server.ServeTLS would put it, so that a read that long-polls over
// TLS parks as one over plain HTTP does: it holds its connection and its
// TLS state, not net/http's buffers and goroutines (about 70 KB a device
// before). net/http sees a plain connection, and r.TLS is nil: serve the
// listener with http.Server.Serve (ServesTLS tells).
//
// A connection's handshake is made by its first read, under the read
// deadline net/http sets for a request's header, and its writes under a
// deadline as long. A client that speaks plain HTTP to it gets the answer a
// Go HTTPS server gives (400, "Client sent an HTTP request to an HTTPS
// server"); a failed handshake is logged at warning level, as net/http's
// server logs it, at most refusalLogsPerSecond a second, the next line
// saying how many were left out.
func (s *Server) ListenerTLS(ln net.Listener, config *tls.Config) net.Listener {
	l := s.Listener(ln).(*limitedListener)
	l.tls = config.Clone()
	l.tls.NextProtos = []string{"http/1.1"}
	return l
}

// ServesTLS reports whether ln is a listener of ListenerTLS.
func ServesTLS(ln net.Listener) bool {
	l, ok := ln.(*limitedListener)
	return ok && l.tls != nil
}

// connLimiter counts the open connections of each address, and slows down
// the refusals of an address that collects too many (refusalWait).
type connLimiter struct {
	max         int           // <= 0: no limit
	refusalRate float64       // per second; <= 0: refusals are never delayed
	writeStall  time.Duration // the longest one write waits for its client (Config.WriteStall)

	mu     sync.Mutex
	open   map[string]*addrState // address -> its admitted connections
	excess map[string]bool       // remote ip:port of each connection over its limit
	// resting: addresses with no connection open whose refusals have not
	// yet been paid back (their bucket is not full), kept so that a client
	// that closes each connection after its refusal, and opens the next,
	// meets the rate it ran into rather than a fresh burst; swept (sweep)
	// once their buckets are full.
	resting map[string]*addrState
	swept   time.Time // the last sweep of resting
}

// addrState is what the limiter knows of an address while it has admitted
// connections open, and, while it owes refusals, a moment longer (resting).
type addrState struct {
	conns    int
	refusals *rate.Limiter // made at the address's first refusal
}

func newConnLimiter(perAddr int, refusalRate float64, writeStall time.Duration) *connLimiter {
	return &connLimiter{max: perAddr, refusalRate: refusalRate, writeStall: writeStall, open: map[string]*addrState{}, excess: map[string]bool{},
		resting: map[string]*addrState{}}
}

// limitedListener admits the connections of its listener, and gives the
// HTTP server back those of answered parked reads (resume).
type limitedListener struct {
	net.Listener
	l   *connLimiter
	tls *tls.Config // ListenerTLS; nil: plain
	log *slog.Logger
	// failedTLS thins out the log lines of failed handshakes: anyone who
	// reaches the port can fail one, thousands a second.
	failedTLS *logSampler

	start    sync.Once
	accepted chan acceptResult // from the goroutine that accepts
	back     chan net.Conn     // connections of parked reads, answered
	done     chan struct{}     // closed by Close
	closing  sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

// Accept returns the next connection admitted, or one given back by resume.
func (ln *limitedListener) Accept() (net.Conn, error) {
	ln.start.Do(func() {
		ln.accepted = make(chan acceptResult)
		go ln.acceptLoop()
	})
	select {
	case c := <-ln.back:
		return c, nil
	case a := <-ln.accepted:
		return a.c, a.err
	case <-ln.done:
		return nil, net.ErrClosed
	}
}

// acceptLoop accepts from the listener until it is closed, handing each
// admitted connection, or each error, to Accept.
func (ln *limitedListener) acceptLoop() {
	for {
		c, err := ln.Listener.Accept()
		var a acceptResult
		switch {
		case err != nil:
			a.err = err
		default:
			if a.c = ln.l.admit(c, ln); a.c == nil {
				c.Close()
				continue
			}
		}
		select {
		case ln.accepted <- a:
		case <-ln.done:
			if a.c != nil {
				a.c.Close()
			}
			return
		}
		if errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

// resume gives c back to the HTTP server, or closes it if the listener is
// closed.
func (ln *limitedListener) resume(c net.Conn) {
	select {
	case ln.back <- c:
	case <-ln.done:
		c.Close()
	}
}

func (ln *limitedListener) Close() error {
	ln.closing.Do(func() { close(ln.done) })
	return ln.Listener.Close()
}

// admit returns c counted against its address, marked excess if the
// address is at its limit, or nil if c is to be closed at once. A
// connection that is not TCP, or any with the limit off, is not counted.
func (l *connLimiter) admit(c net.Conn, ln *limitedListener) net.Conn {
	key := addrKey(c.RemoteAddr())
	lc := &limitedConn{Conn: c, l: l, ln: ln, key: key, remote: c.RemoteAddr().String()}
	if ln != nil && ln.tls != nil {
		lc.hs = tls.Server(c, ln.tls)
		lc.Conn = lc.hs
	}
	if key == "" || l.max <= 0 {
		lc.key = ""
		return lc
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.open[key]
	if a == nil {
		if a = l.resting[key]; a != nil {
			delete(l.resting, key)
		} else {
			a = &addrState{}
		}
		l.open[key] = a
	}
	if a.conns < l.max {
		a.conns++
		return lc
	}
	if len(l.excess) >= maxExcessConns {
		return nil
	}
	l.excess[lc.remote] = true
	lc.excessUntil = time.Now().Add(excessGrace)
	c.SetDeadline(lc.excessUntil)
	return lc
}

func (l *connLimiter) release(c *limitedConn) {
	if c.key == "" {
		return // not counted
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !c.excessUntil.IsZero() {
		delete(l.excess, c.remote)
		return
	}
	if a := l.open[c.key]; a != nil {
		if a.conns--; a.conns <= 0 {
			delete(l.open, c.key)
			now := time.Now()
			l.sweep(now)
			if owes(a, now) {
				l.resting[c.key] = a
			}
		}
	}
}

// owes reports whether a's refusals have taken tokens not yet given back.
func owes(a *addrState, now time.Time) bool {
	return a.refusals != nil && a.refusals.TokensAt(now) < float64(a.refusals.Burst())
}

// sweep forgets, at most once a second, the resting addresses that owe
// nothing any more. A bucket owes at most maxRefusalDelay of refusals
// beyond its burst, so it is full again refusalBurst seconds after that
// (4 s): resting holds only addresses refused in the last few seconds.
func (l *connLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < time.Second {
		return
	}
	l.swept = now
	for key, a := range l.resting {
		if !owes(a, now) {
			delete(l.resting, key)
		}
	}
}

// isExcess reports whether the connection with this remote address is over
// its address's limit (its request gets 429).
func (l *connLimiter) isExcess(remote string) bool {
	if l.max <= 0 {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.excess[remote]
}

// counts returns the connections admitted and those being refused.
func (l *connLimiter) counts() (open, excess int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.open {
		open += a.conns
	}
	return open, len(l.excess)
}

// refusalDelay counts one refusal of the address of the connection with
// this remote address, and returns how long to hold its answer.
func (l *connLimiter) refusalDelay(remote string, now time.Time) time.Duration {
	if l.max <= 0 || l.refusalRate <= 0 {
		return 0
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return 0
	}
	key := addrKey(net.TCPAddrFromAddrPort(ap))
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.open[key]
	if a == nil || l.excess[remote] {
		return 0 // a connection over the limit is answered at once and closed
	}
	if a.refusals == nil {
		a.refusals = rate.NewLimiter(rate.Limit(l.refusalRate), max(1, int(l.refusalRate*refusalBurst)))
	}
	return refusalWait(a.refusals, now)
}

// refusalBurst is how many refusals beyond the rate an address gets
// answered at once, in seconds of the rate; maxRefusalDelay caps the wait.
const (
	refusalBurst    = 2
	maxRefusalDelay = 2 * time.Second
)

// refusalWait takes one refusal's token from the address's bucket (rate a
// second, up to refusalBurst seconds' worth saved) and returns how long
// its answer waits for it. A wait that would reach maxRefusalDelay is not
// taken on (the token is put back) and the answer waits maxRefusalDelay,
// so the debt stops growing there and an address holding n connections
// gets at most rate plus n/maxRefusalDelay refusals a second.
func refusalWait(bucket *rate.Limiter, now time.Time) time.Duration {
	r := bucket.ReserveN(now, 1)
	if d := r.DelayFrom(now); d < maxRefusalDelay {
		return d
	}
	r.CancelAt(now)
	return maxRefusalDelay
}

// addrKey is the address a TCP connection counts against: the IPv4
// address, or the /64 of an IPv6 address; "" for other connections.
func addrKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return ""
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// limitedConn is a counted connection. The deadlines of one over its limit
// never reach past excessUntil, whatever the HTTP server asks for. Each
// write waits at most the limiter's writeStall for the client to take
// bytes, and never past the write deadline set (writeBy).
type limitedConn struct {
	net.Conn
	l           *connLimiter
	ln          *limitedListener // that accepted it: where a parked read's connection goes back
	key, remote string           // key "": not counted
	excessUntil time.Time        // zero for a connection within the limit
	once        sync.Once
	// pending are bytes read from the connection before it was given back
	// to the HTTP server (park.go serveNext), which reads them first.
	pending []byte
	// writeBy is the write deadline set (SetWriteDeadline, SetDeadline),
	// in Unix nanoseconds; 0: none.
	writeBy atomic.Int64
	// hs is the connection's TLS (ListenerTLS) until its first Read has
	// made the handshake; nil after, and on a plain connection.
	hs *tls.Conn
}

// Write writes b, waiting at most writeStall for the client to take it:
// a client that stops reading an answer (a checkpoint, a read's entries)
// is cut off, and what the answer holds let go, instead of being held for
// as long as it keeps the connection open.
//
// A large write (a checkpoint, a large message's entry, handed over whole)
// goes in pieces of stallPiece bytes, each with its own wait: the client
// has to take stallPiece bytes a writeStall, not the whole answer.
func (c *limitedConn) Write(b []byte) (int, error) {
	if c.l == nil || c.l.writeStall <= 0 {
		return c.Conn.Write(b)
	}
	n := 0
	for {
		piece := b[n:min(len(b), n+stallPiece)]
		d := time.Now().Add(c.l.writeStall)
		if by := c.writeBy.Load(); by != 0 && by < d.UnixNano() {
			d = time.Unix(0, by)
		}
		c.Conn.SetWriteDeadline(c.clamp(d))
		m, err := c.Conn.Write(piece)
		n += m
		if err != nil || n >= len(b) {
			return n, err
		}
	}
}

// stallPiece is the most bytes one wait of writeStall covers.
const stallPiece = 256 << 10

// Read returns the pending bytes first, then reads the connection. Its
// first read of a TLS connection makes the handshake.
func (c *limitedConn) Read(b []byte) (int, error) {
	if c.hs != nil {
		if err := c.handshake(); err != nil {
			return 0, err
		}
	}
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// handshakeWrite bounds the handshake's writes: the time net/http gives a
// request's header to arrive (cmd/cspool's ReadHeaderTimeout).
const handshakeWrite = 30 * time.Second

// handshake makes the TLS handshake of c, under the read deadline set and
// a write deadline of handshakeWrite. A client that sent plain HTTP is
// answered 400, as net/http's TLS server answers it (the device's client
// recognises that answer, hint.go). A failed handshake is logged, and
// returned as a read error, on which net/http closes the connection.
func (c *limitedConn) handshake() error {
	tc := c.hs
	c.hs = nil
	tc.SetWriteDeadline(c.clamp(time.Now().Add(handshakeWrite)))
	err := tc.Handshake()
	by := time.Time{}
	if n := c.writeBy.Load(); n != 0 {
		by = time.Unix(0, n)
	}
	tc.SetWriteDeadline(c.clamp(by))
	if err == nil {
		return nil
	}
	reason := err.Error()
	var re tls.RecordHeaderError
	if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader[:]) {
		re.Conn.SetWriteDeadline(c.clamp(time.Now().Add(excessGrace)))
		io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\n"+plainHTTPToTLS+".\n")
		reason = "client sent an HTTP request to an HTTPS server"
	}
	if c.ln != nil && c.ln.log != nil {
		// Anyone who reaches the port can fail a handshake, each on a
		// connection of its own, as fast as it connects: before, every one
		// was logged, 6,500 lines a second from one client on loopback.
		if ok, left := c.ln.failedTLS.allow(time.Now()); ok {
			attrs := []any{"remote", c.remote, "reason", clip(reason)}
			if left > 0 {
				attrs = append(attrs, "similar_not_logged", left)
			}
			c.ln.log.Warn("TLS handshake failed", attrs...)
		}
	}
	return &net.OpError{Op: "read", Net: "tcp", Addr: c.LocalAddr(), Source: c.RemoteAddr(), Err: err}
}

// looksLikeHTTP reports whether the first five bytes a client sent, taken
// by TLS for a record header, are the start of an HTTP request.
func looksLikeHTTP(hdr []byte) bool {
	for _, m := range []string{"GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE", "TRACE"} {
		if string(hdr) == m {
			return true
		}
	}
	return false
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

// CloseWrite lets the HTTP server half-close the connection after its last
// answer, so that the client reads the answer rather than a reset.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (c *limitedConn) clamp(t time.Time) time.Time {
	if !c.excessUntil.IsZero() && (t.IsZero() || t.After(c.excessUntil)) {
		return c.excessUntil
	}
	return t
}

func (c *limitedConn) SetDeadline(t time.Time) error {
	c.setWriteBy(t)
	return c.Conn.SetDeadline(c.clamp(t))
}

func (c *limitedConn) SetReadDeadline(t time.Time) error { return c.Conn.SetReadDeadline(c.clamp(t)) }

func (c *limitedConn) SetWriteDeadline(t time.Time) error {
	c.setWriteBy(t)
	return c.Conn.SetWriteDeadline(c.clamp(t))
}

func (c *limitedConn) setWriteBy(t time.Time) {
	if t.IsZero() {
		c.writeBy.Store(0)
		return
	}
	c.writeBy.Store(t.UnixNano())
}
