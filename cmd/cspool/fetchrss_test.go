package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestFetchSectionRSS measures the daemon's peak resident size while 8
// connections fetch a section of a 47 MB message at once, for BODY[],
// BODY[1], BINARY[1] and BODY[]<0.100> in turn (docs/BENCHMARKS.md,
// "Large section FETCH"). It only reports: run it with
// CSPOOL_FETCHRSS=1. Each client reads its literal in pieces and keeps
// none of it, so the test process stays small.
func TestFetchSectionRSS(t *testing.T) {
	if os.Getenv("CSPOOL_FETCHRSS") == "" {
		t.Skip("a measurement: set CSPOOL_FETCHRSS=1")
	}
	const conns = 8
	lmtpAddr, s, dial := startHostileRig(t)

	// Part 1 is a base64 attachment of 47 MB, part 2 a line of text.
	line := "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
	var msg strings.Builder
	msg.WriteString("From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: large\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for msg.Len() < 47_000_000 {
		msg.WriteString(line)
	}
	msg.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n--b--\r\n")
	sent := msg.String()
	lmtpDeliver(t, lmtpAddr, sent)
	first := dial()
	defer first.Close()
	awaitMessages(t, first, 1)

	// What each form gives, its length and first bytes. The spool adds
	// its trace fields at the top.
	hsec := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
	got, err := first.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{hsec}}).Collect()
	if err != nil || len(got) != 1 {
		t.Fatalf("FETCH BODY.PEEK[HEADER]: %d messages, %v", len(got), err)
	}
	stored := string(got[0].FindBodySection(hsec)) + sent[strings.Index(sent, "\r\n\r\n")+4:]
	start := strings.Index(sent, "base64\r\n\r\n") + len("base64\r\n\r\n")
	end := strings.Index(sent, "--b\r\nContent-Type: text/plain")
	part1 := sent[start : end-2]
	decoded, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(part1, "\r\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	forms := []struct {
		name string
		opts *imap.FetchOptions
		want string
	}{
		{"BODY[]", &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}, stored},
		{"BODY[1]", &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Part: []int{1}, Peek: true}}}, part1},
		{"BINARY[1]", &imap.FetchOptions{BinarySection: []*imap.FetchItemBinarySection{{Part: []int{1}, Peek: true}}}, string(decoded)},
		{"BODY[]<0.100>", &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true, Partial: &imap.SectionPartial{Size: 100}}}}, stored[:100]},
	}
	for _, f := range forms {
		// A daemon of its own for each form, started on the store the
		// first synced: the memory one form's FETCHes leave to the Go
		// runtime would serve the next.
		s.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
		s.startDaemonWith(t, "mail.db", "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		clients := make([]*imapclient.Client, conns)
		for i := range clients {
			c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", s.imapPort), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login(s.user, s.password).Wait(); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				t.Fatal(err)
			}
			clients[i] = c
		}
		pid := s.daemon.cmd.Process.Pid
		// The daemon's start (its first look at the store) settles
		// first: its resident size steady for a second, at most 15 s.
		for prev, i := int64(-1), 0; i < 15; i++ {
			cur := procStatusKiB(t, pid, "VmRSS")
			if prev >= 0 && cur-prev < 1024 && prev-cur < 1024 {
				break
			}
			prev = cur
			time.Sleep(time.Second)
		}
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatalf("resetting the daemon's peak resident size: %v", err)
		}
		rest := procStatusKiB(t, pid, "VmRSS") << 10
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fetchDiscarding(c, f.opts, f.want); err != nil {
					errs <- fmt.Errorf("FETCH %s: %v", f.name, err)
				}
			}()
		}
		waitGroup(t, &wg, 5*time.Minute, "the FETCHes of "+f.name)
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		hwm := procStatusKiB(t, pid, "VmHWM") << 10
		t.Logf("%-14s %d connections: daemon resident %d MiB before, peak %d MiB (+%d MiB), %.1f s",
			f.name, conns, rest>>20, hwm>>20, (hwm-rest)>>20, time.Since(start).Seconds())
		for _, c := range clients {
			c.Close()
		}
	}
}

// fetchDiscarding fetches message 1 with opts on c and checks that its
// one section has want's length and starts with want's first bytes,
// reading the literal in pieces.
func fetchDiscarding(c *imapclient.Client, opts *imap.FetchOptions, want string) error {
	cmd := c.Fetch(imap.SeqSetNum(1), opts)
	defer cmd.Close()
	msg := cmd.Next()
	if msg == nil {
		return fmt.Errorf("no message")
	}
	var n int64
	var head []byte
	for {
		item := msg.Next()
		if item == nil {
			break
		}
		var lit imap.LiteralReader
		switch item := item.(type) {
		case imapclient.FetchItemDataBodySection:
			lit = item.Literal
		case imapclient.FetchItemDataBinarySection:
			lit = item.Literal
		}
		if lit == nil {
			continue
		}
		buf := make([]byte, 64<<10)
		for {
			k, err := lit.Read(buf)
			if len(head) < 100 {
				head = append(head, buf[:min(k, 100-len(head))]...)
			}
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
	}
	for cmd.Next() != nil {
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	if n != int64(len(want)) || !bytes.Equal(head, []byte(want[:min(100, len(want))])) {
		return fmt.Errorf("got %d bytes starting %q, want %d starting %q", n, head, len(want), want[:min(100, len(want))])
	}
	return nil
}
