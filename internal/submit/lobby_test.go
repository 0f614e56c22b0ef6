package submit_test

import (
	"bufio"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"cspool/internal/loginguard"
	"cspool/internal/sendtest"
)

// smtpConn speaks SMTP line by line.
type smtpConn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dialSMTP connects and reads the greeting.
func dialSMTP(t *testing.T, addr string) *smtpConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc := &smtpConn{t: t, c: c, br: bufio.NewReader(c)}
	if got := sc.reply(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("greeting: %q", got)
	}
	return sc
}

// reply reads one reply and returns its last line, within 20 s.
func (sc *smtpConn) reply() string {
	sc.t.Helper()
	sc.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		l, err := sc.br.ReadString('\n')
		if err != nil {
			sc.t.Fatalf("reading a reply: %v (got %q)", err, l)
		}
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

func (sc *smtpConn) send(line, want, what string) {
	sc.t.Helper()
	if _, err := io.WriteString(sc.c, line+"\r\n"); err != nil {
		sc.t.Fatalf("%s: writing %q: %v", what, line, err)
	}
	if got := sc.reply(); !strings.HasPrefix(got, want) {
		sc.t.Fatalf("%s: %q got %q, want %s", what, line, got, want)
	}
}

func (sc *smtpConn) login() {
	sc.t.Helper()
	sc.send("EHLO client.test", "250 ", "EHLO")
	sc.send("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)), "235 ", "login")
}

// closedWith checks that the server sends sc want, a 421, and closes the
// connection, within 10 s.
func (sc *smtpConn) closedWith(want, what string) {
	sc.t.Helper()
	sc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(sc.br)
	var ne net.Error
	closed := !(errors.As(err, &ne) && ne.Timeout())
	if !strings.HasPrefix(string(b), want) || !closed {
		sc.t.Fatalf("%s: got %q (closed %v), want %q... and the connection closed", what, b, closed, want)
	}
}

// TestWaitingToLogIn: as on IMAP, connections that have not logged in are
// bounded in number and in time. Past MaxPending the one that waited
// longest gets 421 4.7.0 and is closed; a logged-in connection no longer
// counts and is never pushed out; a connection that has not logged in
// within LoginDeadline gets 421 4.4.2 and is closed. Before, a connection
// that never logged in was held as long as it sent a command every 10
// minutes, and there could be any number of them.
func TestWaitingToLogIn(t *testing.T) {
	t.Parallel()
	t.Run("over the cap", func(t *testing.T) {
		r := newRigLimits(t, 0, sendtest.SmarthostOptions{}, loginguard.Limits{MaxPending: 2, LoginDeadline: time.Hour})
		first, second := dialSMTP(t, r.addr), dialSMTP(t, r.addr)
		client := dialSMTP(t, r.addr)
		first.closedWith("421 4.7.0 ", "the oldest waiting, a third come")
		second.send("NOOP", "250 ", "the second, within MaxPending")
		client.login()
		more := []*smtpConn{dialSMTP(t, r.addr), dialSMTP(t, r.addr)}
		second.closedWith("421 4.7.0 ", "the oldest waiting after the client logged in, two more come")
		more[0].send("NOOP", "250 ", "the newer of those waiting")
		client.send("MAIL FROM:<alice@example.org>", "250 ", "the logged-in client, never pushed out")
		client.send("RCPT TO:<bob@example.net>", "250 ", "the logged-in client")
	})
	t.Run("deadline", func(t *testing.T) {
		r := newRigLimits(t, 0, sendtest.SmarthostOptions{}, loginguard.Limits{LoginDeadline: 2 * time.Second})
		client := dialSMTP(t, r.addr)
		client.login()
		idle := dialSMTP(t, r.addr)
		idle.closedWith("421 4.4.2 No login within 2s", "a connection that sent nothing")
		client.send("NOOP", "250 ", "the client logged in before, longer ago than the deadline")
	})
}

// TestSessionsBounded: at most MaxSessions connections are logged in at
// once; a right login beyond it gets 421 4.7.0 and its connection is
// closed, so the client keeps its message and tries again later, and a
// wrong one is answered as ever. Once a session closes, a new connection
// logs in. Before, any number of connections logged in, each holding a
// descriptor and its buffers for as long as it sent a command every 10
// minutes.
func TestSessionsBounded(t *testing.T) {
	t.Parallel()
	r := newRigLimits(t, 0, sendtest.SmarthostOptions{}, loginguard.Limits{MaxSessions: 2})
	first, second := dialSMTP(t, r.addr), dialSMTP(t, r.addr)
	first.login()
	second.login()
	late := dialSMTP(t, r.addr)
	late.send("EHLO client.test", "250 ", "EHLO")
	late.send("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00wrong")), "535 ", "a wrong password with MaxSessions logged in")
	if _, err := io.WriteString(late.c, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password))+"\r\n"); err != nil {
		t.Fatal(err)
	}
	late.closedWith("421 4.7.0 ", "a third login with MaxSessions 2")
	second.send("MAIL FROM:<alice@example.org>", "250 ", "a session logged in before the limit was met")

	first.send("QUIT", "221 ", "QUIT")
	first.closedWith("", "after QUIT")
	again := dialSMTP(t, r.addr)
	again.login()
	again.send("MAIL FROM:<alice@example.org>", "250 ", "the login after a session closed")
}
