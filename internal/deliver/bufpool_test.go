package deliver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"cspool/internal/testproc"
)

func TestBufClass(t *testing.T) {
	for _, c := range []struct{ n, class int }{
		{0, 0}, {1, 0}, {bufMin, 0}, {bufMin + 1, 1}, {2 * bufMin, 1}, {2*bufMin + 1, 2},
		{bufMax / 2, bufClasses - 2}, {bufMax, bufClasses - 1}, {bufMax + 1, -1},
	} {
		if got := bufClass(c.n); got != c.class {
			t.Errorf("bufClass(%d) = %d, want %d", c.n, got, c.class)
		}
	}
	var p bufPool
	for _, c := range []struct{ n, limit, want int64 }{
		{100, 100, 100},                   // the class is over the limit: exact
		{100, 1 << 20, bufMin},            // the class
		{bufMin + 1, 1 << 30, 2 * bufMin}, // the next class
		{bufMax + 1, 1 << 30, bufMax + 1}, // above every class: exact
	} {
		if got := p.fit(c.n, c.limit); got != c.want {
			t.Errorf("fit(%d, %d) = %d, want %d", c.n, c.limit, got, c.want)
		}
	}
	for _, n := range []int{100, bufMin, 3 * bufMin, 4 * bufMin, bufMax + 1} {
		if b := p.get(n); len(b) != 0 || cap(b) != n {
			t.Errorf("get(%d): len %d cap %d, want 0 and %d", n, len(b), cap(b), n)
		}
	}
}

// TestLMTPReusesBuffers: messages of 10 KB delivered one after another
// over a connection are each read into a buffer of the listener's pool
// and sealed into another, both given back once the message is
// delivered. The listener, its store and the client (in this process
// too) then allocate 18 KB a message, less than twice its size, most of
// it the HPKE setup's and the store's statements; before, each message
// took a new buffer of 16 KiB for its bytes and one of 11 KB for its
// entry, 47 KB in all. The test asks for under three times the message.
func TestLMTPReusesBuffers(t *testing.T) {
	testproc.SkipUnderRace(t) // sync.Pool drops what is put in it under the race detector
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	body := []byte("Subject: reuse\r\n\r\n" + strings.Repeat(strings.Repeat("x", 100)+"\r\n", 100) + ".\r\n")
	send := func(n int) {
		for range n {
			s.cmd("MAIL FROM:<a@example.net>", "250 ")
			s.cmd("RCPT TO:<alice@example.org>", "250 ")
			s.cmd("DATA", "354 ")
			if _, err := s.c.Write(body); err != nil {
				t.Fatal(err)
			}
			s.expect("250 2.0.0")
		}
	}
	send(20)
	const n = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	send(n)
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("%d messages of %d bytes: %d bytes allocated per message (server, store and client)", n, len(body), per)
	if per >= 3*uint64(len(body)) {
		t.Errorf("delivering a message of %d bytes allocated %d bytes; want under three times the message (its buffers reused)", len(body), per)
	}
	if got := len(f.opened(t, "alice")); got != 20+n {
		t.Fatalf("%d entries in alice's log, want %d", got, 20+n)
	}
}

// keptLog is an Appender that fails its first call and keeps the batch it
// was given, as a store whose caller gave up may still write it.
type keptLog struct {
	calls int
	kept  [][]byte
}

func (k *keptLog) Append(_ context.Context, _ string, batch [][]byte) (uint64, error) {
	k.calls++
	k.kept = append(k.kept, batch[0])
	if k.calls == 1 {
		return 0, errors.New("gave up")
	}
	return uint64(k.calls), nil
}

// TestDeliverToKeepsFailedEntry: an entry whose append failed is not
// given back to the pool (its store may still write it), so the next
// message is not sealed over it; one whose append returned nil is.
func TestDeliverToKeepsFailedEntry(t *testing.T) {
	alice := mustKey(t)
	log := &keptLog{}
	d := &Deliverer{Log: log, SpoolKey: mustKey(t), Users: StaticDirectory{"alice": alice.Public()}}
	var p bufPool
	msg := bytes.Repeat([]byte("a"), 10000)
	ctx := context.Background()
	if _, _, err := d.deliverTo(ctx, "alice", alice.Public(), nil, msg, time.Now(), &p); err == nil {
		t.Fatal("the first append succeeded, want its error")
	}
	failed := bytes.Clone(log.kept[0])
	for range 3 {
		if _, _, err := d.deliverTo(ctx, "alice", alice.Public(), nil, msg, time.Now(), &p); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(log.kept[0], failed) {
		t.Fatal("the entry of the failed append was overwritten by a later delivery")
	}
	if &log.kept[1][0] == &log.kept[0][0] {
		t.Fatal("the failed append's buffer was reused")
	}
}
