// Package sendtest helps the tests of sending mail: a smarthost in the test
// process (go-smtp's server, with TLS from a test CA, optional AUTH and
// scripted replies). The device they file into is package devicetest's.
package sendtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// CA is a test certificate authority.
type CA struct {
	Pool *x509.CertPool
	File string // the CA certificate, PEM
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA whose certificate is written under dir.
func NewCA(t testing.TB, dir string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cspool test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{Pool: x509.NewCertPool(), cert: cert, key: key, File: filepath.Join(dir, "ca.pem")}
	ca.Pool.AddCert(cert)
	if err := os.WriteFile(ca.File, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// Leaf issues a server certificate for 127.0.0.1 and localhost, and writes
// it and its key as PEM files under dir (for Postfix).
func (ca *CA) Leaf(t testing.TB, dir string) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, certFile, keyFile
}

// Received is one message a Smarthost accepted.
type Received struct {
	From string
	To   []string
	Data []byte
	User string // who logged in ("" without AUTH)
}

// SmarthostOptions configure a Smarthost.
type SmarthostOptions struct {
	// ImplicitTLS serves TLS from the first byte (smtps); otherwise
	// STARTTLS is offered, unless NoTLS.
	ImplicitTLS, NoTLS bool
	// Cert is the server's certificate; the CA's leaf when zero.
	Cert *tls.Certificate
	// User and Password, when set, are required (AUTH PLAIN).
	User, Password string
	// Reply, when set, may refuse a stage: "MAIL", "RCPT" (arg: the
	// address) or "DATA" (after the message was read). A nil return
	// accepts.
	Reply func(stage, arg string) error
	// AfterData, when set, runs after a message was recorded as received
	// and before the 250 is sent (a test may block there).
	AfterData func()
	// No8BitMIME leaves 8BITMIME out of the EHLO reply (go-smtp always
	// offers it); only with ImplicitTLS (the line is taken out above the
	// TLS layer, which STARTTLS would put above it).
	No8BitMIME bool
	// NoSMTPUTF8 leaves SMTPUTF8 out of the EHLO reply (RFC 6531).
	NoSMTPUTF8 bool
}

// Smarthost is an SMTP server in the test process standing for the user's
// provider.
type Smarthost struct {
	Addr string
	CA   *CA

	opts SmarthostOptions
	srv  *smtp.Server
	mu   sync.Mutex
	got  []Received
}

// NewSmarthost starts a smarthost on 127.0.0.1; it stops at the test's end.
func NewSmarthost(t testing.TB, ca *CA, opts SmarthostOptions) *Smarthost {
	t.Helper()
	h := &Smarthost{CA: ca, opts: opts}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &hostSession{h: h}, nil }))
	srv.Domain = "smarthost.test"
	srv.EnableSMTPUTF8 = !opts.NoSMTPUTF8
	srv.EnableDSN = true
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	srv.MaxMessageBytes = 64 << 20
	srv.ErrorLog = discardLog{}
	if !opts.NoTLS {
		cert := opts.Cert
		if cert == nil {
			c, _, _ := ca.Leaf(t, t.TempDir())
			cert = &c
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	var ln net.Listener
	var err error
	if opts.ImplicitTLS {
		ln, err = tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	if opts.No8BitMIME {
		if !opts.ImplicitTLS {
			t.Fatal("sendtest: No8BitMIME needs ImplicitTLS")
		}
		ln = no8BitListener{ln}
	}
	h.Addr, h.srv = ln.Addr().String(), srv
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

// no8BitListener's connections write the EHLO reply without 8BITMIME.
type no8BitListener struct{ net.Listener }

func (l no8BitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return no8BitConn{c}, nil
}

type no8BitConn struct{ net.Conn }

func (c no8BitConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(bytes.ReplaceAll(p, []byte("250-8BITMIME\r\n"), nil)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Received returns the messages accepted so far.
func (h *Smarthost) Received() []Received {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Received(nil), h.got...)
}

// Wait waits (at most d) until n messages were accepted and returns them.
func (h *Smarthost) Wait(t testing.TB, n int, d time.Duration) []Received {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if got := h.Received(); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("smarthost: %d messages after %v, want %d", len(h.Received()), d, n)
		}
	}
}

type hostSession struct {
	h    *Smarthost
	user string
	from string
	to   []string
}

func (s *hostSession) AuthMechanisms() []string {
	if s.h.opts.User == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *hostSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.h.opts.User || pass != s.h.opts.Password {
			return smtp.ErrAuthFailed
		}
		s.user = user
		return nil
	}), nil
}

func (s *hostSession) reply(stage, arg string) error {
	if s.h.opts.Reply == nil {
		return nil
	}
	return s.h.opts.Reply(stage, arg)
}

func (s *hostSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.h.opts.User != "" && s.user == "" {
		return smtp.ErrAuthRequired
	}
	s.from, s.to = from, nil
	return s.reply("MAIL", from)
}

func (s *hostSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := s.reply("RCPT", to); err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *hostSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := s.reply("DATA", ""); err != nil {
		return err
	}
	s.h.mu.Lock()
	s.h.got = append(s.h.got, Received{From: s.from, To: append([]string(nil), s.to...), Data: b, User: s.user})
	s.h.mu.Unlock()
	if s.h.opts.AfterData != nil {
		s.h.opts.AfterData()
	}
	return nil
}

func (s *hostSession) Reset()        { s.from, s.to = "", nil }
func (s *hostSession) Logout() error { return nil }

type discardLog struct{}

func (discardLog) Printf(string, ...any) {}
func (discardLog) Println(...any)        {}
