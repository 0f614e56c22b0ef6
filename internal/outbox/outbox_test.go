package outbox_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-smtp"
	_ "modernc.org/sqlite"

	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/mailstore"
	"cspool/internal/outbox"
	"cspool/internal/sendtest"
	"cspool/internal/submit"
	"cspool/internal/syncer"
	"cspool/internal/testproc"
)

const wait = 30 * time.Second

// newDevice is a spool and a device syncing it, its loop running until
// the test ends.
func newDevice(t *testing.T) *devicetest.Device {
	return devicetest.NewSpool(t).Running("device", syncer.Config{Wait: 200 * time.Millisecond})
}

// startOutbox opens an outbox for dev relaying to relay and runs it until
// the test ends.
func startOutbox(t *testing.T, dev *devicetest.Device, relay outbox.Relay, tweak func(*outbox.Config)) *outbox.Outbox {
	t.Helper()
	cfg := outbox.Config{Path: dev.Store.Path() + ".outbox", Store: dev.Store, Log: dev.Sync, Relay: relay,
		Hostname: "device.test", MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	if tweak != nil {
		tweak(&cfg)
	}
	o, err := outbox.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		o.Close()
	})
	return o
}

func message(id, extra string) *submit.Message {
	data := "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n" + extra +
		"Subject: test " + id + "\r\nDate: Wed, 26 Nov 2025 10:00:00 +0100\r\nMessage-ID: <" + id + "@example.org>\r\n\r\nHello " + id + "\r\n"
	return &submit.Message{From: "alice@example.org", Recipients: []submit.Recipient{{Address: "bob@example.net"}},
		Data: []byte(data), MessageID: id + "@example.org"}
}

func enqueue(t *testing.T, o *outbox.Outbox, m *submit.Message) string {
	t.Helper()
	id, err := o.Enqueue(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestRelaySTARTTLSAuth relays through a smarthost that requires STARTTLS
// (certificate from a test CA) and AUTH: the blind copy's address is in the
// envelope only, the Bcc field is gone from what was relayed, and the copy
// in Sent (on this device and on another one) is the whole message, Bcc
// included, with \Seen.
func TestRelaySTARTTLSAuth(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{User: "relayuser", Password: "relay secret"})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, Username: "relayuser", Password: "relay secret", RootCAs: ca.Pool}, nil)
	m := message("starttls", "Bcc: Carol <carol@example.com>,\r\n dave@example.com\r\n")
	m.Recipients = append(m.Recipients, submit.Recipient{Address: "carol@example.com"}, submit.Recipient{Address: "dave@example.com"})
	enqueue(t, o, m)

	got := host.Wait(t, 1, wait)[0]
	if got.User != "relayuser" || got.From != "alice@example.org" {
		t.Errorf("smarthost saw user %q, sender %q; want relayuser, alice@example.org", got.User, got.From)
	}
	if want := []string{"bob@example.net", "carol@example.com", "dave@example.com"}; !slices.Equal(got.To, want) {
		t.Errorf("recipients %v, want %v", got.To, want)
	}
	if bytes.Contains(got.Data, []byte("Bcc")) || bytes.Contains(got.Data, []byte("dave@")) {
		t.Errorf("the relayed message still has the Bcc field:\n%s", got.Data)
	}
	if want := submit.StripBcc(m.Data); !bytes.Equal(got.Data, want) {
		t.Errorf("relayed:\n%q\nwant:\n%q", got.Data, want)
	}
	sent := devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	if len(sent) != 1 || !bytes.Equal(sent[0].Raw, m.Data) || !slices.Contains(sent[0].Flags, `\Seen`) {
		t.Fatalf("Sent: %d messages, first %q flags %v; want the whole message with \\Seen", len(sent), sent[0].Raw, sent[0].Flags)
	}
	other := dev.Spool.Running("other", syncer.Config{Wait: 200 * time.Millisecond}).Store
	if o := devicetest.WaitMessages(t, other, "Sent", 1, wait); !bytes.Equal(o[0].Raw, m.Data) {
		t.Errorf("the other device's Sent copy differs: %q", o[0].Raw)
	}
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 && st.ToFile == 0 && st.Relayed == 1 })
}

// TestRelayImplicitTLS relays over smtps.
func TestRelayImplicitTLS(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{ImplicitTLS: true})
	relay, err := outbox.ParseRelayURL("smtps://" + host.Addr)
	if err != nil {
		t.Fatal(err)
	}
	relay.RootCAs = ca.Pool
	o := startOutbox(t, dev, relay, nil)
	enqueue(t, o, message("smtps", ""))
	host.Wait(t, 1, wait)
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
}

// TestRelayNo8BitMIME: an 8-bit message is not sent to a smarthost that
// does not offer 8BITMIME (RFC 6152 section 3): it bounces, saying why,
// and a 7-bit one is relayed. The 8-bit one was sent as it was.
func TestRelayNo8BitMIME(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{ImplicitTLS: true, No8BitMIME: true})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, ImplicitTLS: true, RootCAs: ca.Pool}, nil)
	eight := message("eight", "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
	eight.Data = append(eight.Data, "Gr\xc3\xbc\xc3\x9fe\r\n"...)
	enqueue(t, o, eight)
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	if r := readReport(t, inbox[0].Raw); !strings.Contains(r.human, "8BITMIME") {
		t.Errorf("bounce does not name 8BITMIME: %+v", r)
	}
	enqueue(t, o, message("seven", ""))
	if got := host.Wait(t, 1, wait); len(got) != 1 || submit.MessageID(got[0].Data) != "seven@example.org" {
		t.Errorf("the smarthost got %d messages, the first %q; want the 7-bit one alone", len(got), got[0].Data)
	}
}

// TestRelaySMTPUTF8WhenNeeded: a message submitted with SMTPUTF8 goes to a
// smarthost that does not offer it when it needs none (RFC 6531 section
// 3.2: envelope and header in ASCII; an 8-bit body is 8BITMIME's), and
// bounces, saying why, when its header or an envelope address is beyond
// ASCII. Every message the client submitted with SMTPUTF8 bounced, a
// client asking for it whatever the message.
func TestRelaySMTPUTF8WhenNeeded(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{ImplicitTLS: true, NoSMTPUTF8: true})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, ImplicitTLS: true, RootCAs: ca.Pool}, nil)
	header := message("header", "")
	header.Data = bytes.Replace(header.Data, []byte("Subject: test header"), []byte("Subject: test header Gr\xc3\xbc\xc3\x9fe"), 1)
	rcpt := message("rcpt", "")
	rcpt.Recipients = []submit.Recipient{{Address: "b\xc3\xb6b@example.net"}}
	ascii := message("ascii", "")
	body := message("body", "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n")
	body.Data = append(body.Data, "Gr\xc3\xbc\xc3\x9fe\r\n"...)
	for _, m := range []*submit.Message{header, rcpt, ascii, body} {
		m.UTF8 = true
		enqueue(t, o, m)
	}
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 2, wait)
	for _, b := range inbox {
		if r := readReport(t, b.Raw); !strings.Contains(r.human, "SMTPUTF8") {
			t.Errorf("bounce does not name SMTPUTF8: %+v", r)
		}
	}
	got := host.Wait(t, 2, wait)
	var ids []string
	for _, g := range got {
		ids = append(ids, submit.MessageID(g.Data))
	}
	if !slices.Equal(ids, []string{"ascii@example.org", "body@example.org"}) {
		t.Errorf("the smarthost got %q, want the messages needing no SMTPUTF8", ids)
	}
	if n := len(devicetest.Messages(t, dev.Store, "INBOX")); n != 2 {
		t.Errorf("INBOX has %d messages, want the bounces of the two needing SMTPUTF8", n)
	}
}

