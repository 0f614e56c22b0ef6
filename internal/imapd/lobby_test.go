package imapd

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// loginRaw logs rc in and selects INBOX.
func loginRaw(t *testing.T, rc *rawConn) {
	t.Helper()
	rc.cmd("l1 LOGIN alice \"" + testPassword + "\"")
	if got := rc.until("l1 "); !strings.Contains(got, "l1 OK") {
		t.Fatalf("LOGIN: %s", got)
	}
	rc.cmd("l2 SELECT INBOX")
	if got := rc.until("l2 "); !strings.Contains(got, "l2 OK") {
		t.Fatalf("SELECT: %s", got)
	}
}

// fetchAll checks that rc, logged in with INBOX selected, still reads
// deliverAll's four messages.
func fetchAll(t *testing.T, rc *rawConn, tag string) {
	t.Helper()
	rc.cmd(tag + " FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	got := rc.until(tag + " ")
	if !strings.Contains(got, tag+" OK") || strings.Count(got, " FETCH (") != 4 {
		t.Fatalf("FETCH on the logged-in connection: %q, want four messages and OK", got)
	}
}

// noopOK checks that rc is still served.
func noopOK(t *testing.T, rc *rawConn, tag, what string) {
	t.Helper()
	rc.cmd(tag + " NOOP")
	if got := rc.until(tag + " "); !strings.Contains(got, tag+" OK") {
		t.Fatalf("%s: NOOP got %q, want OK", what, got)
	}
}

// byeClosed checks that the server sends rc an untagged BYE containing
// want and closes the connection, within readAll's bounded wait.
func byeClosed(t *testing.T, rc *rawConn, want, what string) {
	t.Helper()
	got, closed := rc.readAll()
	if !strings.Contains(got, "* BYE "+want) || !closed {
		t.Fatalf("%s: got %q (closed %v), want \"* BYE %s...\" and the connection closed", what, got, closed, want)
	}
}

// TestWaitingToLogIn: connections that have not logged in are bounded in
// number and in time. Past MaxPending the one that waited longest gets
// BYE and is closed; a client that then connects still logs in, and once
// logged in no longer counts nor is pushed out, whatever comes after it.
// Loopback is bounded by MaxPending alone; another source by
// MaxPendingPerSource, which pushes out its own oldest. A connection that
// has not logged in within LoginDeadline gets BYE and is closed, even one
// that keeps sending commands. Before, thousands of connections that never
// logged in were held for good (SECURITY.md section 10).
func TestWaitingToLogIn(t *testing.T) {
	t.Parallel()
	t.Run("over the cap", func(t *testing.T) {
		r := newRig(t)
		d := r.deviceWith("cap", Config{Login: LoginLimits{MaxPending: 4, MaxPendingPerSource: 2, LoginDeadline: time.Hour}})
		deliverAll(r, d)
		var idle []*rawConn
		for range 4 {
			idle = append(idle, dialRaw(t, d.addr))
		}
		// Four waiting from loopback, over MaxPendingPerSource: served.
		for i, rc := range idle {
			noopOK(t, rc, "n"+string(rune('0'+i)), "a loopback connection within MaxPending")
		}
		extra := dialRaw(t, d.addr)
		byeClosed(t, idle[0], "[UNAVAILABLE]", "the oldest connection waiting, a fifth one come")
		noopOK(t, idle[1], "n1", "the second oldest, still within MaxPending")

		// The user's client comes while the waiting room is full: it
		// pushes out the oldest, logs in and reads.
		client := dialRaw(t, d.addr)
		byeClosed(t, idle[1], "[UNAVAILABLE]", "the oldest connection waiting, the client come")
		loginRaw(t, client)
		fetchAll(t, client, "f1")
		if all, _ := d.srv.guard.Pending(client.c.LocalAddr()); all != 3 {
			t.Fatalf("%d connections waiting to log in, want 3: the client's left when it logged in", all)
		}

		// A new flood pushes out those waiting, never the client.
		var flood []*rawConn
		for range 6 {
			flood = append(flood, dialRaw(t, d.addr))
		}
		for i, rc := range []*rawConn{idle[2], idle[3], extra, flood[0], flood[1]} {
			byeClosed(t, rc, "[UNAVAILABLE]", "connection "+string(rune('a'+i))+" pushed out by the flood")
		}
		fetchAll(t, client, "f2")
		if all, _ := d.srv.guard.Pending(client.c.LocalAddr()); all != 4 {
			t.Fatalf("%d connections waiting to log in, want MaxPending, 4", all)
		}
	})

	t.Run("per source", func(t *testing.T) {
		r := newRig(t)
		d := r.deviceWith("source", Config{Login: LoginLimits{MaxPending: 8, MaxPendingPerSource: 2, LoginDeadline: time.Hour}})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); d.srv.Serve(remoteListener{ln}) }()
		t.Cleanup(func() { d.srv.Close(); <-done })
		local := dialRaw(t, d.addr)
		var remote []*rawConn
		for range 3 {
			remote = append(remote, dialRaw(t, ln.Addr().String()))
		}
		byeClosed(t, remote[0], "[UNAVAILABLE]", "the remote source's oldest, its third come")
		noopOK(t, local, "l", "the older loopback connection")
		noopOK(t, remote[1], "r1", "the remote source's second")
		noopOK(t, remote[2], "r2", "the remote source's third")
		loginRaw(t, remote[2])
		// Logged in, it no longer counts: the source may have two more.
		remote = append(remote, dialRaw(t, ln.Addr().String()))
		noopOK(t, remote[1], "r1", "the remote source's second, after its third logged in")
	})

	t.Run("deadline", func(t *testing.T) {
		r := newRig(t)
		d := r.deviceWith("deadline", Config{Login: LoginLimits{LoginDeadline: 2 * time.Second}})
		deliverAll(r, d)
		client := dialRaw(t, d.addr)
		loginRaw(t, client)
		idle := dialRaw(t, d.addr)
		busy := dialRaw(t, d.addr)
		byeClosed(t, idle, "no login within 2s", "a connection that sent nothing")
		// One that keeps sending commands is closed too.
		busy.c.SetDeadline(time.Now().Add(10 * time.Second))
		var seen strings.Builder
		for {
			if _, err := busy.c.Write([]byte("b NOOP\r\n")); err != nil {
				break
			}
			line, err := busy.br.ReadString('\n')
			seen.WriteString(line)
			if err != nil {
				break
			}
			if !strings.HasPrefix(line, "b OK") && !strings.HasPrefix(line, "* BYE no login within") {
				t.Fatalf("busy connection: got %q", line)
			}
		}
		if got := seen.String(); !strings.Contains(got, "* BYE no login within 2s") {
			t.Fatalf("a connection that kept sending NOOP: got %q, want a BYE and the connection closed", got)
		}
		var ne net.Error
		if _, err := busy.br.ReadString('\n'); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			t.Fatalf("a connection that kept sending NOOP: read %v after the BYE, want the connection closed", err)
		}
		// The client logged in before both, so longer ago than the
		// deadline: still served.
		fetchAll(t, client, "f")
	})
}
