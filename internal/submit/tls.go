package submit

import (
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"time"

	"cspool/internal/smtpdata"
)

// tlsConn sits between go-smtp and the message reader and does TLS for the
// server (RFC 3207, RFC 8314): go-smtp is told nothing of it, since the
// reader below must read above the TLS layer (the library would upgrade
// the connection under it). It answers STARTTLS itself, adds STARTTLS to
// the EHLO reply while it is offered, and leaves AUTH out of it while a
// login needs TLS first; session.Auth refuses such a login unchecked. It
// also answers an AUTH response that is not base64 501 in place of
// go-smtp's 454 (errNotBase64Line), and names the size limit in go-smtp's
// 552 (libraryTooLargeLine).
//
// go-smtp hands it one command line per Read (smtpdata.Conn) and writes
// one reply line per Write (textproto flushes each line).
type tlsConn struct {
	*smtpdata.Conn
	// raw is the connection as accepted, which STARTTLS never replaces:
	// its deadlines are those of the TLS connection put on it.
	raw net.Conn

	mu             sync.Mutex
	startTLS       *tls.Config // STARTTLS is offered (nil: not, or done)
	secure         bool        // TLS from the first byte, or after STARTTLS
	cleartextLogin bool        // a login is taken without TLS
	ehlo           bool        // the reply being written is EHLO's
	authed         bool        // a login succeeded: STARTTLS is refused

	tooLarge []byte // tlsListener.tooLarge

	// Writes, go-smtp's reply lines and bye's, one at a time.
	wmu      sync.Mutex
	midReply bool // the last line written was not a reply's last

	// Read state, used by go-smtp's reading goroutine only.
	midLine bool // the last Read ended inside a line
}

// tlsListener wraps each connection in a smtpdata.Conn and a tlsConn.
// tls, if set, is offered with STARTTLS on connections that are not TLS
// already; requireTLS refuses logins without TLS from a client that is not
// on a loopback address.
type tlsListener struct {
	net.Listener
	tls        *tls.Config
	requireTLS bool
	tooLarge   []byte // the reply line put in libraryTooLargeLine's place
}

func (l tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &tlsConn{Conn: smtpdata.NewConn(c), raw: c, tooLarge: l.tooLarge}
	_, tc.secure = c.(*tls.Conn)
	if !tc.secure {
		tc.startTLS = l.tls
	}
	a, ok := c.RemoteAddr().(*net.TCPAddr)
	tc.cleartextLogin = !l.requireTLS || (ok && a.IP.IsLoopback())
	return tc, nil
}

// Close closes the connection as it is, TLS once STARTTLS put it on. It
// is called from other goroutines than the one reading (go-smtp's
// Server.Close at the daemon's stop), which makes that swap, under mu
// (TestCloseBesideSTARTTLS). Not under wmu: a write may wait there for a
// stalled handshake, and Close is what ends it.
func (c *tlsConn) Close() error {
	c.mu.Lock()
	conn := c.Conn.Conn
	c.mu.Unlock()
	return conn.Close()
}

// Read hands go-smtp the next command line, answering STARTTLS here.
func (c *tlsConn) Read(p []byte) (int, error) {
	for {
		if c.Conn.InChunk() {
			// A BDAT chunk's bytes, never commands. smtpdata.Conn
			// counts them as go-smtp does: this layer counted them
			// itself, also after a BDAT go-smtp refused unread
			// ("BDAT 10 FOO"), and took the command lines after it
			// for data, a STARTTLS among them.
			return c.Conn.Read(p)
		}
		n, err := c.Conn.Read(p)
		whole := !c.midLine && n > 0 && p[n-1] == '\n'
		c.midLine = n > 0 && p[n-1] != '\n'
		line := strings.TrimRight(string(p[:n]), "\r\n")
		c.mu.Lock()
		offered, authed := c.startTLS, c.authed
		c.mu.Unlock()
		verb, _, _ := strings.Cut(line, " ")
		switch {
		case !whole:
		case strings.EqualFold(verb, "EHLO"):
			c.mu.Lock()
			c.ehlo = true
			c.mu.Unlock()
		case strings.EqualFold(line, "STARTTLS") && offered != nil:
			if authed {
				if _, err := c.Conn.Write([]byte("503 5.5.1 STARTTLS is not allowed after AUTH\r\n")); err != nil {
					return 0, err
				}
				continue
			}
			c.wmu.Lock()
			if _, err := c.Conn.Write([]byte("220 2.0.0 Ready to start TLS\r\n")); err != nil {
				c.wmu.Unlock()
				return 0, err
			}
			c.mu.Lock()
			c.Conn.StartTLS(offered)
			c.startTLS, c.secure = nil, true
			c.mu.Unlock()
			c.wmu.Unlock()
			// The client starts again with EHLO (RFC 3207 section 4.2),
			// which resets go-smtp's transaction.
			continue
		}
		return n, err
	}
}