// TestRelayRefusesUnverifiedCertificate: a smarthost whose certificate is
// not signed by the trusted CA gets nothing; the failure is permanent and
// the sender finds a bounce saying why in INBOX.
func TestRelayRefusesUnverifiedCertificate(t *testing.T) {
	dev := newDevice(t)
	trusted := sendtest.NewCA(t, t.TempDir())
	other := sendtest.NewCA(t, t.TempDir())
	cert, _, _ := other.Leaf(t, t.TempDir())
	host := sendtest.NewSmarthost(t, other, sendtest.SmarthostOptions{Cert: &cert})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: trusted.Pool}, nil)
	enqueue(t, o, message("badcert", ""))
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	report := readReport(t, inbox[0].Raw)
	if !strings.Contains(report.human, "certificate") || report.status != "5.0.0" || report.final != "bob@example.net" {
		t.Errorf("bounce: %+v; want a certificate failure for bob@example.net", report)
	}
	if n := len(host.Received()); n != 0 {
		t.Errorf("the smarthost with the unverified certificate got %d messages", n)
	}
	if sent := devicetest.Messages(t, dev.Store, "Sent"); len(sent) != 0 {
		t.Errorf("Sent has %d messages for a message never relayed", len(sent))
	}
}

// TestRelayRequiresSTARTTLS: a smtp:// smarthost that offers no STARTTLS is
// never sent the message in the clear.
func TestRelayRequiresSTARTTLS(t *testing.T) {
	dev := newDevice(t)
	host := sendtest.NewSmarthost(t, sendtest.NewCA(t, t.TempDir()), sendtest.SmarthostOptions{NoTLS: true})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr}, nil)
	enqueue(t, o, message("plain", ""))
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	if r := readReport(t, inbox[0].Raw); !strings.Contains(r.human, "STARTTLS") {
		t.Errorf("bounce does not name the missing STARTTLS: %+v", r)
	}
	if n := len(host.Received()); n != 0 {
		t.Errorf("sent %d messages in the clear", n)
	}
}

// TestRelaySilentSmarthost: a smarthost that takes the connection and never
// greets is given up on after Relay.Timeout, as any command is, and the
// message stays queued for a later try. It was held for go-smtp's own 5
// minutes: the greeting, EHLO and STARTTLS ran before the relay's command
// timeout was set, and the whole queue waited behind them.
func TestRelaySilentSmarthost(t *testing.T) {
	dev := newDevice(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	o := startOutbox(t, dev, outbox.Relay{Addr: ln.Addr().String(), Timeout: 500 * time.Millisecond}, nil)
	enqueue(t, o, message("silent", ""))
	var st outbox.Status
	for deadline := time.Now().Add(wait); !strings.Contains(st.LastError, "no answer within"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("outbox status %+v %s after the submission to a smarthost that never greets, want the attempt given up (\"no answer within\")", st, wait)
		}
		if st, err = o.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if st.Queued != 1 {
		t.Errorf("%d messages queued after the silent smarthost, want 1 (kept for a later try)", st.Queued)
	}
	if inbox := devicetest.Messages(t, dev.Store, "INBOX"); len(inbox) != 0 {
		t.Errorf("a silent smarthost bounced the message: %q", inbox[0].Raw)
	}
}

// TestRelayWrongPassword: a smarthost that refuses the relay's login (535,
// a password changed at the provider) holds the queue, as an outage does:
// the message stays queued, nothing bounces, the status names the reply.
// Every message due was bounced at the first refusal.
func TestRelayWrongPassword(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{User: "relayuser", Password: "new secret"})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, Username: "relayuser", Password: "old secret", RootCAs: ca.Pool}, nil)
	enqueue(t, o, message("password", ""))
	waitStatus(t, o, func(st outbox.Status) bool { return strings.Contains(st.LastError, "logging in") })
	time.Sleep(500 * time.Millisecond) // room for a wrong outcome to be recorded
	st, err := o.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Queued != 1 || st.Bounced != 0 {
		t.Errorf("outbox status %+v after the smarthost refused the login, want the message queued, none bounced", st)
	}
	if inbox := devicetest.Messages(t, dev.Store, "INBOX"); len(inbox) != 0 {
		t.Errorf("a refused login bounced the message: %q", inbox[0].Raw)
	}
	if n := len(host.Received()); n != 0 {
		t.Errorf("the smarthost received %d messages without a login", n)
	}
}

// TestRelayClockStepsBack: a message deferred while the device's clock was
// a year ahead is sent once the clock is set right, at the next pass. Its
// next try, a year ahead by the right clock, made it wait that long,
// neither sent nor expired (its acceptance was as far ahead).
func TestRelayClockStepsBack(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	var mails atomic.Int32
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" && mails.Add(1) == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	var ahead atomic.Int64
	ahead.Store(int64(365 * 24 * time.Hour))
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, func(c *outbox.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
		c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour
	})
	enqueue(t, o, message("ahead", ""))
	var st outbox.Status
	for deadline := time.Now().Add(wait); st.Deferred != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("outbox status %+v, want the first message deferred by the smarthost's 451", st)
		}
		var err error
		if st, err = o.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// The clock is set right; the next pass (a second submission starts
	// one) sends both.
	ahead.Store(0)
	enqueue(t, o, message("right", ""))
	host.Wait(t, 2, wait)
}

// TestRelayClockWasBehind: a message deferred while the device's clock was
// a week behind is sent once the clock is set right, not given up on. Its
// submission time, a week in the past by the right clock, made it older
// than the 5-day limit at the first pass after, and it bounced unsent.
func TestRelayClockWasBehind(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	var mails atomic.Int32
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" && mails.Add(1) == 1 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	var behind atomic.Int64
	behind.Store(int64(7 * 24 * time.Hour))
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, func(c *outbox.Config) {
		c.Now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
		c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour
	})
	enqueue(t, o, message("behind", ""))
	waitStatus(t, o, func(st outbox.Status) bool { return st.Deferred == 1 })
	// The clock is set right; the next pass (a second submission starts
	// one) sends both.
	behind.Store(0)
	enqueue(t, o, message("right", ""))
	var ids []string
	for _, m := range host.Wait(t, 2, wait) {
		ids = append(ids, submit.MessageID(m.Data))
	}
	if slices.Sort(ids); !slices.Equal(ids, []string{"behind@example.org", "right@example.org"}) {
		t.Errorf("relayed %q, want both messages", ids)
	}
	if st, err := o.Status(context.Background()); err != nil || st.Bounced != 0 {
		t.Errorf("outbox status %+v, %v: want no bounce", st, err)
	}
}

// TestRelayGivesUpByQueueTime: a message submitted while the device's
// clock was a year ahead, and deferred until the clock is set right, is
// given up on once it has waited MaxAge in the queue, with a bounce. By
// its submission time it was a year from that, and stayed queued.
func TestRelayGivesUpByQueueTime(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	var ahead atomic.Int64
	ahead.Store(int64(365 * 24 * time.Hour))
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, func(c *outbox.Config) {
		c.Now = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
		c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour
		c.MaxAge = 2 * time.Second
	})
	enqueue(t, o, message("ahead", ""))
	waitStatus(t, o, func(st outbox.Status) bool { return st.Deferred == 1 })
	ahead.Store(0)
	bounce := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)[0]
	if !bytes.Contains(bounce.Raw, []byte("gave up after 2s in the queue")) {
		t.Errorf("bounce does not say the message was given up on:\n%s", bounce.Raw)
	}
	if got := host.Received(); len(got) != 0 {
		t.Errorf("the smarthost got %d messages, want none", len(got))
	}
}

// TestQueueClockKeptAcrossRestarts: the time a message has waited is kept
// when the daemon stops: a daemon started after it, with a give-up limit
// no longer than that time, gives it up at its first pass.
func TestQueueClockKeptAcrossRestarts(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	relay := outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}
	cfg := outbox.Config{Path: dev.Store.Path() + ".outbox", Store: dev.Store, Log: dev.Sync, Relay: relay,
		Hostname: "device.test", MinBackoff: time.Hour, MaxBackoff: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	first, err := outbox.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	enqueue(t, first, message("waits", ""))
	waitStatus(t, first, func(st outbox.Status) bool { return st.Deferred == 1 })
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	first.Close()

	db, err := sql.Open("sqlite", "file:"+cfg.Path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var waited int64
	err = db.QueryRow("SELECT c.ms - m.queued FROM clock c, messages m").Scan(&waited)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if waited < 300 {
		t.Fatalf("the outbox recorded %d ms waited for a message queued at least 300 ms: the queue clock was not saved at the stop", waited)
	}
	startOutbox(t, dev, relay, func(c *outbox.Config) {
		c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour
		c.MaxAge = time.Duration(waited) * time.Millisecond
	})
	bounce := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)[0]
	if !bytes.Contains(bounce.Raw, []byte("gave up after")) {
		t.Errorf("bounce does not say the message was given up on:\n%s", bounce.Raw)
	}
}

