package imapd

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/sendtest"
)

// remoteListener makes its connections look as if they came from another
// machine (a documentation address): the test listens on loopback only.
type remoteListener struct{ net.Listener }

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c}, nil
}

type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000} }

// tlsDevice is a device whose server has TLS from a throwaway CA, on three
// listeners: the plain port (STARTTLS), the implicit TLS port, and the
// plain port as a client on another machine sees it.
type tlsDevice struct {
	*device
	ca              *sendtest.CA
	tlsAddr, remote string
}

func newTLSDevice(t *testing.T, r *rig) *tlsDevice {
	t.Helper()
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	d := r.deviceWith("tls", Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	serve := func(f func(net.Listener) error, wrap func(net.Listener) net.Listener) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); f(wrap(ln)) }()
		t.Cleanup(func() { d.srv.Close(); <-done })
		return ln.Addr().String()
	}
	same := func(ln net.Listener) net.Listener { return ln }
	return &tlsDevice{device: d, ca: ca,
		tlsAddr: serve(d.srv.ServeTLS, same),
		remote:  serve(d.srv.Serve, func(ln net.Listener) net.Listener { return remoteListener{ln} }),
	}
}

func (d *tlsDevice) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: d.ca.Pool, ServerName: "localhost"}
}

// TestIMAPTLS: with Config.TLS the server speaks TLS from the first byte
// on ServeTLS's port and offers STARTTLS on Serve's; a client on another
// machine sees LOGINDISABLED and gets NO [PRIVACYREQUIRED] for a login in
// the clear, without the password being checked, and logs in after
// STARTTLS; a client on this machine may still log in in the clear.
func TestIMAPTLS(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	pos := r.Deliver([]byte(messages["plain"]))
	d := newTLSDevice(t, r)
	d.synced(pos)

	caps := func(c *imapclient.Client) imap.CapSet {
		t.Helper()
		cs, err := c.Capability().Wait()
		if err != nil {
			t.Fatalf("CAPABILITY: %v", err)
		}
		return cs
	}
	use := func(name string, c *imapclient.Client, err error, want, unwanted []imap.Cap) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: dialling: %v", name, err)
		}
		defer c.Close()
		cs := caps(c)
		for _, w := range want {
			if !cs.Has(w) {
				t.Errorf("%s: capabilities %v lack %s", name, cs, w)
			}
		}
		for _, u := range unwanted {
			if cs.Has(u) {
				t.Errorf("%s: capabilities %v have %s", name, cs, u)
			}
		}
		if err := c.Login("alice", testPassword).Wait(); err != nil {
			t.Fatalf("%s: login: %v", name, err)
		}
		if data := mustSelect(t, c, "INBOX"); data.NumMessages != 1 {
			t.Errorf("%s: INBOX has %d messages, want 1", name, data.NumMessages)
		}
	}
	opts := &imapclient.Options{TLSConfig: d.clientTLS()}
	c, err := imapclient.DialTLS(d.tlsAddr, opts)
	use("implicit TLS", c, err, []imap.Cap{"AUTH=PLAIN"}, []imap.Cap{imap.CapStartTLS, imap.CapLoginDisabled})
	c, err = imapclient.DialStartTLS(d.addr, opts)
	use("STARTTLS", c, err, []imap.Cap{"AUTH=PLAIN"}, []imap.Cap{imap.CapStartTLS, imap.CapLoginDisabled})
	c, err = imapclient.DialStartTLS(d.remote, opts)
	use("STARTTLS from another machine", c, err, []imap.Cap{"AUTH=PLAIN"}, []imap.Cap{imap.CapStartTLS, imap.CapLoginDisabled})
	c, err = imapclient.DialInsecure(d.addr, nil)
	use("in the clear from this machine", c, err, []imap.Cap{imap.CapStartTLS, "AUTH=PLAIN"}, []imap.Cap{imap.CapLoginDisabled})

	// In the clear from another machine: LOGINDISABLED, and a login is
	// refused however right, before its password is looked at.
	c, err = imapclient.DialInsecure(d.remote, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cs := caps(c)
	if !cs.Has(imap.CapLoginDisabled) || !cs.Has(imap.CapStartTLS) || cs.Has("AUTH=PLAIN") {
		t.Errorf("in the clear from another machine: capabilities %v, want STARTTLS and LOGINDISABLED without AUTH=PLAIN", cs)
	}
	for _, pw := range []string{testPassword, "wrong"} {
		err := c.Login("alice", pw).Wait()
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodePrivacyRequired {
			t.Errorf("login in the clear from another machine: %v, want NO [PRIVACYREQUIRED]", err)
		}
	}
}

// TestIMAPStartTLSScripted drives STARTTLS by hand: the greeting lists
// STARTTLS, STARTTLS after login or with arguments is refused, and a
// command sent in the clear right behind STARTTLS is never run (it is
// taken for the start of the TLS handshake, which fails).
func TestIMAPStartTLSScripted(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := newTLSDevice(t, r)
	dial := func(addr string) (net.Conn, *bufio.Reader) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		return conn, bufio.NewReader(conn)
	}
	line := func(br *bufio.Reader) string {
		t.Helper()
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading: %v (got %q)", err, l)
		}
		return l
	}

	conn, br := dial(d.remote)
	if g := line(br); !strings.Contains(g, " STARTTLS") || !strings.Contains(g, " LOGINDISABLED") || strings.Contains(g, "AUTH=") {
		t.Errorf("greeting to another machine %q, want STARTTLS and LOGINDISABLED, no AUTH=", g)
	}
	conn.Write([]byte("a STARTTLS now\r\n"))
	if l := line(br); !strings.HasPrefix(l, "a BAD ") {
		t.Errorf("STARTTLS with an argument: %q, want BAD", l)
	}
	conn.Write([]byte("b STARTTLS\r\nc LOGIN alice \"" + testPassword + "\"\r\n"))
	if l := line(br); !strings.HasPrefix(l, "b OK ") {
		t.Fatalf("STARTTLS: %q, want OK", l)
	}
	rest, _ := br.ReadString('\n')
	if strings.Contains(rest, "c OK") || strings.Contains(rest, "c NO") {
		t.Errorf("a command pipelined after STARTTLS was run in the clear: %q", rest)
	}

	// STARTTLS once logged in, and on the implicit TLS port.
	conn, br = dial(d.addr)
	line(br)
	conn.Write([]byte("a LOGIN alice \"" + testPassword + "\"\r\n"))
	for l := line(br); !strings.HasPrefix(l, "a "); l = line(br) {
	}
	conn.Write([]byte("b STARTTLS\r\n"))
	if l := line(br); !strings.HasPrefix(l, "b BAD ") {
		t.Errorf("STARTTLS after login: %q, want BAD", l)
	}
	tc, err := tls.Dial("tcp", d.tlsAddr, d.clientTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	tbr := bufio.NewReader(tc)
	if g := line(tbr); strings.Contains(g, "STARTTLS") || !strings.Contains(g, " AUTH=PLAIN") {
		t.Errorf("greeting over TLS %q, want AUTH=PLAIN and no STARTTLS", g)
	}
	tc.Write([]byte("a STARTTLS\r\n"))
	if l := line(tbr); !strings.HasPrefix(l, "a BAD ") {
		t.Errorf("STARTTLS over TLS: %q, want BAD", l)
	}
}