// Write passes go-smtp's reply lines on, with the EHLO reply's
// capabilities adjusted to TLS.
func (c *tlsConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	out := p
	switch {
	case bytes.Equal(p, errNotBase64Line):
		out = notBase64Reply
	case bytes.Equal(p, libraryTooLargeLine) && c.tooLarge != nil:
		out = c.tooLarge
	}
	if c.ehlo {
		switch {
		case bytes.Equal(p, []byte("250-CHUNKING\r\n")) && c.startTLS != nil:
			out = []byte("250-CHUNKING\r\n250-STARTTLS\r\n")
		case bytes.HasPrefix(p, []byte("250-AUTH ")) && !c.secure && !c.cleartextLogin:
			out = nil
		case bytes.HasPrefix(p, []byte("250 ")):
			c.ehlo = false
		}
	}
	c.mu.Unlock()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(out) > 0 {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
	}
	c.midReply = len(p) > 3 && p[3] == '-' || len(p) > 0 && p[len(p)-1] != '\n'
	return len(p), nil
}

// errNotBase64Line is go-smtp's reply to an AUTH response, initial or
// after a 334, that is not base64: 454 4.7.0, a temporary failure, which a
// client tries again. go-smtp writes it itself (handleAuth), before the
// session sees the response, and writes it for nothing else; RFC 4954
// section 4 asks for 501 ("If the server cannot BASE64 decode any client
// response, it MUST reject the AUTH command with a 501 error"), and its
// section 6 names 5.5.2 for it.
var errNotBase64Line = []byte("454 4.7.0 Invalid base64 data\r\n")

// libraryTooLargeLine is go-smtp's reply to a MAIL whose SIZE, or a BDAT
// whose chunks, go over the limit (it writes it itself, before the
// session sees the command): it does not say what the limit is. Write
// puts the session's reply in its place (errTooLarge).
var libraryTooLargeLine = []byte("552 5.3.4 Max message size exceeded\r\n")

// notBase64Reply is what Write puts in errNotBase64Line's place.
var notBase64Reply = []byte("501 5.5.2 Cannot decode the response: it is not base64 (RFC 4954 section 4)\r\n")

// byeWriteTimeout bounds the write of a 421 the server sends on its own.
const byeWriteTimeout = 5 * time.Second

// bye ends a connection the login guard let wait no longer: line, a 421
// reply, unless go-smtp is in the middle of a reply of several lines,
// then the connection closes (RFC 5321 section 3.8).
func (c *tlsConn) bye(line string) {
	// Reads too, and before the lock: on a TLS connection whose
	// handshake has not ended, a write (the greeting, under the lock)
	// first waits for the handshake, which reads from the client; a
	// client that stalled it held the lock, and the connection, for
	// good, past the guard's limits (TestStalledTLSHandshakeEnded).
	// On the accepted connection: the TLS one STARTTLS puts on it is
	// made under the lock.
	c.raw.SetDeadline(time.Now().Add(byeWriteTimeout))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.midReply {
		c.Conn.Write([]byte(line + "\r\n"))
	}
	c.Conn.Close()
}

// loginAllowed reports whether a login may be checked on this connection.
func (c *tlsConn) loginAllowed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.secure || c.cleartextLogin
}

// loggedIn tells the connection a login succeeded.
func (c *tlsConn) loggedIn() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.authed = true
}