// TestQueueClockSavedWhileRunning: while a message waits out a long
// backoff, the queue clock is saved every ClockSaveEvery, so a daemon
// killed (no stop to save it) loses at most that much of the message's
// time in the queue. Before, the passes came every 10 minutes then, and a
// daemon killed sooner after each start, in a crash loop, never saved it:
// the message never aged and was never given up on.
func TestQueueClockSavedWhileRunning(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, func(c *outbox.Config) {
		c.MinBackoff, c.MaxBackoff = time.Hour, time.Hour
		c.ClockSaveEvery = 50 * time.Millisecond
	})
	enqueue(t, o, message("waits", ""))
	waitStatus(t, o, func(st outbox.Status) bool { return st.Deferred == 1 })

	// Read as a second process would after a kill: what is on disk.
	db, err := sql.Open("sqlite", "file:"+dev.Store.Path()+".outbox?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(wait)
	for {
		var waited int64
		if err := db.QueryRow("SELECT c.ms - m.queued FROM clock c, messages m").Scan(&waited); err != nil {
			t.Fatal(err)
		}
		if waited > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the queue clock on disk was not saved in %v of a running outbox whose message waits (ClockSaveEvery 50ms): a daemon killed now loses all of it", wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestQueueClockOutOfRange: a queue clock in the outbox file that it
// cannot have run (written around this program) is corrected at open:
// near the int64 limit the give-up limit's arithmetic overflowed, and every
// waiting message was given up on and bounced at the first pass; behind a
// message's queued, the message would not age.
func TestQueueClockOutOfRange(t *testing.T) {
	for _, ms := range []int64{math.MinInt64 + 1, math.MaxInt64 - 1, -5} {
		t.Run(fmt.Sprint(ms), func(t *testing.T) {
			dev := newDevice(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			down := ln.Addr().String()
			ln.Close()
			cfg := outbox.Config{Path: dev.Store.Path() + ".outbox", Store: dev.Store, Log: dev.Sync, Relay: outbox.Relay{Addr: down},
				Hostname: "device.test", MinBackoff: time.Hour, MaxBackoff: time.Hour, MaxAge: time.Hour, Logger: slog.New(slog.DiscardHandler)}
			o, err := outbox.Open(cfg)
			if err != nil {
				t.Fatal(err)
			}
			enqueue(t, o, message("waits", ""))
			o.Close()
			db, err := sql.Open("sqlite", "file:"+cfg.Path)
			if err != nil {
				t.Fatal(err)
			}
			_, err = db.Exec("UPDATE clock SET ms = ?", ms)
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			o = startOutbox(t, dev, cfg.Relay, func(c *outbox.Config) { *c = cfg })
			// The pass that tried the smarthost ran the give-up check first.
			st := waitStatus(t, o, func(st outbox.Status) bool { return st.LastError != "" || st.Queued == 0 })
			if st.Queued != 1 || st.Bounced != 0 {
				t.Fatalf("after a pass with the queue clock at %d on disk: %+v, want the message still queued, not given up on", ms, st)
			}
		})
	}
}

// TestCopiedOutboxHolds: an outbox copied into another file (a device's
// database restored or copied beside the original) holds the messages it
// had queued: the original relays them, the copy relays them only when
// told (ReleaseHeld). Messages submitted to the copy afterwards are its own
// and are relayed. Before, the copy relayed the queue too: every message
// queued at the copy went out twice. ReleaseHeld releases only the hold it
// names, which an earlier start made: before, given at the copy's first
// start, it relayed the queue unseen, and left in a unit (it was a bare
// flag then) it did so at the copy's second start.
func TestCopiedOutboxHolds(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	// Queued while the smarthost cannot be reached.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	original := dev.Store.Path() + ".outbox"
	run := func(path string, relay string, release string) (*outbox.Outbox, func()) {
		o, err := outbox.Open(outbox.Config{Path: path, Store: dev.Store, Log: dev.Sync, Relay: outbox.Relay{Addr: relay, RootCAs: ca.Pool},
			Hostname: "device.test", MinBackoff: time.Hour, MaxBackoff: time.Hour, Logger: slog.New(slog.DiscardHandler), ReleaseHeld: release})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		return o, func() {
			cancel()
			<-done
			o.Close()
		}
	}
	o, stop := run(original, down, "")
	enqueue(t, o, message("queued", ""))
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 1 && st.LastError != "" })
	stop()

	copyOutbox := func(from string) string {
		to := filepath.Join(t.TempDir(), "copy.db.outbox")
		for _, suffix := range []string{"", "-wal"} {
			b, err := os.ReadFile(from + suffix)
			if errors.Is(err, os.ErrNotExist) && suffix != "" {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to+suffix, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return to
	}
	copied := copyOutbox(original)

	// The copy holds what it had queued, even started with ReleaseHeld
	// (--release-outbox left in a unit or a script, bare as it was before
	// it took a name, or given before anyone saw the hold): it names no
	// hold of an earlier start. A message submitted to it is relayed, and
	// would have followed the held one in the same pass.
	o, stop = run(copied, host.Addr, "true")
	st, err := o.Status(context.Background())
	if err != nil || st.Held != 1 || len(st.Hold) != 12 {
		t.Errorf("the copy's status %+v, %v: want the queued message held at its first start, ReleaseHeld or not, under a name", st, err)
	}
	hold := st.Hold
	enqueue(t, o, message("after", ""))
	got := host.Wait(t, 1, wait)
	if id := submit.MessageID(got[0].Data); id != "after@example.org" {
		t.Fatalf("the copy relayed %s, want only the message submitted to it", id)
	}
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 1 && st.Held == 1 })
	stop()
	if n := len(host.Received()); n != 1 {
		t.Fatalf("the smarthost got %d messages from the copy, want 1", n)
	}

	// Its second start, with the flag still standing, holds them still:
	// the flag does not name the hold. Before, it released them.
	o, stop = run(copied, host.Addr, "true")
	if st, err := o.Status(context.Background()); err != nil || st.Held != 1 || st.Hold != hold {
		t.Errorf("the copy's second start with a bare release: status %+v, %v; want the message held still, as %s", st, err, hold)
	}
	stop()

	// The copy copied again holds its queue under a new name, which the
	// first copy's name, left in a unit, does not release.
	again := copyOutbox(copied)
	o, stop = run(again, down, hold)
	if st, err := o.Status(context.Background()); err != nil || st.Held != 1 || st.Hold == hold || len(st.Hold) != 12 {
		t.Errorf("a copy of the copy started with the first copy's hold %s: status %+v, %v; want the message held under another name", hold, st, err)
	}
	stop()
	o, stop = run(again, down, hold)
	if st, err := o.Status(context.Background()); err != nil || st.Held != 1 {
		t.Errorf("a copy of the copy at its second start with the first copy's hold %s: status %+v, %v; want the message held", hold, st, err)
	}
	stop()

	// The original, in its own file, is not held: it relays its queue.
	_, stop = run(original, host.Addr, "")
	got = host.Wait(t, 2, wait)
	stop()
	if id := submit.MessageID(got[1].Data); id != "queued@example.org" {
		t.Fatalf("the original relayed %s, want its queued message", id)
	}

	// Released by its name, the copy relays it too: the user's word that
	// the original did not.
	o, stop = run(copied, host.Addr, hold)
	defer stop()
	got = host.Wait(t, 3, wait)
	if id := submit.MessageID(got[2].Data); id != "queued@example.org" {
		t.Fatalf("the released copy relayed %s, want its held message", id)
	}
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 && st.Held == 0 && st.Hold == "" })
}

