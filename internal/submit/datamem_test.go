package submit_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/submit"
)

// holdingQueue holds its first Enqueue until release is closed.
type holdingQueue struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (q *holdingQueue) Enqueue(ctx context.Context, m *submit.Message) (string, error) {
	first := false
	q.once.Do(func() { first = true })
	if first {
		close(q.entered)
		<-q.release
	}
	return "q", nil
}

// TestDataHeldWithinBudget: messages received on several connections at
// once hold at most Config.DataMemory. Each DATA read its whole message
// into memory, however many came together: 12 connections sending 50 MB
// each took the daemon to 1.45 GB. Now a message that does not fit waits,
// unread, until one before it is answered; then it is taken too.
func TestDataHeldWithinBudget(t *testing.T) {
	t.Parallel()
	q := &holdingQueue{entered: make(chan struct{}), release: make(chan struct{})}
	const limit = 64 << 10
	srv, err := submit.New(submit.Config{User: user, Password: password, Identities: []string{"alice@example.org"},
		Queue: q, MaxMessageBytes: limit, DataMemory: limit, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	message := func(sc *smtpConn, n string) {
		sc.login()
		sc.send("MAIL FROM:<alice@example.org>", "250 ", "MAIL")
		sc.send("RCPT TO:<bob@example.org>", "250 ", "RCPT")
		sc.send("DATA", "354 ", "DATA")
		io.WriteString(sc.c, "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: "+n+"\r\n\r\n"+strings.Repeat("body\r\n", 2000)+".\r\n")
	}
	a, b := dialSMTP(t, ln.Addr().String()), dialSMTP(t, ln.Addr().String())
	message(a, "first")
	<-q.entered // a's message is read and being queued: it holds its room
	message(b, "second")
	b.c.SetReadDeadline(time.Now().Add(time.Second))
	if line, err := b.br.ReadString('\n'); err == nil {
		t.Fatalf("a message beyond the budget was answered while the one before it was held: %q", line)
	}
	close(q.release)
	if got := a.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("the first message: %q, want 250", got)
	}
	if got := b.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("the message that waited: %q, want 250", got)
	}
}
