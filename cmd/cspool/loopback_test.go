package main

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needIPv6Loopback skips a test on a machine where ::1 cannot be listened
// on (no IPv6): nobody can hold a port there either.
func needIPv6Loopback(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	ln.Close()
}

// startOrExit starts `cspool imap-server` with args and waits (at most
// 30 s) until it prints its settings or exits; it reports whether it
// started.
func (s *statusSetup) startOrExit(t *testing.T, args ...string) (*proc, bool) {
	t.Helper()
	p := startProc(t, "cspool imap-server", s.dir, s.env, s.bin, append(append([]string{"imap-server"}, args...), s.keyFlags("mail.db")...)...)
	for range 600 {
		if strings.Contains(p.stdout.String(), "state:") {
			return p, true
		}
		if p.exitedNow() {
			return p, false
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("imap-server neither started nor exited within 30 s")
	return nil, false
}

// TestLocalhostTwinHeld: a mail client given "localhost" connects to ::1
// first on most systems, and to 127.0.0.1 only when ::1 refuses. Another
// local user held [::1] on the daemon's IMAP, submission or status port
// (the daemon listened on 127.0.0.1 alone) and so received the LOGIN, the
// AUTH and the page's Basic credentials of every client set to
// "localhost". Now the daemon takes both, and does not start (IMAP,
// submission) or serves no page when the other is held.
func TestLocalhostTwinHeld(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	needIPv6Loopback(t)
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	// Sending on, through a smarthost nothing here reaches.
	relay := []string{"--relay", fmt.Sprintf("smtp://127.0.0.1:%d", freePort(t)), "--identity", "alice@example.org"}

	for _, c := range []struct {
		what string
		args func(port int) []string
	}{
		{"IMAP", func(p int) []string { return []string{"--port", fmt.Sprint(p), "--smtp-addr", "", "--status-addr", ""} }},
		{"SMTP", func(p int) []string {
			return append([]string{"--port", fmt.Sprint(freePort(t)), "--smtp-port", fmt.Sprint(p), "--status-addr", ""}, relay...)
		}},
	} {
		port := freePort(t)
		held := fmt.Sprintf("[::1]:%d", port)
		sq := squat(t, held)
		p, started := s.startOrExit(t, c.args(port)...)
		if started {
			p.stop(t, syscall.SIGTERM, 30*time.Second)
			t.Errorf("%s: the daemon started on port %d while another program held %s", c.what, port, held)
			continue
		}
		if code := exitCode(t, p.err); code != 75 || !strings.Contains(p.stderr.String(), held+" is in use by another program") {
			t.Errorf("%s: exit %d, stderr %q; want 75 (temporary) and %s named", c.what, code, p.stderr.String(), held)
		}
		if n, got := sq.received(); n != 0 {
			t.Errorf("%s: the program on %s got %d connections (%q)", c.what, held, n, got)
		}
	}

	// The page is a convenience: held on ::1, it is not served, and the
	// daemon says which address is held.
	port := freePort(t)
	held := fmt.Sprintf("[::1]:%d", port)
	squat(t, held)
	ln, state, err := listenStatusPage(fmt.Sprintf("127.0.0.1:%d", port), false, slog.New(slog.DiscardHandler))
	if ln != nil {
		ln.Close()
	}
	if err != nil || ln != nil || !strings.Contains(state.Problem, held+" was in use by another program") {
		t.Errorf("status page with %s held: listener %v, problem %q, err %v; want none, %s named", held, ln != nil, state.Problem, err, held)
	}

	// Free: a client reaching ::1 gets the daemon.
	imapPort, smtpPort, pagePort := freePort(t), freePort(t), freePort(t)
	p, started := s.startOrExit(t, append([]string{"--port", fmt.Sprint(imapPort), "--smtp-port", fmt.Sprint(smtpPort),
		"--status-addr", fmt.Sprintf("127.0.0.1:%d", pagePort)}, relay...)...)
	if !started {
		t.Fatalf("daemon did not start: %s", p.stderr)
	}
	for _, c := range []struct {
		what       string
		port       int
		send, want string
	}{
		{"IMAP", imapPort, "", "* OK"},
		{"SMTP", smtpPort, "", "220 "},
		{"status page", pagePort, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n", "HTTP/1.0 401"},
	} {
		addr := fmt.Sprintf("[::1]:%d", c.port)
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Errorf("%s on %s: %v; want the daemon there", c.what, addr, err)
			continue
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if c.send != "" {
			fmt.Fprint(conn, c.send)
		}
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if !strings.HasPrefix(line, c.want) {
			t.Errorf("%s on %s answered %q (%v), want %q...", c.what, addr, line, err, c.want)
		}
	}
	p.stop(t, syscall.SIGTERM, 30*time.Second)
}

// TestListenLocalBoth: a port the kernel picks is taken on both loopback
// addresses, each serves, and Close ends Accept and frees both.
func TestListenLocalBoth(t *testing.T) {
	t.Parallel()
	needIPv6Loopback(t)
	ln, err := listenLocal("localhost", 0)
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(port))
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dialing %s: %v", addr, err)
		}
		got, err := ln.Accept()
		if err != nil {
			t.Fatalf("accepting from %s: %v", addr, err)
		}
		if local := got.LocalAddr().(*net.TCPAddr).IP; !local.Equal(net.ParseIP(host)) {
			t.Errorf("connection to %s accepted on %s", addr, local)
		}
		got.Close()
		c.Close()
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, %v; want net.ErrClosed", c, err)
	}
	for _, host := range []string{"127.0.0.1", "::1"} {
		addr := net.JoinHostPort(host, fmt.Sprint(port))
		again, err := net.Listen("tcp", addr)
		if err != nil {
			// The kernel may have given the port, free again, to another
			// test's outgoing connection meanwhile: what matters is that
			// nothing listens on it any more.
			if c, derr := net.DialTimeout("tcp", addr, 5*time.Second); derr == nil {
				c.Close()
				t.Errorf("port %d on %s still held after Close: %v, and a connection to it is accepted", port, host, err)
			}
			continue
		}
		again.Close()
	}
}