// TestReleasedAfterLongHold: a message held longer than MaxAge of the
// queue clock is relayed when released, its time in the queue started
// again. Before, the release's first pass gave it up and bounced it: the
// user asked to send it and got a bounce.
func TestReleasedAfterLongHold(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	const maxAge = 300 * time.Millisecond
	run := func(path, relay string, release string) (*outbox.Outbox, func()) {
		o, err := outbox.Open(outbox.Config{Path: path, Store: dev.Store, Log: dev.Sync, Relay: outbox.Relay{Addr: relay, RootCAs: ca.Pool},
			Hostname: "device.test", MinBackoff: time.Hour, MaxBackoff: time.Hour, MaxAge: maxAge, Logger: slog.New(slog.DiscardHandler), ReleaseHeld: release})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx) }()
		return o, func() {
			cancel()
			<-done
			o.Close()
		}
	}
	original := dev.Store.Path() + ".outbox"
	// Queued while the smarthost cannot be reached, stopped at once (well
	// within MaxAge), then copied.
	o, err := outbox.Open(outbox.Config{Path: original, Store: dev.Store, Log: dev.Sync, Relay: outbox.Relay{Addr: down},
		Hostname: "device.test", MaxAge: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	enqueue(t, o, message("held", ""))
	o.Close()
	copied := filepath.Join(t.TempDir(), "copy.db.outbox")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(original + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(copied+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The copy runs, holding the message, for longer than MaxAge.
	o, stop := run(copied, host.Addr, "")
	hold := waitStatus(t, o, func(st outbox.Status) bool { return st.Held == 1 }).Hold
	time.Sleep(2 * maxAge)
	stop()

	o, stop = run(copied, host.Addr, hold)
	defer stop()
	got := host.Wait(t, 1, wait)
	if id := submit.MessageID(got[0].Data); id != "held@example.org" {
		t.Fatalf("the released copy relayed %s, want its held message", id)
	}
	if st := waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 }); st.Bounced != 0 {
		t.Errorf("the released message bounced: %+v", st)
	}
}

// TestRestoredOutboxHolds: an outbox removed (a disk lost, a folder
// deleted) and restored from a backup at the same path on the same
// machine holds what it had queued: the original may have relayed it
// after the backup was made. The file system gives the restored file the
// next free inode, often the one the removed file had; its birth time
// differs. Before, such a restore with the inode reused relayed the
// queue.
func TestRestoredOutboxHolds(t *testing.T) {
	dev := newDevice(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	// The outbox in a folder of its own, as a device's folder is lost and
	// restored whole.
	dir := filepath.Join(t.TempDir(), "device")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mail.db.outbox")
	open := func() *outbox.Outbox {
		o, err := outbox.Open(outbox.Config{Path: path, Store: dev.Store, Log: dev.Sync, Relay: outbox.Relay{Addr: down},
			Hostname: "device.test", MinBackoff: time.Hour, MaxBackoff: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	o := open()
	enqueue(t, o, message("queued", ""))
	o.Close()
	inode := func() uint64 {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return info.Sys().(*syscall.Stat_t).Ino
	}
	was := inode()

	backup := map[string][]byte{}
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if errors.Is(err, os.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		backup[suffix] = b
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The file system gives a new file the lowest free inode of its
	// group, here most often the removed outbox's; files made meanwhile
	// elsewhere may take it first, so take free inodes with empty files
	// until one is the removed outbox's (bounded), and restore into it.
	var spare []string
	restored := ""
	for i := 0; i < 2000 && restored == ""; i++ {
		name := filepath.Join(dir, fmt.Sprintf("spare%d", i))
		if err := os.WriteFile(name, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if info, err := os.Stat(name); err == nil && info.Sys().(*syscall.Stat_t).Ino == was {
			restored = name
		} else {
			spare = append(spare, name)
		}
	}
	if restored == "" {
		restored = filepath.Join(dir, "restored")
	}
	if err := os.WriteFile(restored, backup[""], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(restored, path); err != nil {
		t.Fatal(err)
	}
	if b, ok := backup["-wal"]; ok {
		if err := os.WriteFile(path+"-wal", b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range spare {
		os.Remove(name)
	}
	t.Logf("inode %d before, %d restored (the same inode is the case this test is for)", was, inode())

	o = open()
	defer o.Close()
	if st, err := o.Status(context.Background()); err != nil || st.Held != 1 {
		t.Errorf("the restored outbox's status %+v, %v: want the queued message held", st, err)
	}
}

// TestRelayRetriesTemporaryFailures: 4xx replies (at MAIL, then at DATA)
// are retried with backoff until the message is accepted, once.
func TestRelayRetriesTemporaryFailures(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	var mails, datas atomic.Int32
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		switch {
		case stage == "MAIL" && mails.Add(1) <= 2:
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		case stage == "DATA" && datas.Add(1) == 1:
			return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "full for now"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	enqueue(t, o, message("retry", ""))
	host.Wait(t, 1, wait)
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	time.Sleep(300 * time.Millisecond) // longer than the backoff: nothing more may go out
	if n := len(host.Received()); n != 1 || mails.Load() != 4 || datas.Load() != 2 {
		t.Errorf("received %d, MAIL %d times, DATA %d times; want 1, 4, 2", n, mails.Load(), datas.Load())
	}
	if inbox := devicetest.Messages(t, dev.Store, "INBOX"); len(inbox) != 0 {
		t.Errorf("a temporary failure bounced: %q", inbox[0].Raw)
	}
}

// TestRelayBouncesPermanentFailures: a recipient refused with 5xx gets a
// delivery status notification (RFC 3464) in INBOX, on every device; the
// others get the message, and Sent has its copy.
func TestRelayBouncesPermanentFailures(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, arg string) error {
		if stage == "RCPT" && strings.HasPrefix(arg, "nobody@") {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	m := message("bounce", "")
	m.Recipients = append(m.Recipients, submit.Recipient{Address: "nobody@example.net", ORCPT: "RFC822;nobody@example.net"},
		submit.Recipient{Address: "quiet@example.net", Notify: []string{"NEVER"}})
	m.EnvelopeID = "env-17"
	enqueue(t, o, m)
	got := host.Wait(t, 1, wait)
	if !slices.Equal(got[0].To, []string{"bob@example.net", "quiet@example.net"}) {
		t.Errorf("relayed to %v", got[0].To)
	}
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	r := readReport(t, inbox[0].Raw)
	if r.final != "nobody@example.net" || r.status != "5.1.1" || !strings.Contains(r.diagnostic, "550 5.1.1 no such user here") ||
		r.envid != "env-17" || !bytes.Equal(r.original, m.Data) {
		t.Errorf("bounce: %+v", r)
	}
	if inbox[0].Envelope.Subject != "Undelivered Mail Returned to Sender" {
		t.Errorf("bounce subject %q", inbox[0].Envelope.Subject)
	}
	other := dev.Spool.Running("other", syncer.Config{Wait: 200 * time.Millisecond}).Store
	devicetest.WaitMessages(t, other, "INBOX", 1, wait)
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.Bounced == 1 && st.ToFile == 0 })
}

// TestRelayBounceReturnsHeader: a refused message sent with RET=HDRS comes
// back with its header alone, up to the blank line that ends it, whatever
// its line ends: here that line is a bare LF and the body holds a CRLF
// blank line further on.
func TestRelayBounceReturnsHeader(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, arg string) error {
		if stage == "RCPT" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	m := message("headers", "")
	header, _, _ := strings.Cut(string(m.Data), "\r\n\r\n")
	header += "\r\n\n"
	m.Data = []byte(header + "Hello\r\n\r\nA second paragraph.\r\n")
	m.Return = "HDRS"
	enqueue(t, o, m)
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	if r := readReport(t, inbox[0].Raw); string(r.original) != header {
		t.Errorf("the bounce of a message sent with RET=HDRS returns %q; want its header %q", r.original, header)
	}
}

// TestRelayNotifyNever: a refused recipient that asked for no notification
// (NOTIFY=NEVER) gets no bounce.
func TestRelayNotifyNever(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, arg string) error {
		if stage == "RCPT" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	m := message("never", "")
	m.Recipients[0].Notify = []string{"NEVER"}
	enqueue(t, o, m)
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 })
	if n := len(devicetest.Messages(t, dev.Store, "INBOX")) + len(host.Received()); n != 0 {
		t.Errorf("%d bounces or deliveries for a refused recipient with NOTIFY=NEVER", n)
	}
}

// TestEnqueueRecognisesResubmission: the same submission again (a client
// that lost the 250) gets the same queue id; a different envelope does not.
func TestEnqueueRecognisesResubmission(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	a := enqueue(t, o, message("twice", ""))
	if b := enqueue(t, o, message("twice", "")); b != a {
		t.Errorf("the same submission again got queue id %s, want %s", b, a)
	}
	m := message("twice", "")
	m.Recipients[0].Address = "eve@example.net"
	if c := enqueue(t, o, m); c == a {
		t.Errorf("another envelope got the same queue id %s", c)
	}
	host.Wait(t, 2, wait)
	time.Sleep(200 * time.Millisecond)
	if n := len(host.Received()); n != 2 {
		t.Errorf("smarthost got %d messages, want 2", n)
	}
}

// TestSameMessageIDTwoMessages: two different messages with one
// Message-ID (a client that reuses Message-IDs, or a message edited and
// sent again) are both relayed and both filed in Sent. Before, the
// second's filing found the first's copy by its Message-ID and filed
// nothing. The same bytes sent again after a lost 250 are still one
// message (TestEnqueueRecognisesResubmission).
func TestSameMessageIDTwoMessages(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	first := message("reused", "")
	edited := message("reused", "")
	edited.Data = bytes.Replace(edited.Data, []byte("Hello reused"), []byte("Hello reused, edited"), 1)
	a := enqueue(t, o, first)
	if b := enqueue(t, o, edited); b == a {
		t.Fatalf("the edited message got the first one's queue id %s", a)
	}
	host.Wait(t, 2, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 && st.ToFile == 0 && st.Relayed == 2 })
	sent := devicetest.Messages(t, dev.Store, "Sent")
	if len(sent) != 2 || !bytes.Equal(sent[0].Raw, first.Data) || !bytes.Equal(sent[1].Raw, edited.Data) {
		var got []string
		for _, m := range sent {
			got = append(got, string(m.Raw))
		}
		t.Fatalf("Sent holds %d messages %q, want the first and the edited one", len(sent), got)
	}
	if n := len(host.Received()); n != 2 {
		t.Errorf("smarthost got %d messages, want 2", n)
	}
}

// TestSentFilterKeepsOneCopy: a client that also saves its copy in Sent
// ends with one copy, whether it saves before the outbox files its own
// (the smarthost was down) or after.
func TestSentFilterKeepsOneCopy(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	var down atomic.Bool
	down.Store(true)
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" && down.Load() {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	filter := o.SentFilter(dev.Sync)
	sentBox, err := dev.Store.MailboxByName(context.Background(), "Sent")
	if err != nil {
		t.Fatal(err)
	}
	clientAppend := func(m *submit.Message) mailstore.Outcome {
		outs, err := filter.Submit(context.Background(), &command.Command{Kind: command.Append, Mailbox: "Sent",
			MailboxID: sentBox.ID, Flags: []string{`\Seen`}, Date: time.Now().UnixMilli(), Body: m.Data})
		if err != nil {
			t.Fatal(err)
		}
		return outs[0]
	}

	// Saved first, while the message waits for the smarthost.
	early := message("early", "")
	enqueue(t, o, early)
	clientAppend(early)
	down.Store(false)
	host.Wait(t, 1, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.ToFile == 0 && st.Queued == 0 })

	// Saved after the outbox filed its copy.
	late := message("late", "")
	enqueue(t, o, late)
	host.Wait(t, 2, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.ToFile == 0 && st.Queued == 0 })
	sent := devicetest.WaitMessages(t, dev.Store, "Sent", 2, wait)
	out := clientAppend(late)
	if len(out.Placed) != 1 || out.Placed[0].ID != sent[1].ID || out.Placed[0].UID != sent[1].UID {
		t.Errorf("the late APPEND was answered with %+v, want the outbox's copy (uid %d)", out.Placed, sent[1].UID)
	}
	// The client's copy as clients keep it: its Bcc field, its own Date,
	// Unix line ends. The same message.
	kept := *late
	kept.Data = []byte(strings.ReplaceAll(strings.Replace(string(late.Data), "Date: Wed, 26 Nov 2025 10:00:00 +0100",
		"Bcc: carol@example.net\r\nDate: Wed, 26 Nov 2025 10:00:01 +0100", 1), "\r\n", "\n"))
	if out := clientAppend(&kept); len(out.Placed) != 1 || out.Placed[0].ID != sent[1].ID {
		t.Errorf("the late APPEND with Bcc, another Date and LF line ends was answered with %+v, want the outbox's copy (uid %d)", out.Placed, sent[1].UID)
	}
	// A message of the same Message-ID but another content (a copy kept
	// unencrypted of a message sent encrypted, a client that reuses
	// Message-IDs) is another message: it is appended. Before, the
	// APPEND was answered with the sent message's copy and the client's
	// message was lost.
	other := *late
	other.Data = []byte(strings.Replace(string(late.Data), "Hello late", "Hello, the text kept in the clear", 1))
	if out := clientAppend(&other); len(out.Placed) != 1 || out.Placed[0].ID == sent[1].ID {
		t.Errorf("an APPEND of another message with the late one's Message-ID was answered with %+v, want a new message", out.Placed)
	}
	// A message not sent through this device is appended as usual.
	clientAppend(message("unrelated", ""))
	sent = devicetest.WaitMessages(t, dev.Store, "Sent", 4, wait)
	var ids []string
	for _, m := range sent {
		ids = append(ids, m.Envelope.MessageID)
	}
	if want := []string{"early@example.org", "late@example.org", "late@example.org", "unrelated@example.org"}; !slices.Equal(ids, want) {
		t.Errorf("Sent holds %v, want %v", ids, want)
	}
}

// TestSentFilterSavedBeforeSubmission: a client that saves its copy in
// Sent before it submits the message (s-nail writes its record first, then
// talks SMTP) ends with one copy too: the outbox's search for an earlier
// copy takes in the one the client appended through this device's IMAP
// server within DuplicateWindow before the submission. Before, the search
// began at Sent's UIDNEXT at submission, and s-nail's Sent had two copies
// of every message it sent.
func TestSentFilterSavedBeforeSubmission(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	filter := o.SentFilter(dev.Sync)
	sentBox, err := dev.Store.MailboxByName(context.Background(), "Sent")
	if err != nil {
		t.Fatal(err)
	}
	m := message("record-first", "")
	outs, err := filter.Submit(context.Background(), &command.Command{Kind: command.Append, Mailbox: "Sent",
		MailboxID: sentBox.ID, Flags: []string{`\Seen`}, Date: time.Now().UnixMilli(), Body: m.Data})
	if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
		t.Fatalf("the client's APPEND: %+v, %v", outs, err)
	}
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	enqueue(t, o, m)
	host.Wait(t, 1, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.ToFile == 0 && st.Queued == 0 })
	if sent := devicetest.Messages(t, dev.Store, "Sent"); len(sent) != 1 {
		t.Errorf("Sent holds %d messages, want the client's copy only", len(sent))
	}
}

// TestSentFilterCopyKeepsOneCopy: a client that saves its copy by COPY
// from a queue folder of its own (Claws Mail APPENDs the message to its
// IMAP Queue before sending it, then copies it to Sent and expunges it
// from Queue) ends with one copy in Sent too: the COPY is answered with
// the outbox's copy and copies nothing. A copy of any other message, or of
// one sent through this device from Sent itself, is made as usual.
func TestSentFilterCopyKeepsOneCopy(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	filter := o.SentFilter(dev.Sync)
	ctx := context.Background()
	submit1 := func(c *command.Command) mailstore.Outcome {
		t.Helper()
		outs, err := filter.Submit(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 1 || outs[0].Status != mailstore.Applied {
			t.Fatalf("%s answered %+v", c.Kind, outs)
		}
		return outs[0]
	}
	submit1(&command.Command{Kind: command.CreateMailbox, Mailbox: "Queue"})
	queue, err := dev.Store.MailboxByName(ctx, "Queue")
	if err != nil {
		t.Fatal(err)
	}
	sentBox, err := dev.Store.MailboxByName(ctx, "Sent")
	if err != nil {
		t.Fatal(err)
	}
	// What Claws Mail queues: its own fields above the message's.
	queued := func(m *submit.Message) command.ID {
		body := append([]byte("AF:\r\nNF:0\r\nPS:10\r\nSCF:#imap/cspool/Sent\r\nX-Claws-End-Special-Headers: 1\r\n"), m.Data...)
		out := submit1(&command.Command{Kind: command.Append, Mailbox: queue.Name, MailboxID: queue.ID,
			Flags: []string{`\Seen`}, Date: time.Now().UnixMilli(), Body: body})
		return out.Placed[0].ID
	}
	copyToSent := func(ids ...command.ID) mailstore.Outcome {
		return submit1(&command.Command{Kind: command.Copy, Mailbox: sentBox.Name, MailboxID: sentBox.ID, IDs: ids})
	}

	m := message("queued", "")
	inQueue := queued(m)
	enqueue(t, o, m)
	host.Wait(t, 1, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.ToFile == 0 && st.Queued == 0 })
	sent := devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	out := copyToSent(inQueue)
	if len(out.Placed) != 1 || out.Placed[0].ID != sent[0].ID || out.Placed[0].UID != sent[0].UID ||
		out.Placed[0].Source != inQueue || out.Placed[0].UIDValidity != sentBox.UIDValidity {
		t.Errorf("the COPY into Sent was answered with %+v, want the outbox's copy (uid %d) from %s", out.Placed, sent[0].UID, inQueue)
	}

	// A message not sent through this device is copied as usual, and so
	// is a copy made from Sent itself.
	other := queued(message("unrelated", ""))
	copyToSent(other)
	copyToSent(sent[0].ID)
	sent = devicetest.WaitMessages(t, dev.Store, "Sent", 3, wait)
	var ids []string
	for _, m := range sent {
		ids = append(ids, m.Envelope.MessageID)
	}
	if want := []string{"queued@example.org", "unrelated@example.org", "queued@example.org"}; !slices.Equal(ids, want) {
		t.Errorf("Sent holds %v, want %v", ids, want)
	}
}

func waitStatus(t *testing.T, o *outbox.Outbox, ok func(outbox.Status) bool) outbox.Status {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		st, err := o.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox status %+v after %v", st, wait)
		}
	}
}

// report is what a test reads from a bounce.
type report struct {
	human, final, status, diagnostic, envid string
	original                                []byte
}

// readReport parses a multipart/report; report-type=delivery-status with
// go-message and returns its parts.
func readReport(t *testing.T, raw []byte) report {
	t.Helper()
	e, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("bounce is %s %v, want multipart/report; report-type=delivery-status", mt, params)
	}
	mr := e.MultipartReader()
	var r report
	for i := 0; ; i++ {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		pt, _, _ := p.Header.ContentType()
		switch pt {
		case "text/plain":
			r.human = string(b)
		case "message/delivery-status":
			for _, l := range strings.Split(string(b), "\r\n") {
				k, v, _ := strings.Cut(l, ": ")
				switch k {
				case "Final-Recipient":
					r.final = strings.TrimPrefix(v, "rfc822; ")
				case "Status":
					r.status = v
				case "Diagnostic-Code":
					r.diagnostic = v
				case "Original-Envelope-Id":
					r.envid = v
				}
			}
		case "message/rfc822", "text/rfc822-headers":
			r.original = b
		default:
			t.Errorf("unexpected part %d: %s", i, pt)
		}
	}
	return r
}

