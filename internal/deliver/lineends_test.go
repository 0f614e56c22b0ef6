package deliver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
	"cspool/internal/syncer"
)

// lineEndCases are DATA contents as they appear on the wire, each with the
// bytes stored for it: dot-unstuffed, with every byte up to and including
// the CRLF before the final "." kept as sent. Only CRLF ends a line, so a
// "." after a bare CR or a bare LF is data.
var lineEndCases = []struct{ name, wire, want string }{
	{"last line ends in a bare CR", "Subject: x\r\n\r\nbody\r\r\n.\r\n", "Subject: x\r\n\r\nbody\r\r\n"},
	{"message of one bare CR", "\r\r\n.\r\n", "\r\r\n"},
	{"CR CR CR LF at the end", "a\r\r\r\n.\r\n", "a\r\r\r\n"},
	{"CR LF then a line of a bare CR", "a\r\n\r\r\n.\r\n", "a\r\n\r\r\n"},
	{"bare CR inside a line", "a\rb\r\n.\r\n", "a\rb\r\n"},
	{"bare CR inside every line", "a\rb\r\nc\rd\r\r\n.\r\n", "a\rb\r\nc\rd\r\r\n"},
	{"bare LF inside a line", "a\nb\r\n.\r\n", "a\nb\r\n"},
	{"last line ends in a bare LF", "a\n\r\n.\r\n", "a\n\r\n"},
	{"LF CR CR LF at the end", "a\n\r\r\n.\r\n", "a\n\r\r\n"},
	{"dot after a bare CR is data", "a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n"},
	{"dot after a bare LF is data", "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n"},
	{"two dots after a bare CR are kept", "a\r..b\r\n.\r\n", "a\r..b\r\n"},
	{"two dots after a bare LF are kept", "a\n..b\r\n.\r\n", "a\n..b\r\n"},
	{"stuffed dot after CR CR LF", "a\r\r\n..b\r\n.\r\n", "a\r\r\n.b\r\n"},
	{"stuffed lone dot after CR CR LF", "a\r\r\n..\r\n.\r\n", "a\r\r\n.\r\n"},
	{"stuffed line of a dot and a bare CR", "..\r\r\n.\r\n", ".\r\r\n"},
	{"line of a bare CR with its dot unstuffed", ".\r\r\n.\r\n", "\r\r\n"},
	{"dot, bare CR and a letter", ".\rx\r\n.\r\n", "\rx\r\n"},
	{"dot, bare CR, dot", ".\r.\r\n.\r\n", "\r.\r\n"},
	{"empty message", ".\r\n", ""},
	{"empty last line", "a\r\n\r\n.\r\n", "a\r\n\r\n"},
	{"8-bit and NUL before a bare CR", "\x00\xff\xe9\r\r\n.\r\n", "\x00\xff\xe9\r\r\n"},
	{"line of 1 MiB", strings.Repeat("x", 1<<20) + "\r\n.\r\n", strings.Repeat("x", 1<<20) + "\r\n"},
	{"line of 1 MiB ending in a bare CR", strings.Repeat("y", 1<<20) + "\r\r\n.\r\n", strings.Repeat("y", 1<<20) + "\r\r\n"},
}

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
	for i, c := range lineEndCases {
		s := dialScripted(t, addr)
		_ = s.c.SetDeadline(time.Now().Add(20 * time.Second))
		// Half the cases are pipelined in one write with the commands
		// around them.
		if i%2 == 0 {
			s.cmd("LHLO mta.test", "250 ")
			s.cmd("MAIL FROM:<sender@example.net>", "250 ")
			s.cmd("RCPT TO:<alice@example.org>", "250 ")
			s.cmd("DATA", "354 ")
			s.write(c.wire)
		} else {
			s.write("LHLO mta.test\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n" + c.wire + "NOOP\r\n")
			for _, want := range []string{"250 ", "250 ", "250 ", "354 "} {
				s.expect(want)
			}
		}
		if code, line := s.reply(); code != 250 {
			t.Fatalf("%s: reply %q to the end of the data, want 250", c.name, line)
		}
		if i%2 == 0 {
			s.write("NOOP\r\n")
		}
		if code, line := s.reply(); code != 250 {
			t.Fatalf("%s: NOOP after the message got %q, want 250 (connection out of step)", c.name, line)
		}
		s.cmd("QUIT", "221 ")
	}
	got := f.bodies(t, "alice")
	if len(got) != len(lineEndCases) {
		t.Fatalf("log has %d entries, want %d", len(got), len(lineEndCases))
	}
	for i, c := range lineEndCases {
		if !bytes.Equal(got[i], []byte(c.want)) {
			t.Errorf("%s: stored %s, want %s", c.name, short(got[i]), short([]byte(c.want)))
		}
	}

	// A device syncs the log and holds the same bytes.
	ms, err := mailstore.Open(filepath.Join(t.TempDir(), "device.db"))
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
	if err := sy.WaitApplied(ctx, uint64(len(lineEndCases))); err != nil {
		t.Fatalf("device did not apply the log: %v", err)
	}
	for i, c := range lineEndCases {
		m, err := ms.Message(ctx, mailstore.InboxID(), imap.UID(i+1), mailstore.WantRaw)
		if err != nil {
			t.Fatalf("%s: reading message %d on the device: %v", c.name, i+1, err)
		}
		if !bytes.Equal(m.Raw, []byte(c.want)) {
			t.Errorf("%s: device holds %s, want %s", c.name, short(m.Raw), short([]byte(c.want)))
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
