package imapd

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSessionsBounded: at most MaxSessions connections are logged in at
// once. A right login beyond it gets NO [UNAVAILABLE] and its connection
// stays, not logged in; a wrong one is answered as ever, so the refusal
// tells a guesser nothing. Once a session closes, the refused connection
// logs in and reads. Before, any number of connections logged in, about
// 70 KB and a descriptor each: 1,000 took the daemon to 109 MiB.
func TestSessionsBounded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.deviceWith("sessions", Config{Login: LoginLimits{MaxSessions: 3,
		Wait: func(context.Context, time.Duration) error { return nil }}})
	deliverAll(r, d)
	var in []*rawConn
	for range 3 {
		rc := dialRaw(t, d.addr)
		loginRaw(t, rc)
		in = append(in, rc)
	}
	late := dialRaw(t, d.addr)
	late.cmd("w1 LOGIN alice wrong-password")
	if got := late.until("w1 "); !strings.Contains(got, "w1 NO [AUTHENTICATIONFAILED]") {
		t.Fatalf("a wrong password with MaxSessions logged in: %q, want NO [AUTHENTICATIONFAILED]", got)
	}
	late.cmd("x1 LOGIN alice \"" + testPassword + "\"")
	if got := late.until("x1 "); !strings.Contains(got, "x1 NO [UNAVAILABLE]") {
		t.Fatalf("a fourth login with MaxSessions 3: %q, want NO [UNAVAILABLE]", got)
	}
	late.cmd("x2 SELECT INBOX")
	if got := late.until("x2 "); !strings.Contains(got, "x2 BAD") {
		t.Fatalf("SELECT after the refused login: %q, want BAD (not logged in)", got)
	}
	for i, rc := range in {
		noopOK(t, rc, "n"+string(rune('0'+i)), "a session logged in before the limit was met")
	}

	in[0].cmd("o LOGOUT")
	if got, closed := in[0].readAll(); !strings.Contains(got, "o OK") || !closed {
		t.Fatalf("LOGOUT: %q (closed %v)", got, closed)
	}
	loginRaw(t, late)
	fetchAll(t, late, "f")
}

// TestSessionsDefault: the default bound is 100 sessions, as
// docs/IMAP.md promises, over real sockets.
func TestSessionsDefault(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("default")
	login := func(rc *rawConn) string {
		rc.cmd("l LOGIN alice \"" + testPassword + "\"")
		return rc.until("l ")
	}
	for i := range 100 {
		if got := login(dialRaw(t, d.addr)); !strings.Contains(got, "l OK") {
			t.Fatalf("login %d of 100: %q, want OK", i+1, got)
		}
	}
	if got := login(dialRaw(t, d.addr)); !strings.Contains(got, "l NO [UNAVAILABLE]") {
		t.Fatalf("login 101: %q, want NO [UNAVAILABLE]", got)
	}
}