// TestHoldNamedAtOpen: messages held before holds were named (an outbox
// held by an earlier cspool, whose home has no hold name) get a name at
// the next open, which cspool status gives; a release naming no hold
// leaves them held, and that name releases them.
func TestHoldNamedAtOpen(t *testing.T) {
	dev := newDevice(t)
	open := func(path, release string) *outbox.Outbox {
		o, err := outbox.Open(outbox.Config{Path: path, Store: dev.Store, Log: dev.Sync, Relay: outbox.Relay{Addr: "127.0.0.1:1"},
			Hostname: "device.test", Logger: slog.New(slog.DiscardHandler), ReleaseHeld: release})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	status := func(o *outbox.Outbox) outbox.Status {
		st, err := o.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		o.Close()
		return st
	}
	original := dev.Store.Path() + ".outbox"
	o := open(original, "")
	enqueue(t, o, message("held", ""))
	o.Close()
	copied := filepath.Join(t.TempDir(), "copy.db.outbox")
	b, err := os.ReadFile(original)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copied, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if st := status(open(copied, "")); st.Held != 1 || st.Hold == "" {
		t.Fatalf("the copy: %+v, want its message held under a name", st)
	}
	db, err := sql.Open("sqlite", "file:"+copied)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("UPDATE home SET hold = ''"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	st := status(open(copied, "true"))
	if st.Held != 1 || len(st.Hold) != 12 {
		t.Fatalf("an unnamed hold reopened with a bare release: %+v, want the message held, under a new name", st)
	}
	hold := st.Hold
	if st := status(open(copied, hold)); st.Held != 0 || st.Queued != 1 || st.Hold != "" {
		t.Errorf("released by its name %s: %+v, want the message queued, not held", hold, st)
	}
}

// TestStopAfterReplyRelaysOnce: a stop (SIGTERM: the outbox's context
// cancelled) while the smarthost is about to answer the message's DATA
// still records its 250, so that the outbox opened again does not relay
// the message a second time. The record's transaction ran under the
// cancelled context and failed ("context canceled"), and the message went
// out again after the restart.
func TestStopAfterReplyRelaysOnce(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	inData, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{AfterData: func() {
		once.Do(func() {
			close(inData)
			<-release
		})
	}})
	var logBuf testproc.Buffer
	cfg := outbox.Config{Path: dev.Store.Path() + ".outbox", Store: dev.Store, Log: dev.Sync,
		Relay: outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, Hostname: "device.test",
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))}
	o, err := outbox.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	enqueue(t, o, message("stopped", ""))
	select {
	case <-inData:
	case <-time.After(wait):
		t.Fatal("the message never reached the smarthost's DATA")
	}
	stop() // the daemon is told to stop while the 250 is on its way
	close(release)
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("the outbox did not stop")
	}
	o.Close()

	o = startOutbox(t, dev, cfg.Relay, nil)
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	time.Sleep(500 * time.Millisecond) // longer than the backoff: nothing more may go out
	if n := len(host.Received()); n != 1 {
		t.Errorf("the smarthost received the message %d times, want once; the first outbox's log:\n%s", n, logBuf.String())
	}
	if st, err := o.Status(context.Background()); err != nil || st.Queued != 0 {
		t.Errorf("outbox after the restart: %+v, %v; want nothing queued", st, err)
	}
}

