package imapd

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
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
