package deliver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// dialFrom connects to addr from the loopback address local (any of
// 127.0.0.0/8) and returns the connection and its first reply line.
func dialFrom(t *testing.T, local, addr string) (net.Conn, string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dialing from %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("greeting for %s: %v (got %q)", local, err, line)
	}
	return c, strings.TrimRight(line, "\r\n")
}

// TestLMTPConnectionCaps opens connections up to the caps, total and per
// client address, and requires the one over either cap to get 421 in place
// of the greeting, which a mail transfer agent takes as "try again later",
// and a freed slot to be usable again.
func TestLMTPConnectionCaps(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{MaxConns: 3, MaxConnsPerAddr: 2})
	expect := func(local, want string) net.Conn {
		t.Helper()
		c, line := dialFrom(t, local, addr)
		if !strings.HasPrefix(line, want) {
			t.Fatalf("connection from %s greeted with %q, want %q", local, line, want)
		}
		return c
	}
	first := expect("127.0.0.1", "220 ")
	expect("127.0.0.1", "220 ")
	expect("127.0.0.1", "421 4.4.5 ")   // over the per-address cap
	expect("127.0.0.2", "220 ")         // another address, within the total
	expect("127.0.0.3", "421 4.4.5 ")   // over the total
	over := expect("127.0.0.2", "421 ") // both
	if _, err := bufio.NewReader(over).ReadString('\n'); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("after 421 the connection should be closed; read gave %v", err)
	}

	// An MTA's client sees a temporary failure.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.4")}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClientLMTP(raw)
	var se *smtp.SMTPError
	if err := c.Hello("mta.test"); !errors.As(err, &se) || !se.Temporary() {
		t.Errorf("go-smtp client over the cap: %v, want a temporary SMTP error", err)
	}
	c.Close()

	// Closing a connection frees its slot.
	if _, err := first.Write([]byte("QUIT\r\n")); err != nil {
		t.Fatal(err)
	}
	first.Close()
	for try := 0; ; try++ {
		c, line := dialFrom(t, "127.0.0.1", addr)
		if strings.HasPrefix(line, "220 ") {
			c.Close()
			break
		}
		if try == 100 {
			t.Fatalf("no slot after closing a connection: %q", line)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLMTPCommandLineLimit: a command line over CommandLineLimit is refused
// and its connection closed without the line being collected, while the
// longest MAIL FROM a real MTA sends and message lines of any length pass.
func TestLMTPCommandLineLimit(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{})

	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	// "NOOP " + x... + CRLF: exactly the limit, then one octet more.
	s.cmd("NOOP "+strings.Repeat("x", CommandLineLimit-7), "250 ")
	s.write("NOOP " + strings.Repeat("x", CommandLineLimit-6) + "\r\n")
	s.expect("500 5.4.0")
	if line, err := s.r.ReadString('\n'); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("after a too long line: read %q, %v; want the connection closed", line, err)
	}

	// A MAIL FROM with a 256-octet path and every parameter an MTA adds.
	local := strings.Repeat("l", 64)
	path := local + "@" + strings.Repeat("d", 256-len(local)-1-2)
	mail := "MAIL FROM:<" + path + "> SIZE=52428800 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=" + strings.Repeat("E", 300) +
		" AUTH=<" + strings.Repeat("a", 500) + ">"
	s = dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	s.write(mail + "\r\n")
	if code, line := s.reply(); code == 500 && strings.Contains(line, "5.4.0") {
		t.Fatalf("MAIL FROM of %d octets refused as too long: %q", len(mail)+2, line)
	}
	s.cmd("RSET", "250 ")
	s.cmd("MAIL FROM:<"+path+"> SIZE=2000000 BODY=8BITMIME", "250 ")
	s.cmd("RCPT TO:<alice@example.org>", "250 ")
	s.cmd("DATA", "354 ")
	body := "Subject: long\r\n\r\n" + strings.Repeat("z", 1<<20) + "\r\n"
	s.write(body + ".\r\n")
	s.expect("250 2.0.0")
	s.cmd("NOOP", "250 ")
	if got := f.bodies(t, "alice"); len(got) != 1 || string(got[0]) != body {
		t.Fatalf("log of alice: %d entries, want the message with a line of 1 MiB", len(got))
	}
}

