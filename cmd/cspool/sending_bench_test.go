package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TestSendingFigures measures what docs/BENCHMARKS.md records for sending,
// against a real Postfix on loopback: submission acknowledged to relayed
// (p50/p99), submission to the copy visible in Sent on the user's second
// device, and the outbox's drain rate after an outage against Postfix's
// own queue flush of the same messages. It runs only with
// CSPOOL_BENCH_SENDING=1 (bench/sending.sh); N and Q set the counts.
func TestSendingFigures(t *testing.T) {
	t.Parallel()
	if os.Getenv("CSPOOL_BENCH_SENDING") != "1" {
		t.Skip("a benchmark: run bash bench/sending.sh")
	}
	n, q := envInt("N", 200), envInt("Q", 1000)
	// No address verification: the drain runs while the LMTP listener is
	// down, and Postfix forgets verified addresses when it restarts.
	p := startPostfixPeers(t, needPostfix(t), "smtpd_recipient_restrictions = reject_unauth_destination")
	sub := dialSubmission(t, p.smtpPort)
	second := dialIMAP(t, p.alice2IMAP)
	msg := func(i int) string {
		// A body of 1,000 bytes in two lines: a line of over 998 bytes is
		// refused (docs/SENDING.md).
		half := strings.Repeat("ten bytes.", 50)
		return fmt.Sprintf("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: figure %d\r\nMessage-ID: <figure-%d@example.test>\r\n\r\n%s\r\n%s\r\n",
			i, i, half, half)
	}

	// 1. One message at a time: 250, relayed, visible on the second device.
	acks := map[string]time.Time{}
	var visible []time.Duration
	for i := 1; i <= n; i++ {
		start := time.Now()
		id := submitOne(t, sub, msg(i))
		acks[id] = time.Now()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			st, err := second.Status("Sent", &imap.StatusOptions{NumMessages: true}).Wait()
			if err != nil {
				t.Fatal(err)
			}
			if int(*st.NumMessages) >= i {
				visible = append(visible, time.Since(start))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("message %d not in Sent on the second device after 30 s", i)
			}
		}
	}
	relayed := relayTimes(t, p.alice.stderr.String())
	var ackToRelay []time.Duration
	for id, at := range acks {
		r, ok := relayed[id]
		if !ok {
			t.Fatalf("queue id %s never relayed", id)
		}
		ackToRelay = append(ackToRelay, max(r.Sub(at), 0))
	}
	t.Logf("FIGURE ack_to_relayed n=%d p50=%v p99=%v", n, pct(ackToRelay, 50), pct(ackToRelay, 99))
	t.Logf("FIGURE submit_to_sent_on_second_device n=%d p50=%v p99=%v", n, pct(visible, 50), pct(visible, 99))

	// 2. An outage: Postfix and the spool server are down while q
	// messages are submitted; Postfix comes back and the outbox drains
	// into it (cspool's LMTP still down, so Postfix keeps them); then the
	// spool server comes back and Postfix flushes the same q.
	p.spool.stop(t, syscall.SIGTERM, 40*time.Second)
	p.pf.stop(t)
	for i := n + 1; i <= n+q; i++ {
		submitOne(t, sub, msg(i))
	}
	logBefore := len(p.alice.stderr.String())
	p.pf.run(t, "start")
	var drained map[string]time.Time
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		drained = relayTimes(t, p.alice.stderr.String()[logBefore:])
		if len(drained) >= q {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox drained %d of %d in 10 minutes", len(drained), q)
		}
	}
	var first, last time.Time
	for _, at := range drained {
		if first.IsZero() || at.Before(first) {
			first = at
		}
		if at.After(last) {
			last = at
		}
	}
	drain := last.Sub(first)
	t.Logf("FIGURE outbox_drain q=%d took=%v rate=%.0f/s", q, drain.Round(time.Millisecond), float64(q-1)/drain.Seconds())

	sentBefore := postfixSent(t, p.pf)
	p.startSpool(t)
	start := time.Now()
	p.pf.run(t, "flush")
	for deadline := time.Now().Add(10 * time.Minute); postfixSent(t, p.pf) < sentBefore+q; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Postfix flushed %d of %d in 10 minutes", postfixSent(t, p.pf)-sentBefore, q)
		}
	}
	flush := time.Since(start)
	t.Logf("FIGURE postfix_flush q=%d took=%v rate=%.0f/s", q, flush.Round(time.Millisecond), float64(q)/flush.Seconds())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return s[max(i, 0)].Round(100 * time.Microsecond)
}

// dialSubmission logs in to the device's submission port with go-smtp's
// client.
func dialSubmission(t *testing.T, port int) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", "alice", "pw")); err != nil {
		t.Fatal(err)
	}
	return c
}

var queuedAs = regexp.MustCompile(`Queued as (\d+)`)

// submitOne sends msg and returns its queue id.
func submitOne(t *testing.T, c *smtp.Client, msg string) string {
	t.Helper()
	if err := c.Mail("alice@example.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("bob@example.test", nil); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	m := queuedAs.FindStringSubmatch(resp.StatusText)
	if m == nil {
		t.Fatalf("250 without a queue id: %q", resp.StatusText)
	}
	return m[1]
}

func dialIMAP(t *testing.T, port int) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login("alice", "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

var relayLine = regexp.MustCompile(`^time=(\S+) .*msg="relay attempt" .*queue_id=(\d+) relayed=([1-9])`)

// relayTimes reads, from the daemon's log, when each queue id was relayed
// (the time the smarthost's reply was recorded).
func relayTimes(t *testing.T, log string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m := relayLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatalf("log time %q: %v", m[1], err)
		}
		out[m[2]] = at
	}
	return out
}

// postfixSent counts Postfix's deliveries so far.
func postfixSent(t *testing.T, pf *postfixInstance) int {
	t.Helper()
	b, _ := os.ReadFile(pf.maillog)
	return bytes.Count(b, []byte("status=sent"))
}
