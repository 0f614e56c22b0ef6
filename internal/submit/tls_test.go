package submit_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"cspool/internal/sendtest"
	"cspool/internal/submit"
)

// memQueue keeps what was submitted.
type memQueue struct {
	mu   sync.Mutex
	msgs []*submit.Message
}

func (q *memQueue) Enqueue(_ context.Context, m *submit.Message) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.msgs = append(q.msgs, m)
	return "q1", nil
}

func (q *memQueue) all() []*submit.Message {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*submit.Message(nil), q.msgs...)
}

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

// tlsRig is a submission server with TLS from a throwaway CA on three
// listeners: the plain port (STARTTLS), the implicit TLS port, and the
// plain port as a client on another machine sees it.
type tlsRig struct {
	q                      *memQueue
	client                 *tls.Config
	plain, implicit, other string
}

func newTLSRig(t *testing.T) *tlsRig {
	t.Helper()
	ca := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := ca.Leaf(t, t.TempDir())
	r := &tlsRig{q: &memQueue{}, client: &tls.Config{RootCAs: ca.Pool, ServerName: "localhost"}}
	srv, err := submit.New(submit.Config{User: user, Password: password, Identities: []string{"alice@example.org"},
		Queue: r.q, Hostname: "device.test", Logger: slog.New(slog.DiscardHandler),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	listen := func(serve func(net.Listener) error, wrap func(net.Listener) net.Listener) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); serve(wrap(ln)) }()
		return ln.Addr().String()
	}
	same := func(ln net.Listener) net.Listener { return ln }
	r.plain = listen(srv.Serve, same)
	r.implicit = listen(srv.ServeTLS, same)
	r.other = listen(srv.Serve, func(ln net.Listener) net.Listener { return remoteListener{ln} })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return r
}

const tlsMessage = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: over TLS\r\n\r\nSTARTTLS\r\nbody\r\n"

// TestSubmissionTLS: with Config.TLS, submission speaks TLS from the first
// byte on ServeTLS's port and offers STARTTLS on Serve's; a client on
// another machine is offered no AUTH before STARTTLS and gets 538 5.7.11
// for one, unchecked; a client on this machine may still log in in the
// clear.
func TestSubmissionTLS(t *testing.T) {
	r := newTLSRig(t)
	send := func(name string, c *smtp.Client, err error, wantStartTLS bool) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: dialling: %v", name, err)
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			t.Fatalf("%s: EHLO: %v", name, err)
		}
		if ok, _ := c.Extension("STARTTLS"); ok != wantStartTLS {
			t.Errorf("%s: STARTTLS offered %v, want %v", name, ok, wantStartTLS)
		}
		if ok, _ := c.Extension("AUTH"); !ok {
			t.Errorf("%s: no AUTH offered", name)
		}
		if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
			t.Fatalf("%s: AUTH: %v", name, err)
		}
		if err := c.SendMail("alice@example.org", []string{"bob@example.net"}, strings.NewReader(tlsMessage)); err != nil {
			t.Fatalf("%s: sending: %v", name, err)
		}
	}
	c, err := smtp.DialTLS(r.implicit, r.client)
	send("implicit TLS", c, err, false)
	c, err = smtp.DialStartTLS(r.plain, r.client)
	send("STARTTLS", c, err, false)
	c, err = smtp.DialStartTLS(r.other, r.client)
	send("STARTTLS from another machine", c, err, false)
	c, err = smtp.Dial(r.plain)
	send("in the clear from this machine", c, err, true)
	if got := r.q.all(); len(got) != 4 {
		t.Fatalf("%d messages queued, want 4", len(got))
	}

	// In the clear from another machine: no AUTH offered, and one is
	// refused however right, before its password is looked at.
	c, err = smtp.Dial(r.other)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Error("AUTH offered in the clear to another machine")
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Error("STARTTLS not offered to another machine")
	}
	err = c.Auth(sasl.NewPlainClient("", user, password))
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 538 {
		t.Errorf("AUTH in the clear from another machine: %v, want 538 5.7.11", err)
	}
}

// TestSubmissionStartTLSScripted: a command pipelined in the clear behind
// STARTTLS is never run, and a BDAT chunk with a line STARTTLS is message
// data, not a command.
func TestSubmissionStartTLSScripted(t *testing.T) {
	r := newTLSRig(t)
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", r.plain, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		return conn, bufio.NewReader(conn)
	}
	reply := func(br *bufio.Reader) string {
		t.Helper()
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading: %v (got %q)", err, l)
			}
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	conn, br := dial()
	reply(br)
	conn.Write([]byte("EHLO client.test\r\n"))
	reply(br)
	conn.Write([]byte("STARTTLS\r\nAUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=\r\n"))
	if l := reply(br); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("STARTTLS: %q, want 220", l)
	}
	if rest, _ := br.ReadString('\n'); rest != "" {
		t.Errorf("a command pipelined after STARTTLS was answered in the clear: %q", rest)
	}

	// A BDAT go-smtp refuses unread (an unknown argument) announces no
	// chunk: the STARTTLS after it is answered here. It was taken for
	// the chunk's data and went to go-smtp, which has no TLS.
	conn, br = dial()
	reply(br)
	conn.Write([]byte("EHLO client.test\r\n"))
	reply(br)
	conn.Write([]byte("BDAT 10 FOO\r\n"))
	if l := reply(br); !strings.HasPrefix(l, "501 ") {
		t.Fatalf("BDAT 10 FOO: %q, want 501", l)
	}
	conn.Write([]byte("STARTTLS\r\n"))
	if l := reply(br); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("STARTTLS after a refused BDAT: %q, want 220", l)
	}
	tc := tls.Client(conn, r.client)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS after a refused BDAT: %v", err)
	}

	conn, br = dial()
	reply(br)
	for _, step := range []struct{ send, want string }{
		{"EHLO client.test\r\n", "250 "},
		{"AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=\r\n", "235 "},
		{"MAIL FROM:<alice@example.org>\r\n", "250 "},
		{"RCPT TO:<bob@example.net>\r\n", "250 "},
	} {
		conn.Write([]byte(step.send))
		if l := reply(br); !strings.HasPrefix(l, step.want) {
			t.Fatalf("%q: %q, want %s", step.send, l, step.want)
		}
	}
	first, second := "From: alice@example.org\r\nSubject: chunks\r\n\r\n", "STARTTLS\r\nEHLO x\r\n"
	conn.Write([]byte("BDAT " + strconv.Itoa(len(first)) + "\r\n" + first))
	if l := reply(br); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("first BDAT: %q", l)
	}
	conn.Write([]byte("BDAT " + strconv.Itoa(len(second)) + " LAST\r\n" + second))
	if l := reply(br); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("last BDAT: %q", l)
	}
	conn.Write([]byte("STARTTLS\r\n"))
	if l := reply(br); !strings.HasPrefix(l, "503 ") {
		t.Errorf("STARTTLS after AUTH: %q, want 503", l)
	}
	got := r.q.all()
	if len(got) != 1 || !strings.HasSuffix(string(got[0].Data), first+second) {
		t.Fatalf("queued %d messages; want one ending with the chunks", len(got))
	}
}
