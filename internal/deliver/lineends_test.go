package deliver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/smtpdata/smtpdatatest"
	"cspool/internal/syncer"
)

// TestLMTPDataLineEnds sends every CR/LF shape over a real connection,
// written byte for byte (Go's and Python's clients would normalise them),
// and requires the reply within seconds, the connection still in step
// afterwards, and exactly the bytes of the table in the log and on a device
// that syncs it.
func TestLMTPDataLineEnds(t *testing.T) {
	f := newFixture(t, "alice")
	// A read timeout far beyond the test's deadline: a missed end of data
	// shows as no reply at all.
	addr := serve(t, f.d, LMTPOptions{ReadTimeout: 10 * time.Minute})
	for i, c := range smtpdatatest.LineEndCases() {
		s := dialScripted(t, addr)
		_ = s.c.SetDeadline(time.Now().Add(20 * time.Second))
		// Half the cases are pipelined in one write with the commands
		// around them.
		if i%2 == 0 {
			s.cmd("LHLO mta.test", "250 ")
			s.cmd("MAIL FROM:<sender@example.net>", "250 ")
			s.cmd("RCPT TO:<alice@example.org>", "250 ")
			s.cmd("DATA", "354 ")
			s.write(c.Wire)
		} else {
			s.write("LHLO mta.test\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n" + c.Wire + "NOOP\r\n")
			for _, want := range []string{"250 ", "250 ", "250 ", "354 "} {
				s.expect(want)
			}
		}
		if code, line := s.reply(); code != 250 {
			t.Fatalf("%s: reply %q to the end of the data, want 250", c.Name, line)
		}
		if i%2 == 0 {
			s.write("NOOP\r\n")
		}
		if code, line := s.reply(); code != 250 {
			t.Fatalf("%s: NOOP after the message got %q, want 250 (connection out of step)", c.Name, line)
		}
		s.cmd("QUIT", "221 ")
	}
	got := f.bodies(t, "alice")
	if len(got) != len(smtpdatatest.LineEndCases()) {
		t.Fatalf("log has %d entries, want %d", len(got), len(smtpdatatest.LineEndCases()))
	}
	for i, c := range smtpdatatest.LineEndCases() {
		if !bytes.Equal(got[i], []byte(c.Want)) {
			t.Errorf("%s: stored %s, want %s", c.Name, short(got[i]), short([]byte(c.Want)))
		}
	}

	// A device syncs the log and holds the same bytes.
	ms, err := mailstore.Open(filepath.Join(t.TempDir(), "device.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	sy, err := syncer.New(syncer.Config{User: "alice", UserKey: f.userKeys["alice"], SpoolKey: f.spoolKey.Public(),
		Source: syncer.StoreSource{Store: f.store, User: "alice"}, Store: ms,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- sy.Run(ctx) }()
	if err := sy.WaitApplied(ctx, uint64(len(smtpdatatest.LineEndCases()))); err != nil {
		t.Fatalf("device did not apply the log: %v", err)
	}
	for i, c := range smtpdatatest.LineEndCases() {
		m, err := ms.Message(ctx, mailstore.InboxID(), mailstore.UID(i+1), mailstore.WantRaw)
		if err != nil {
			t.Fatalf("%s: reading message %d on the device: %v", c.Name, i+1, err)
		}
		want := "Return-Path: <sender@example.net>\r\nDelivered-To: alice@example.org\r\n" + c.Want
		if !bytes.Equal(m.Raw, []byte(want)) {
			t.Errorf("%s: device holds %s, want %s", c.Name, short(m.Raw), short([]byte(want)))
		}
	}
	cancel()
	<-runDone
}

// TestLMTPBDATBytes: BDAT chunks (RFC 3030) are stored exactly, with no dot
// unstuffing, whatever lines they hold, even one that reads "DATA".
func TestLMTPBDATBytes(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	chunks := []string{"Subject: b\r\n\r\nDATA\r\n.\r\n", "..x\r\r\n\n.\r", "\nend\r\r\n"}
	s.write("MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
	s.expect("250 ")
	s.expect("250 ")
	for i, c := range chunks {
		last := ""
		if i == len(chunks)-1 {
			last = " LAST"
		}
		s.write(fmt.Sprintf("BDAT %d%s\r\n%s", len(c), last, c))
		s.expect("250 ")
	}
	s.cmd("NOOP", "250 ")
	if got, want := f.bodies(t, "alice"), strings.Join(chunks, ""); len(got) != 1 || string(got[0]) != want {
		t.Fatalf("log of alice: %q, want one entry %q", got, want)
	}
}

// TestLMTPBDATCutShort: a message whose connection ends inside its last
// BDAT chunk is not delivered. go-smtp reads a chunk with io.Copy from an
// io.LimitReader, which takes the connection's end for the chunk's: the
// message cut short was delivered as if whole.
func TestLMTPBDATCutShort(t *testing.T) {
	f := newFixture(t, "alice")
	addr := serve(t, f.d, LMTPOptions{})
	s := dialScripted(t, addr)
	s.cmd("LHLO mta.test", "250 ")
	msg := "Subject: b\r\n\r\nPay the invoice of 1000 euros;\r\ndo NOT pay the other one.\r\n"
	s.write("MAIL FROM:<s@example.net>\r\nRCPT TO:<alice@example.org>\r\n")
	s.expect("250 ")
	s.expect("250 ")
	s.write(fmt.Sprintf("BDAT %d LAST\r\n", len(msg)) + msg[:45])
	if err := s.c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(s.r)
	if err != nil {
		t.Fatalf("reading to the end: %v", err)
	}
	if got := f.bodies(t, "alice"); len(got) != 0 {
		t.Fatalf("log of alice: %q after a chunk cut short (answered %q), want nothing", got, rest)
	}
}
