package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/keys"
)

// TestLMTPMemoryBound attacks a real cspool server with 100 hostile LMTP
// connections at once: command lines of 45 MB that never end, 45 MB
// messages that never end (half with a declared SIZE), and connections that
// idle mid-dialogue. The server's peak resident memory (VmHWM) must stay
// within its in-flight budget plus a fixed margin, each unfinished message
// must still get a reply once it ends (250, or 452 4.3.1 when the budget
// refused it), and a legitimate delivery must succeed afterwards.
func TestLMTPMemoryBound(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary, sends 1.4 GB over loopback")
	}
	const (
		budget      = 256 << 20
		margin      = 192 << 20
		attackBytes = 45 << 20
		longLines   = 8
		unfinished  = 30
		total       = 100
	)
	bin := buildServerBinary(t)
	dir := t.TempDir()
	alice, spoolK := mustKey(t), mustKey(t)
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice})
	spoolSec := filepath.Join(dir, "spool.sec")
	if err := keys.WriteFiles(spoolK, spoolSec, filepath.Join(dir, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServer(t, bin, "--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
		"--spool-key", spoolSec, "--lmtp", lmtpAddr, "--lmtp-max-inflight", strconv.Itoa(budget),
		"--lmtp-max-conns", "200", "--lmtp-max-conns-per-addr", "200")
	pid := p.cmd.Process.Pid
	t.Logf("server RSS at start: %d MiB", procStatusKiB(t, pid, "VmRSS")>>10)

	// One 1 MiB block of message lines, written again and again.
	block := bytes.Repeat([]byte(strings.Repeat("x", 998)+"\r\n"), 1<<10)
	noLF := bytes.Repeat([]byte("x"), 1<<20)

	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		dataCon []*hostileConn
		idle    []*hostileConn
		closed  = make(chan error, longLines)
	)
	defer func() {
		for _, c := range append(dataCon, idle...) {
			c.c.Close()
		}
	}()
	for i := range total {
		c := dialHostile(t, lmtpAddr)
		switch {
		case i < longLines:
			wg.Add(1)
			go func() {
				defer c.c.Close()
				// A command line that never ends: the server must close
				// the connection instead of collecting it.
				c.writeRepeated("NOOP ", noLF, attackBytes)
				wg.Done()
				closed <- c.awaitClose()
			}()
		case i < longLines+unfinished:
			size := ""
			if i%2 == 0 {
				size = fmt.Sprintf(" SIZE=%d", attackBytes)
			}
			if err := c.dialogue("LHLO hostile.test", "250 ", "MAIL FROM:<x@example.net>"+size, "250 ",
				"RCPT TO:<alice@example.org>", "250 ", "DATA", "354 "); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			dataCon = append(dataCon, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.writeRepeated("", block, attackBytes)
			}()
		default:
			// Idle at the greeting, or in the middle of a transaction.
			if i%2 == 0 {
				if err := c.dialogue("LHLO idle.test", "250 ", "MAIL FROM:<x@example.net>", "250 "); err != nil {
					t.Fatal(err)
				}
			}
			idle = append(idle, c)
		}
	}
	waitGroup(t, &wg, 5*time.Minute, "the attack's writes")
	hwm := procStatusKiB(t, pid, "VmHWM") << 10
	t.Logf("server peak RSS with %d hostile connections: %d MiB (budget %d MiB)", total, hwm>>20, budget>>20)
	closeBy := time.After(30 * time.Second)
	for range longLines {
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("command line of %d bytes without an end: %v", attackBytes, err)
			}
		case <-closeBy:
			t.Fatalf("command line of %d bytes without an end: the connection is still open 30 s after the writes", attackBytes)
		}
	}

	// Ending the unfinished messages gets each its reply, and the ones the
	// budget kept are delivered.
	delivered := 0
	for _, c := range dataCon {
		code, line, err := c.send("\r\n.\r\n")
		switch {
		case err != nil:
			t.Errorf("end of an unfinished message: %v", err)
		case code == 250:
			delivered++
		case !strings.HasPrefix(line, "452 4.3.1"):
			t.Errorf("end of an unfinished message: reply %q, want 250 or 452 4.3.1", line)
		}
	}
	hwm = max(hwm, procStatusKiB(t, pid, "VmHWM")<<10)
	t.Logf("%d of %d unfinished messages delivered once ended; server peak RSS %d MiB", delivered, unfinished, hwm>>20)
	if hwm > budget+margin {
		t.Errorf("server peak RSS %d MiB, want at most the budget %d MiB plus %d MiB", hwm>>20, budget>>20, margin>>20)
	}

	for _, c := range append(dataCon, idle...) {
		c.c.Close()
	}
	conn, err := net.DialTimeout("tcp", lmtpAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	if err := lc.SendMail("sender@example.net", []string{"alice@example.org"}, strings.NewReader("Subject: after\r\n\r\nstill here\r\n")); err != nil {
		t.Fatalf("delivery after the attack: %v", err)
	}
}

// hostileConn is a raw LMTP connection of an attacker.
type hostileConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialHostile(t *testing.T, addr string) *hostileConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(6 * time.Minute))
	h := &hostileConn{c: c, r: bufio.NewReader(c)}
	if line, err := h.r.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220 ") {
		t.Fatalf("greeting %q (%v), want 220", line, err)
	}
	return h
}

// dialogue sends each command and checks its reply's prefix.
func (h *hostileConn) dialogue(steps ...string) error {
	for i := 0; i+1 < len(steps); i += 2 {
		_, line, err := h.send(steps[i] + "\r\n")
		if err != nil {
			return fmt.Errorf("%s: %w", steps[i], err)
		}
		if !strings.HasPrefix(line, steps[i+1]) {
			return fmt.Errorf("%s: reply %q, want %q", steps[i], line, steps[i+1])
		}
	}
	return nil
}

// send writes raw and reads one reply, returning its code and last line.
func (h *hostileConn) send(raw string) (int, string, error) {
	if _, err := h.c.Write([]byte(raw)); err != nil {
		return 0, "", err
	}
	for {
		line, err := h.r.ReadString('\n')
		if err != nil {
			return 0, line, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		code, _ := strconv.Atoi(line[:min(3, len(line))])
		return code, line, nil
	}
}

// writeRepeated writes prefix, then block until n bytes are written or a
// write fails (the server may close the connection).
func (h *hostileConn) writeRepeated(prefix string, block []byte, n int) {
	if _, err := h.c.Write([]byte(prefix)); err != nil {
		return
	}
	for sent := 0; sent < n; sent += len(block) {
		if _, err := h.c.Write(block); err != nil {
			return
		}
	}
}

// awaitClose reads until the server closes the connection.
func (h *hostileConn) awaitClose() error {
	for {
		_, err := h.r.ReadString('\n')
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return fmt.Errorf("the server kept the connection open: %w", err)
		}
		return nil // EOF or reset: closed
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %v", what, d)
	}
}

// procStatusKiB reads a "Name: N kB" field of /proc/PID/status.
func procStatusKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("reading the server's memory use: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %q: %v", pid, l, err)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}