// TestLogNamesNoRecipient: the outbox logs the smarthost's reply to an
// attempt without the addresses it quotes (Postfix names the recipient it
// refuses); the bounce, in the user's INBOX, has them whole.
func TestLogNamesNoRecipient(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, arg string) error {
		if stage == "RCPT" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + arg + ">: Recipient address rejected; ask postmaster@example.net"}
		}
		return nil
	}})
	var logBuf testproc.Buffer
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, func(c *outbox.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	enqueue(t, o, message("refused", ""))
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	if r := readReport(t, inbox[0].Raw); !strings.Contains(r.diagnostic, "<bob@example.net>: Recipient address rejected") {
		t.Errorf("the bounce's diagnostic %q, want the smarthost's reply whole", r.diagnostic)
	}
	log := logBuf.String()
	if !strings.Contains(log, "Recipient address rejected") {
		t.Errorf("the outbox's log lacks the reply:\n%s", log)
	}
	for _, addr := range []string{"bob@", "postmaster@", "example.net"} {
		if strings.Contains(log, addr) {
			t.Errorf("the outbox's log names %q:\n%s", addr, log)
		}
	}
}

// TestRelayQuotedLocalPart: a recipient whose local part needs quotes
// ("john doe"@example.net, which the listener hands over unquoted) is
// relayed quoted, and the smarthost takes it; unquoted, it answered 501
// and the message bounced.
func TestRelayQuotedLocalPart(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	m := message("quoted", "")
	m.Recipients = []submit.Recipient{{Address: "john doe@example.net"}}
	enqueue(t, o, m)
	got := host.Wait(t, 1, wait)
	if !slices.Equal(got[0].To, []string{"john doe@example.net"}) {
		t.Errorf("the smarthost took the message for %q, want the mailbox \"john doe\"", got[0].To)
	}
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	if inbox := devicetest.Messages(t, dev.Store, "INBOX"); len(inbox) != 0 {
		t.Errorf("the message bounced: %q", inbox[0].Raw)
	}
}

