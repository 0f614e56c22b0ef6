package imapd

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

// TestAppendsHeldWithinBudget: APPENDs on several connections at once
// hold at most Config.AppendMemory of messages. Each read its whole
// message into memory, however many came together: a client uploading
// 50 MB messages on 12 connections took the daemon to 1.85 GB. Now an
// APPEND beyond the budget waits, before reading its message, until one
// before it ends; both are then appended.
func TestAppendsHeldWithinBudget(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const size = 700 << 10
	d := r.deviceWith("a", Config{MaxMessageBytes: 1 << 20, AppendMemory: 1 << 20})
	login := func(tag string) *rawConn {
		rc := dialRaw(t, d.addr)
		rc.cmd(tag + ` LOGIN alice "` + testPassword + `"`)
		if got := rc.until(tag + " "); !strings.Contains(got, tag+" OK") {
			t.Fatalf("LOGIN: %s", got)
		}
		return rc
	}
	msg := func(i int) []byte {
		head := fmt.Sprintf("From: a@example.org\r\nSubject: large %d\r\nMessage-ID: <large-%d@example.org>\r\n\r\n", i, i)
		return append([]byte(head), bytes.Repeat([]byte("x"), size-len(head))...)
	}
	a, b := login("a0"), login("b0")
	// a's message, all but its last 10 bytes: it holds its share.
	ma := msg(1)
	a.c.Write(fmt.Appendf(nil, "a1 APPEND INBOX {%d+}\r\n", len(ma)))
	a.c.Write(ma[:len(ma)-10])
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if !d.srv.appendMem.TryAcquire(size) {
			break // a's share is held
		}
		d.srv.appendMem.Release(size)
		if time.Now().After(deadline) {
			t.Fatal("the first APPEND never took its share")
		}
	}
	// b's, whole: it does not fit beside a's, so it waits.
	mb := msg(2)
	b.c.Write(fmt.Appendf(nil, "b1 APPEND INBOX {%d+}\r\n", len(mb)))
	b.c.Write(mb)
	b.c.Write([]byte("\r\n"))
	b.c.SetReadDeadline(time.Now().Add(time.Second))
	if line, err := b.br.ReadString('\n'); err == nil {
		t.Fatalf("an APPEND beyond the budget was answered while the one before it was being read: %q", line)
	}
	// a ends: both are appended.
	a.c.Write(ma[len(ma)-10:])
	a.c.Write([]byte("\r\n"))
	if got := a.until("a1 "); !strings.Contains(got, "a1 OK") {
		t.Fatalf("the first APPEND: %q, want OK", got)
	}
	if got := b.until("b1 "); !strings.Contains(got, "b1 OK") {
		t.Fatalf("the APPEND that waited: %q, want OK", got)
	}
}

// TestStalledAppendsGiveBackTheBudget: two APPENDs of the largest size
// announced, whose bytes never come, hold the whole budget; a third, of
// 10 bytes, waited behind them until go-imap's 5 minutes for a literal
// ended. Now a share whose message brings nothing for Config.AppendStall
// goes back: the small APPEND is asked for its bytes and appended, and a
// stalled one, when its bytes come at last, gets NO [LIMIT] and appends
// nothing, on a connection that goes on.
func TestStalledAppendsGiveBackTheBudget(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const max = 1 << 20
	d := r.deviceWith("a", Config{MaxMessageBytes: max, AppendMemory: 2 * max, AppendStall: 100 * time.Millisecond})
	login := func(tag string) *rawConn {
		rc := dialRaw(t, d.addr)
		rc.cmd(tag + ` LOGIN alice "` + testPassword + `"`)
		if got := rc.until(tag + " "); !strings.Contains(got, tag+" OK") {
			t.Fatalf("LOGIN: %s", got)
		}
		return rc
	}
	a, b, c := login("a0"), login("b0"), login("c0")
	// "+" comes once the share is taken.
	a.cmd(fmt.Sprintf("a1 APPEND INBOX {%d}", max))
	a.until("+ ")
	b.cmd(fmt.Sprintf("b1 APPEND INBOX {%d}", max))
	b.until("+ ")
	msg := "Subject: x"
	c.cmd(fmt.Sprintf("c1 APPEND INBOX {%d}", len(msg)))
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "+ ") {
		t.Fatalf("a small APPEND beside two stalled ones: %q, %v; want to be asked for its bytes", line, err)
	}
	c.cmd(msg)
	if got := c.until("c1 "); !strings.Contains(got, "c1 OK") {
		t.Fatalf("the small APPEND: %q, want OK", got)
	}
	// a's bytes come at last: refused, and nothing of them appended.
	big := bytes.Repeat([]byte("x"), max)
	copy(big, "Subject: late\r\n\r\n")
	a.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := a.c.Write(big); err != nil {
		t.Fatalf("sending the stalled message: %v", err)
	}
	a.cmd("")
	if got := a.until("a1 "); !strings.Contains(got, "a1 NO [LIMIT]") {
		t.Fatalf("the stalled APPEND: %q, want NO [LIMIT]", got)
	}
	a.cmd("a2 STATUS INBOX (MESSAGES)")
	if got := a.until("a2 "); !strings.Contains(got, "(MESSAGES 1)") || !strings.Contains(got, "a2 OK") {
		t.Fatalf("after the stalled APPEND: %q, want the small message alone", got)
	}
}

// TestTricklingAppendGivesBackTheBudget: a message that comes a byte at
// a time, less than appendProgress in each window of AppendStall, loses
// its share as one that brings nothing does, and its APPEND is refused
// at the next bytes; what came is not kept.
func TestTricklingAppendGivesBackTheBudget(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	s := &Server{cfg: Config{AppendStall: 300 * time.Millisecond}, log: slog.New(slog.DiscardHandler),
		appendMem: semaphore.NewWeighted(size)}
	if !s.appendMem.TryAcquire(size) {
		t.Fatal("the budget is taken")
	}
	var once sync.Once
	giveBack := func() { once.Do(func() { s.appendMem.Release(size) }) }
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		body, err := s.readAppend(pr, size, giveBack)
		if body != nil {
			err = fmt.Errorf("read %d bytes and kept them: %v", len(body), err)
		}
		// Nothing reads the pipe any more: a write of the test's fails
		// instead of waiting for good.
		pr.CloseWithError(errAppendStalled)
		done <- err
	}()
	// A byte at a time until the share is back (a bounded number).
	for i := 0; ; i++ {
		if s.appendMem.TryAcquire(1) {
			s.appendMem.Release(1)
			break
		}
		if i == 3000 {
			t.Fatal("the share of a trickling message was never given back")
		}
		if _, err := pw.Write([]byte("x")); err == errAppendStalled {
			break // the reading ended (its answer is checked below)
		} else if err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	go pw.Write([]byte("more"))
	select {
	case err := <-done:
		if err != errAppendStalled {
			t.Fatalf("the trickling APPEND: %v, want %v", err, errAppendStalled)
		}
	case <-time.After(time.Minute):
		t.Fatal("the trickling APPEND was still being read a minute after its share was given back")
	}
	if !s.appendMem.TryAcquire(size) {
		t.Fatal("the share of the trickling APPEND is not back whole")
	}
	pw.Close()
}
