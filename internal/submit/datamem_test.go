package submit_test

import (
	"context"
	"fmt"
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
	addr := serveWith(t, submit.Config{Queue: q, MaxMessageBytes: limit, DataMemory: limit})
	message := func(sc *smtpConn, n string) {
		beginData(sc)
		io.WriteString(sc.c, "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: "+n+"\r\n\r\n"+strings.Repeat("body\r\n", 2000)+".\r\n")
	}
	a, b := dialSMTP(t, addr), dialSMTP(t, addr)
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

// serveWith serves cfg, with the test's login and identity, on a
// loopback port until the test ends, and returns its address.
func serveWith(t *testing.T, cfg submit.Config) string {
	t.Helper()
	cfg.User, cfg.Password, cfg.Identities, cfg.Logger = user, password, []string{"alice@example.org"}, slog.New(slog.DiscardHandler)
	srv, err := submit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// beginData logs in and starts a message up to the 354 to DATA.
func beginData(sc *smtpConn) {
	sc.t.Helper()
	sc.login()
	sc.send("MAIL FROM:<alice@example.org>", "250 ", "MAIL")
	sc.send("RCPT TO:<bob@example.org>", "250 ", "RCPT")
	sc.send("DATA", "354 ", "DATA")
}

// stalledHeader is the start of a message whose client then stops.
const stalledHeader = "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: stalled\r\n\r\n"

// TestStalledDataDoesNotStarve: clients that stop in the middle of their
// message cannot keep the others' messages out. A message took the size
// limit from the budget (DataMemory) before its first byte was read, and
// the only bound on DATA was go-smtp's read timeout of 10 minutes: two
// clients that sent part of a message and stopped held the whole budget
// at the default (100 MiB, twice the 50 MiB limit), and the user's own
// client waited, unread, those 10 minutes. Now a message holds room for
// what it sent, so the budget left takes another message at once; and a
// client that sends nothing for DataIdleTimeout in the middle of DATA or
// of BDAT gets 421 4.4.2, its connection closed and its room given back,
// so a message that waited for that room is then taken. A message over
// the size limit gives its room back at the first byte beyond it, not
// once read to its end.
func TestStalledDataDoesNotStarve(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", 5000) // 400,000 bytes
	whole := "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: mine\r\n\r\nhello\r\n.\r\n"

	// Two clients stop after 400 KB each, and one after a message over
	// the limit, the default budget for the limit: the fourth's message
	// is taken beside them. The one over the limit holds no room: it was
	// refused at its first byte beyond it.
	q := &memQueue{}
	addr := serveWith(t, submit.Config{Queue: q, MaxMessageBytes: limit})
	for range 2 {
		sc := dialSMTP(t, addr)
		beginData(sc)
		io.WriteString(sc.c, stalledHeader+body)
	}
	over := dialSMTP(t, addr)
	beginData(over)
	io.WriteString(over.c, stalledHeader+body+body+body)
	c := dialSMTP(t, addr)
	beginData(c)
	c.send(strings.TrimSuffix(whole, "\r\n"), "250 ", "a message beside two stalled ones")

	// A budget of one message: a client that stopped in DATA and one that
	// stopped after a BDAT chunk are ended after DataIdleTimeout, and the
	// message that waited for their room is taken.
	q = &memQueue{}
	addr = serveWith(t, submit.Config{Queue: q, MaxMessageBytes: limit, DataMemory: limit, DataIdleTimeout: time.Second})
	a := dialSMTP(t, addr)
	beginData(a)
	io.WriteString(a.c, stalledHeader+body+body)
	b := dialSMTP(t, addr)
	b.login()
	b.send("MAIL FROM:<alice@example.org>", "250 ", "MAIL")
	b.send("RCPT TO:<bob@example.org>", "250 ", "RCPT")
	io.WriteString(b.c, fmt.Sprintf("BDAT %d\r\n", len(stalledHeader+body))+stalledHeader+body)
	c = dialSMTP(t, addr)
	beginData(c)
	io.WriteString(c.c, whole)
	a.closedWith("421 4.4.2 No data for 1s in the middle of the message", "the client stalled in DATA")
	b.closedWith("250 2.0.0 Continue\r\n421 4.4.2 No data for 1s in the middle of the message", "the client stalled after a BDAT chunk")
	if got := c.reply(); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("the message that waited for the stalled ones' room: %q, want 250", got)
	}
	if got := q.all(); len(got) != 1 || !strings.Contains(string(got[0].Data), "Subject: mine") {
		t.Errorf("queued %d messages, want the whole one only", len(got))
	}
}
