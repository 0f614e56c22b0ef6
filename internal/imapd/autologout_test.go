package imapd

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/loginguard"
)

// TestAutologoutFreesSessions: a logged-in session that sends nothing for
// Config.Autologout gets "* BYE autologout" and is closed (RFC 9051
// section 5.4), and its place among the MaxSessions is taken by the
// login it kept out. Before, a program that logged in MaxSessions times
// and kept silent kept every other login out for go-imap's 35 minutes,
// and one that sent a NOOP now and then for good; the mail client was
// answered NO [UNAVAILABLE] meanwhile. Each autologout is logged.
func TestAutologoutFreesSessions(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	var logs logBuffer
	d := r.deviceWith("autologout", Config{Autologout: 500 * time.Millisecond, Login: LoginLimits{MaxSessions: 2,
		Wait: func(context.Context, time.Duration) error { return nil }}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	deliverAll(r, d)
	silent := []*rawConn{dialRaw(t, d.addr), dialRaw(t, d.addr)}
	for _, rc := range silent {
		loginRaw(t, rc)
	}
	late := dialRaw(t, d.addr)
	late.cmd("x1 LOGIN alice \"" + testPassword + "\"")
	if got := late.until("x1 "); !strings.Contains(got, "x1 NO [UNAVAILABLE]") {
		t.Fatalf("a third login with MaxSessions 2: %q, want NO [UNAVAILABLE]", got)
	}
	for _, rc := range silent {
		byeClosed(t, rc, "autologout: no command for 500ms", "a session silent past Autologout")
	}
	// The library closes the session's connection, which gives its place
	// back, once the BYE is written: the late login may come a moment
	// before that.
	waitSessions(t, d.srv.guard, 0)
	loginRaw(t, late)
	fetchAll(t, late, "f")
	if n := strings.Count(logs.String(), "IMAP session logged out: no command for the autologout time"); n != 2 {
		t.Errorf("%d autologouts logged, want 2:\n%s", n, logs.String())
	}
}

// waitSessions waits up to 10 s for g to count n sessions.
func waitSessions(t *testing.T, g *loginguard.Guard, n int) {
	t.Helper()
	for i := 0; i < 1000 && g.Sessions() != n; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if got := g.Sessions(); got != n {
		t.Fatalf("%d sessions counted, want %d", got, n)
	}
}

// TestAutologoutIdle: a session in IDLE counts as sending nothing (RFC
// 2177: a client re-issues IDLE at least every 29 minutes, and the server
// may log out one idling past its autologout time). A go-imap client
// whose IDLE goes on past Autologout has its connection closed, and over
// a raw socket the BYE says why. Before, an IDLE that never ended held
// its session for go-imap's 35 minutes, and its end came without a BYE.
func TestAutologoutIdle(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.deviceWith("idle", Config{Autologout: 500 * time.Millisecond})
	deliverAll(r, d)

	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	defer idle.Close()
	select {
	case <-c.Closed():
	case <-time.After(10 * time.Second):
		t.Fatal("a go-imap client in IDLE past Autologout: not closed after 10 s")
	}

	rc := dialRaw(t, d.addr)
	loginRaw(t, rc)
	rc.cmd("i1 IDLE")
	rc.until("+ ")
	byeClosed(t, rc, "autologout: no command for 500ms", "a raw session in IDLE past Autologout")
	waitSessions(t, d.srv.guard, 0)
}

// TestAutologoutSparesActive: a session that sends commands, or ends and
// re-issues IDLE, more often than Autologout goes on, while a silent one
// beside it is logged out. Autologout is 2 s; the active sessions send
// something every 100 ms or so for 4 s.
func TestAutologoutSparesActive(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.deviceWith("active", Config{Autologout: 2 * time.Second})
	deliverAll(r, d)
	silent := dialRaw(t, d.addr)
	loginRaw(t, silent)
	polling := dialRaw(t, d.addr)
	loginRaw(t, polling)
	idling := dialRaw(t, d.addr)
	loginRaw(t, idling)
	start := time.Now()
	for i := 0; i < 400 && time.Since(start) < 4*time.Second; i++ {
		tag := "n" + strconv.Itoa(i)
		noopOK(t, polling, tag, "a session sending NOOPs")
		idling.cmd(tag + " IDLE")
		idling.until("+ ")
		time.Sleep(100 * time.Millisecond)
		idling.cmd("DONE")
		if got := idling.until(tag + " "); !strings.Contains(got, tag+" OK") {
			t.Fatalf("IDLE re-issued: %q, want OK", got)
		}
	}
	byeClosed(t, silent, "autologout", "the silent session beside them")
	noopOK(t, polling, "p", "the session sending NOOPs, after")
	fetchAll(t, idling, "f")
}

// TestAutologoutSparesSlowCommand: a command in progress is no inactivity,
// however long the client takes to send its literal: an APPEND whose
// message comes a byte at a time over more than twice Autologout is
// taken, and the session goes on, while a silent one beside it is
// logged out. Only IDLE counts as inactivity.
func TestAutologoutSparesSlowCommand(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.deviceWith("slow", Config{Autologout: 2 * time.Second})
	silent := dialRaw(t, d.addr)
	loginRaw(t, silent)
	rc := dialRaw(t, d.addr)
	loginRaw(t, rc)
	msg := "Subject: s\r\n\r\nslow\r\n"
	rc.cmd("a1 APPEND INBOX {" + strconv.Itoa(len(msg)) + "}")
	rc.until("+ ")
	start := time.Now()
	for i := 0; i < len(msg); i++ {
		rc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := rc.c.Write([]byte{msg[i]}); err != nil {
			t.Fatalf("writing the literal: %v", err)
		}
		if time.Since(start) < 5*time.Second {
			time.Sleep(300 * time.Millisecond)
		}
	}
	rc.cmd("")
	if got := rc.until("a1 "); !strings.Contains(got, "a1 OK") {
		t.Fatalf("APPEND sent over %v: %q, want OK", time.Since(start).Round(time.Second), got)
	}
	noopOK(t, rc, "n1", "the session after its slow APPEND")
	byeClosed(t, silent, "autologout", "the silent session beside it")
}

// TestAutologoutDefault: a Config that leaves Autologout zero logs out
// after 30 minutes, RFC 9051 section 5.4's least, as docs/IMAP.md says.
func TestAutologoutDefault(t *testing.T) {
	t.Parallel()
	d := newRig(t).device("default")
	if got := d.srv.cfg.Autologout; got != 30*time.Minute {
		t.Fatalf("default Autologout %v, want 30m", got)
	}
}
