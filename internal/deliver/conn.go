package deliver

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/smtpdata"
)

// CommandLineLimit is the longest LMTP command line accepted, in octets
// including the CRLF. RFC 5321 section 4.5.3.1.4 allows 512 octets, more
// with service extensions: a MAIL FROM with a 256-octet path (section
// 4.5.3.1.3) and SIZE, BODY, SMTPUTF8, RET, ENVID and AUTH parameters, or a
// RCPT TO with ORCPT (RFC 3461), stays well under 2000. A longer line gets
// "500 5.4.0" and the connection is closed. It does not apply to message
// content, whose lines may be of any length.
const CommandLineLimit = 4096

// lmtpListener hands go-smtp the connections that fit within the
// connection caps, each wrapped in an lmtpConn. A connection over a cap is
// answered with 421 in place of the greeting (RFC 5321 section 3.1) and
// closed, so the mail transfer agent keeps its mail queued and retries.
type lmtpListener struct {
	net.Listener
	l *LMTP

	mu      sync.Mutex
	total   int
	perAddr map[string]int
	conns   map[*lmtpConn]struct{}

	lastRefusalLog atomic.Int64 // Unix nanoseconds
	refused        atomic.Int64 // since the last log line
}

func newLMTPListener(ln net.Listener, l *LMTP) *lmtpListener {
	return &lmtpListener{Listener: ln, l: l, perAddr: map[string]int{}, conns: map[*lmtpConn]struct{}{}}
}

func (ln *lmtpListener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		host := remoteHost(c)
		if why := ln.admit(host); why != "" {
			ln.refuse(c, why)
			continue
		}
		lc := newLMTPConn(c, &ln.l.closing, nil)
		lc.leave = func() { ln.leave(host, lc) }
		ln.track(lc)
		return lc, nil
	}
}

// admit counts a new connection from host, or says which cap it is over.
func (ln *lmtpListener) admit(host string) string {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	switch {
	case ln.total >= ln.l.opts.MaxConns:
		return "too many connections"
	case ln.perAddr[host] >= ln.l.opts.MaxConnsPerAddr:
		return "too many connections from your address"
	}
	ln.total++
	ln.perAddr[host]++
	return ""
}

// track records c as open, for interruptAll.
func (ln *lmtpListener) track(c *lmtpConn) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	ln.conns[c] = struct{}{}
}

// interruptAll ends the wait for a command line of every open connection
// that is not reading or delivering a message; Shutdown calls it after
// setting closing, so those that are end after their replies.
func (ln *lmtpListener) interruptAll() {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	for c := range ln.conns {
		c.interrupt()
	}
}

func (ln *lmtpListener) leave(host string, c *lmtpConn) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	delete(ln.conns, c)
	ln.total--
	if ln.perAddr[host]--; ln.perAddr[host] <= 0 {
		delete(ln.perAddr, host)
	}
}

// refuse answers c with 421 and closes it. The reply is one short write to
// a fresh socket; the deadline only guards against a peer that is gone.
func (ln *lmtpListener) refuse(c net.Conn, why string) {
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = fmt.Fprintf(c, "421 4.4.5 %s %s, try again later\r\n", ln.l.opts.Hostname, why)
	_ = c.Close()
	// One log line a second at most, with the count since the last one.
	n := ln.refused.Add(1)
	now := time.Now().UnixNano()
	last := ln.lastRefusalLog.Load()
	if now-last >= int64(time.Second) && ln.lastRefusalLog.CompareAndSwap(last, now) {
		ln.refused.Add(-n)
		ln.l.log.Warn("lmtp connections refused", "reason", why, "count", n,
			"max_conns", ln.l.opts.MaxConns, "max_conns_per_addr", ln.l.opts.MaxConnsPerAddr)
	}
}

// remoteHost is the address a connection counts against for
// MaxConnsPerAddr: the IPv4 address, or the /64 of an IPv6 address (one
// host's share of a network), as for the HTTP API's connections.
func remoteHost(c net.Conn) string {
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	switch {
	case !ok:
		return c.RemoteAddr().String()
	case a.IP.To4() != nil:
		return a.IP.To4().String()
	}
	return a.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// lmtpConn is the connection go-smtp reads from (smtpdata.Conn: the
// session reads the message after DATA itself), which also leaves the
// connection caps when closed.
//
// It also lets Shutdown end the connection between transactions: go-smtp
// sets a read deadline before it reads each command line, and once the
// server is closing that deadline is made one in the past, so the read
// ends at once and go-smtp answers 421 and closes the connection. While
// the session reads and delivers a message (inData) nothing is cut short:
// the message the client has sent gets its replies, and the read after
// them is the one that ends.
type lmtpConn struct {
	*smtpdata.Conn
	closeOnce sync.Once
	leave     func()
	closing   *atomic.Bool // the server's: set when Shutdown begins

	mu     sync.Mutex
	inData bool
}

func newLMTPConn(c net.Conn, closing *atomic.Bool, leave func()) *lmtpConn {
	return &lmtpConn{Conn: smtpdata.NewConn(c), closing: closing, leave: leave}
}

// SetReadDeadline is t, or the past once the server is closing and no
// message is being read.
func (c *lmtpConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing.Load() && !c.inData {
		t = time.Unix(1, 0)
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline is SetReadDeadline's rule for reads, t for writes.
func (c *lmtpConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// dataStart marks the start of a message's reading and delivery; the
// command line before it may have been read under a deadline Shutdown
// cut, so the read deadline is set again to d from now.
func (c *lmtpConn) dataStart(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inData = true
	_ = c.Conn.SetReadDeadline(time.Now().Add(d))
}

// dataEnd marks its end.
func (c *lmtpConn) dataEnd() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inData = false
}

// interrupt ends a wait for the next command line, when the connection
// is in one (closing is already set).
func (c *lmtpConn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.inData {
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

func (c *lmtpConn) Close() error {
	c.closeOnce.Do(c.leave)
	return c.Conn.Close()
}