// TestBounceHasNoControlCharacters: what the client sent as ORCPT (xtext,
// which may decode to any byte) and what the smarthost answered go into
// the bounce's text with their control characters written out (\xHH,
// termtext.Printable): an ESC there is a terminal escape sequence for a
// client that shows mail in a terminal (mutt, aerc).
func TestBounceHasNoControlCharacters(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "RCPT" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no \x1b[31mred\x1b[0m user"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	m := message("controls", "")
	m.Recipients = []submit.Recipient{{Address: "bob@example.net"}, {Address: "carol@example.net", ORCPT: "utf-8;carol\x01\x07\x7f@example.net"}}
	enqueue(t, o, m)
	inbox := devicetest.WaitMessages(t, dev.Store, "INBOX", 1, wait)
	raw := inbox[0].Raw
	end := bytes.Index(raw, []byte("Content-Type: message/rfc822"))
	if end < 0 {
		t.Fatalf("no original in the bounce:\n%s", raw)
	}
	for i, c := range raw[:end] {
		if (c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("byte %#x at %d of the bounce's text:\n%q", c, i, raw[:end])
		}
	}
	for _, want := range []string{`no \x1b[31mred\x1b[0m user`, `carol\x01\x07\x7f@example.net`} {
		if !bytes.Contains(raw[:end], []byte(want)) {
			t.Errorf("%q is not in the bounce's text:\n%q", want, raw[:end])
		}
	}
}

// TestSentFilterWithoutMessageID: a message submitted without a
// Message-ID (the listener adds one; GNU Mailutils' mail writes none) and
// the client's copy of it, without one and with the Bcc field, are told
// by their content: a copy saved after the outbox filed its own is
// answered with that one; the same text sent twice, its copy saved
// before each submission, leaves two copies, one per submission (the
// second copy saved is answered with the first, which the first
// submission took, and the second submission files its own); a copy of
// another text is appended.
func TestSentFilterWithoutMessageID(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	filter := o.SentFilter(dev.Sync)
	sentBox, err := dev.Store.MailboxByName(context.Background(), "Sent")
	if err != nil {
		t.Fatal(err)
	}
	clientAppend := func(data string) mailstore.Outcome {
		t.Helper()
		outs, err := filter.Submit(context.Background(), &command.Command{Kind: command.Append, Mailbox: "Sent",
			MailboxID: sentBox.ID, Flags: []string{`\Seen`}, Date: time.Now().UnixMilli(), Body: []byte(data)})
		if err != nil || len(outs) != 1 || len(outs[0].Placed) != 1 {
			t.Fatalf("the client's APPEND: %+v, %v", outs, err)
		}
		return outs[0]
	}
	// submitted is the message as the listener queues it: a Message-ID
	// added at the top, its content digest kept.
	n := 0
	submitted := func(data string) {
		t.Helper()
		n++
		id := fmt.Sprintf("added%d@device", n)
		enqueue(t, o, &submit.Message{From: "alice@example.org", Recipients: []submit.Recipient{{Address: "bob@example.net"}, {Address: "carol@example.net"}},
			Data: []byte("Message-ID: <" + id + ">\r\n" + data), MessageID: id, Content: submit.ContentDigest([]byte(data))})
		host.Wait(t, n, wait)
		waitStatus(t, o, func(st outbox.Status) bool { return st.ToFile == 0 && st.Queued == 0 })
	}
	const (
		sent   = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: no id\r\nDate: Sun, 6 Dec 2026 16:00:00 +0000\r\n\r\nhello\r\n"
		copied = "From: alice@example.org\r\nBcc: carol@example.net\r\nTo: bob@example.net\r\nSubject: no id\r\nDate: Sun, 6 Dec 2026 16:00:00 +0000\r\n\r\nhello\r\n"
		again  = "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: twice\r\n\r\nsame text\r\n"
	)

	submitted(sent)
	filed := devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	if out := clientAppend(copied); out.Placed[0].ID != filed[0].ID {
		t.Errorf("the copy saved after the filing was answered with %+v, want the outbox's copy (uid %d)", out.Placed, filed[0].UID)
	}
	for range 2 {
		clientAppend(again)
		submitted(again)
	}
	clientAppend("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: no id\r\n\r\nanother text\r\n")
	got := devicetest.WaitMessages(t, dev.Store, "Sent", 4, wait)
	var subjects []string
	for _, m := range got {
		subjects = append(subjects, m.Envelope.Subject+"/"+m.Envelope.MessageID)
	}
	if want := []string{"no id/added1@device", "twice/", "twice/added3@device", "no id/"}; !slices.Equal(subjects, want) {
		t.Errorf("Sent holds %q, want %q", subjects, want)
	}
}

// TestSentFilterCopyBeforeFiling: a client that copies what it sent from
// its queue folder into Sent before the outbox filed its copy (Claws
// Mail, while the smarthost is slow or down) gets the message in Sent as
// it was submitted, without the lines of its own above the header, and
// the outbox, finding it, files none. Before, the queued message was
// copied as it was, and Sent's one copy began with Claws Mail's lines
// (AF:, R: naming every recipient, ..., X-Claws-End-Special-Headers).
func TestSentFilterCopyBeforeFiling(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	var down atomic.Bool
	down.Store(true)
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" && down.Load() {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "down"}
		}
		return nil
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool}, nil)
	filter := o.SentFilter(dev.Sync)
	ctx := context.Background()
	submit1 := func(c *command.Command) mailstore.Outcome {
		t.Helper()
		outs, err := filter.Submit(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 1 || outs[0].Status != mailstore.Applied {
			t.Fatalf("%s answered %+v", c.Kind, outs)
		}
		return outs[0]
	}
	submit1(&command.Command{Kind: command.CreateMailbox, Mailbox: "Queue"})
	queue, err := dev.Store.MailboxByName(ctx, "Queue")
	if err != nil {
		t.Fatal(err)
	}
	sentBox, err := dev.Store.MailboxByName(ctx, "Sent")
	if err != nil {
		t.Fatal(err)
	}
	m := message("slow", "Bcc: carol@example.net\r\n")
	inQueue := submit1(&command.Command{Kind: command.Append, Mailbox: queue.Name, MailboxID: queue.ID, Flags: []string{`\Seen`},
		Date: time.Now().UnixMilli(), Body: append([]byte("AF:\r\nNF:0\r\nR:<bob@example.net>,<carol@example.net>\r\nX-Claws-End-Special-Headers: 1\r\n"), m.Data...)}).Placed[0].ID
	enqueue(t, o, m)
	out := submit1(&command.Command{Kind: command.Copy, Mailbox: sentBox.Name, MailboxID: sentBox.ID, IDs: []command.ID{inQueue}})
	if len(out.Placed) != 1 || out.Placed[0].Source != inQueue {
		t.Errorf("the COPY into Sent was answered with %+v, want one message from %s", out.Placed, inQueue)
	}
	down.Store(false)
	host.Wait(t, 1, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.ToFile == 0 && st.Queued == 0 })
	sent := devicetest.Messages(t, dev.Store, "Sent")
	if len(sent) != 1 {
		for _, m := range sent {
			t.Logf("uid %d: %q", m.UID, m.Raw[:min(len(m.Raw), 60)])
		}
		t.Fatalf("Sent holds %d messages, want one", len(sent))
	}
	if !bytes.Equal(sent[0].Raw, m.Data) {
		t.Errorf("Sent's copy is\n%q\nwant the message as submitted\n%q", sent[0].Raw, m.Data)
	}
}