// TestLMTPBudgetAsBytesArrive: an unfinished message holds its share of the
// in-flight budget while its bytes arrive, so another message, with or
// without a declared SIZE, is refused with 452 4.3.1 instead of being
// collected past the budget; its connection keeps working, and once the
// first message ends both are delivered.
func TestLMTPBudgetAsBytesArrive(t *testing.T) {
	f := newFixture(t, "alice")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const budget = 1 << 20
	var told atomic.Int64 // what MemoryHeld was told, summed
	l := NewLMTP(f.d, LMTPOptions{MaxInflightBytes: budget, MaxMessageBytes: 4 << 20,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)), MemoryHeld: func(d int64) { told.Add(d) }})
	done := make(chan error, 1)
	go func() { done <- l.Serve(ln) }()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	addr := ln.Addr().String()
	begin := func(s *scripted, mail string) {
		s.cmd("LHLO mta.test", "250 ")
		s.cmd(mail, "250 ")
		s.cmd("RCPT TO:<alice@example.org>", "250 ")
		s.cmd("DATA", "354 ")
	}
	line := strings.Repeat("a", 1000) + "\r\n"

	// The first message sends 600 kB and stops.
	a := dialScripted(t, addr)
	begin(a, "MAIL FROM:<a@example.net>")
	first := strings.Repeat(line, 600)
	a.write(first)
	for deadline := time.Now().Add(20 * time.Second); l.inflight.Load() < budget/2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes in flight 20 s after 600 kB of an unfinished message, want them reserved as they arrive", l.inflight.Load())
		}
	}
	// The server's collector is told what the budget holds (MemoryHeld).
	for deadline := time.Now().Add(20 * time.Second); told.Load() != l.inflight.Load(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("MemoryHeld told %d bytes held, %d in flight", told.Load(), l.inflight.Load())
		}
	}

	// A second message of 2 MB, with and without SIZE, does not fit.
	second := strings.Repeat(line, 2000)
	for _, mail := range []string{"MAIL FROM:<b@example.net>", fmt.Sprintf("MAIL FROM:<b@example.net> SIZE=%d", len(second))} {
		b := dialScripted(t, addr)
		begin(b, mail)
		b.write(second + ".\r\n")
		b.expect("452 4.3.1 <alice@example.org>")
		b.cmd("NOOP", "250 ")
		b.cmd("QUIT", "221 ")
	}

	a.write(".\r\n")
	a.expect("250 2.0.0")
	for deadline := time.Now().Add(20 * time.Second); l.inflight.Load() != 0 || told.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still in flight after every message ended, MemoryHeld told %d; want 0", l.inflight.Load(), told.Load())
		}
	}
	b := dialScripted(t, addr)
	begin(b, "MAIL FROM:<b@example.net>")
	b.write(second + ".\r\n")
	b.expect("250 2.0.0")
	got := f.bodies(t, "alice")
	if len(got) != 2 || string(got[0]) != first || string(got[1]) != second {
		t.Fatalf("log of alice: %d entries, want the two messages", len(got))
	}
}

// TestLMTPDeclaredSizeNotHeldAhead: a declared SIZE is a claim, and the
// budget is reserved for bytes that came. A client that declares the size
// limit for three users and sends one byte held three times that limit
// (the buffer and, per user, the sealed entry and the store's copy) for
// the read timeout, and a few such connections held the whole budget, so
// every other message got 452 4.3.1. Now it holds what a message of one
// byte does, the other message is delivered, and the first, sent to its
// end, is delivered whole: the SIZE still sizes its buffer, once half of
// it has come.
func TestLMTPDeclaredSizeNotHeldAhead(t *testing.T) {
	f := newFixture(t, "alice", "bob", "carol")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const budget, limit = 1 << 20, 4 << 20
	l := NewLMTP(f.d, LMTPOptions{MaxInflightBytes: budget, MaxMessageBytes: limit,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	done := make(chan error, 1)
	go func() { done <- l.Serve(ln) }()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	addr := ln.Addr().String()
	line := strings.Repeat("a", 1000) + "\r\n"
	big := strings.Repeat(line, limit/len(line)-1)

	a := dialScripted(t, addr)
	a.cmd("LHLO mta.test", "250 ")
	a.cmd(fmt.Sprintf("MAIL FROM:<a@example.net> SIZE=%d", len(big)), "250 ")
	for _, u := range []string{"alice", "bob", "carol"} {
		a.cmd("RCPT TO:<"+u+"@example.org>", "250 ")
	}
	a.cmd("DATA", "354 ")
	a.write(big[:1])
	for deadline := time.Now().Add(20 * time.Second); l.inflight.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("nothing in flight 20 s after a message's first byte")
		}
	}
	if held := l.inflight.Load(); held > budget/4 {
		t.Errorf("a message of one byte so far, declared %d bytes for three users, holds %d bytes of the budget of %d", len(big), held, budget)
	}

	small := strings.Repeat(line, 100)
	b := dialScripted(t, addr)
	b.cmd("LHLO mta.test", "250 ")
	b.cmd("MAIL FROM:<b@example.net>", "250 ")
	b.cmd("RCPT TO:<alice@example.org>", "250 ")
	b.cmd("DATA", "354 ")
	b.write(small + ".\r\n")
	b.expect("250 2.0.0 <alice@example.org>")
	b.cmd("QUIT", "221 ")

	a.write(big[1:] + ".\r\n")
	for _, u := range []string{"alice", "bob", "carol"} {
		a.expect("250 2.0.0 <" + u + "@example.org>")
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		got := f.bodies(t, u)
		want := []string{big}
		if u == "alice" {
			want = []string{small, big}
		}
		if len(got) != len(want) {
			t.Fatalf("log of %s: %d entries, want %d", u, len(got), len(want))
		}
		for i := range want {
			if string(got[i]) != want[i] {
				t.Errorf("log of %s, entry %d: %d bytes, want %d", u, i+1, len(got[i]), len(want[i]))
			}
		}
	}
}