// scriptedSmarthost is a smarthost over implicit TLS (a certificate from
// ca) that answers every command 250 (DATA 354), one connection after
// another; serve, when it returns false, ends the connection's reading
// right after its 354: the smarthost then reads none of the message and
// never answers, holding the connection open until the test ends. It
// returns the address and the messages it took whole.
func scriptedSmarthost(t *testing.T, ca *sendtest.CA, serve func(conn int) bool) (string, func() [][]byte) {
	t.Helper()
	cert, _, _ := ca.Leaf(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got [][]byte
	var held []net.Conn
	stopped := make(chan struct{})
	t.Cleanup(func() {
		close(stopped)
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	go func() {
		for n := 1; ; n++ {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, raw)
			mu.Unlock()
			go func(n int, c net.Conn) {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				r := bufio.NewReader(tc)
				fmt.Fprintf(tc, "220 scripted.test ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					switch cmd := strings.ToUpper(strings.TrimSpace(line)); {
					case strings.HasPrefix(cmd, "EHLO"):
						fmt.Fprintf(tc, "250-scripted.test\r\n250 8BITMIME\r\n")
					case cmd == "DATA":
						fmt.Fprintf(tc, "354 go ahead\r\n")
						if !serve(n) {
							<-stopped
							return
						}
						var msg bytes.Buffer
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
							msg.WriteString(strings.TrimPrefix(l, "."))
						}
						mu.Lock()
						got = append(got, msg.Bytes())
						mu.Unlock()
						fmt.Fprintf(tc, "250 2.0.0 queued\r\n")
					case cmd == "QUIT":
						fmt.Fprintf(tc, "221 bye\r\n")
						return
					default:
						fmt.Fprintf(tc, "250 ok\r\n")
					}
				}
			}(n, raw)
		}
	}()
	return ln.Addr().String(), func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestRelayStalledData: a smarthost that answers DATA with 354 and then
// reads none of the message is given up on after Relay.Timeout without
// progress, as a command without an answer is, and the message is relayed
// at the next try, once. The write of the message had no deadline (go-smtp
// sets one for commands and for the reply to the final dot only), so the
// relay loop waited on it for good, and every message behind it with it.
func TestRelayStalledData(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	addr, got := scriptedSmarthost(t, ca, func(conn int) bool { return conn > 1 })
	o := startOutbox(t, dev, outbox.Relay{Addr: addr, ImplicitTLS: true, RootCAs: ca.Pool, Timeout: 500 * time.Millisecond}, nil)
	// More than the socket buffers between the two ends hold (a few MB
	// on loopback while the smarthost reads nothing).
	body := strings.Repeat(strings.Repeat("x", 76)+"\r\n", (16<<20)/78)
	m := message("stalled", "")
	m.Data = append(m.Data, body...)
	enqueue(t, o, m)
	for deadline := time.Now().Add(wait); len(got()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			st, _ := o.Status(context.Background())
			t.Fatalf("the message was not relayed within %s after a smarthost that stopped reading it (status %+v)", wait, st)
		}
	}
	if g := got(); len(g) != 1 || !bytes.Equal(g[0], m.Data) {
		t.Errorf("the smarthost took %d messages, want the message once, whole", len(g))
	}
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 && st.Relayed == 1 })
	time.Sleep(500 * time.Millisecond) // longer than the backoff: nothing more may go out
	if n := len(got()); n != 1 {
		t.Errorf("the smarthost took the message %d times, want once", n)
	}
}

// TestRelayEndlessReply: a smarthost, or anyone on the path before
// STARTTLS, answering EHLO with "250-" lines that never end is read up to
// 1 MiB, and the attempt is given up as an outage is: the message stays
// queued, nothing bounces. go-smtp bounds a reply's line, not its lines,
// and net/textproto copies the reply whole at each line: 2 MiB of such
// lines took seconds of CPU and went on until the relay's timeout, and an
// endless one took the daemon past 20 GB within it.
func TestRelayEndlessReply(t *testing.T) {
	dev := newDevice(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	var conns sync.WaitGroup
	t.Cleanup(func() {
		close(stopped)
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				go func() { <-stopped; c.Close() }()
				fmt.Fprintf(c, "220 path.test ESMTP\r\n")
				if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
					return
				}
				w := bufio.NewWriter(c)
				line := "250-" + strings.Repeat("a", 1990) + "\r\n"
				for n := 0; n < 2<<20; n += len(line) {
					if _, err := w.WriteString(line); err != nil {
						return
					}
				}
				w.Flush()
				<-stopped // the reply's last line never comes
			}()
		}
	}()
	o := startOutbox(t, dev, outbox.Relay{Addr: ln.Addr().String(), Timeout: 3 * time.Second}, nil)
	enqueue(t, o, message("endless", ""))
	st := waitStatus(t, o, func(st outbox.Status) bool { return st.LastError != "" })
	if !strings.Contains(st.LastError, "without waiting for the relay") {
		t.Errorf("outbox status %+v after an EHLO reply of 2 MiB, want the reply given up after 1 MiB", st)
	}
	if st.Queued != 1 || st.Bounced != 0 {
		t.Errorf("outbox status %+v, want the message queued, none bounced", st)
	}
	if inbox := devicetest.Messages(t, dev.Store, "INBOX"); len(inbox) != 0 {
		t.Errorf("an endless reply bounced the message: %q", inbox[0].Raw)
	}
}

// TestRelaySlowFinalReply: a smarthost that takes longer than the relay's
// command timeout to answer the final dot (a content scan of a large
// message, a busy server) is waited for, up to Relay.DataTimeout (RFC
// 5321 section 4.5.3.2.6 asks 10 minutes there, since a client that gives
// up sends the message again): the message is relayed once. The relay
// waited as long as for any command (2 minutes), then sent it again.
func TestRelaySlowFinalReply(t *testing.T) {
	dev := newDevice(t)
	ca := sendtest.NewCA(t, t.TempDir())
	var once sync.Once
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{AfterData: func() {
		once.Do(func() { time.Sleep(1500 * time.Millisecond) })
	}})
	o := startOutbox(t, dev, outbox.Relay{Addr: host.Addr, RootCAs: ca.Pool, Timeout: 500 * time.Millisecond, DataTimeout: 10 * time.Second}, nil)
	enqueue(t, o, message("slowdot", ""))
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	waitStatus(t, o, func(st outbox.Status) bool { return st.Queued == 0 })
	time.Sleep(500 * time.Millisecond) // longer than the backoff: nothing more may go out
	if n := len(host.Received()); n != 1 {
		t.Errorf("the smarthost received the message %d times, want once", n)
	}
}

// lmtpBackend is an LMTP server (go-smtp's, in the test process) that
// takes every recipient and counts the messages it is given.
type lmtpBackend struct{ got atomic.Int32 }

func (b *lmtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return lmtpSession{b}, nil }

type lmtpSession struct{ b *lmtpBackend }

func (lmtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (lmtpSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s lmtpSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	s.b.got.Add(1)
	return nil
}
func (lmtpSession) Reset()        {}
func (lmtpSession) Logout() error { return nil }

// TestRelayLMTPQuotedLocalPart: over LMTP (the quickstart's relay), a
// recipient whose local part goes quoted (john doe, sent as "john
// doe"@...) is relayed once and recorded as relayed. The per-recipient
// replies were looked up by the address unquoted while go-smtp's client
// keys them by the path it sent, so the recipient got no outcome, stayed
// pending with its next try at once, and the message was delivered again
// and again, about a hundred times a second, into the user's own INBOX
// through the quickstart's LMTP listener.
func TestRelayLMTPQuotedLocalPart(t *testing.T) {
	dev := newDevice(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &lmtpBackend{}
	srv := smtp.NewServer(b)
	srv.LMTP = true
	srv.Domain = "lmtp.test"
	srv.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	o := startOutbox(t, dev, outbox.Relay{Addr: ln.Addr().String(), LMTP: true}, nil)
	m := message("lmtpquoted", "")
	m.Recipients = []submit.Recipient{{Address: "john doe@example.net"}, {Address: "bob@example.net"}}
	enqueue(t, o, m)
	var st outbox.Status
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		if st, err = o.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st.Queued == 0 || b.got.Load() > 1 || time.Now().After(deadline) {
			break
		}
	}
	devicetest.WaitMessages(t, dev.Store, "Sent", 1, wait)
	time.Sleep(500 * time.Millisecond) // longer than the backoff: nothing more may go out
	if n := b.got.Load(); n != 1 || st.Queued != 0 {
		t.Errorf("the LMTP server was given the message %d times, outbox status %+v; want it once, nothing queued", n, st)
	}
}
