package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestFetchMemoryBounded: anyone may mail a user a message of the
// largest size, and the user's clients fetch its parts on several
// connections at once. A 30 MB message is delivered over LMTP to a real
// server, the daemon syncs it, and 12 connections of a go-imap client
// ask at once for the first 100 bytes of its attachment
// (BODY.PEEK[2]<0.100>), which has the daemon read the message and
// extract the part. Each must get those 100 bytes, BODY[] must give the
// message back byte for byte, and the daemon's peak resident memory
// while they are served must stay within its FETCH budget
// (imapd.Config.FetchMemory: four times the 50 MiB message limit) plus
// a margin. Each connection held its own copies of the message before
// (about 3.4 times its size): 12 of them took the daemon about 1 GB
// above its resting size.
func TestFetchMemoryBounded(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary, delivers and fetches a 30 MB message")
	}
	const (
		conns  = 12
		budget = 4 * 50 << 20 // imapd's default FetchMemory
		margin = 64 << 20
	)
	lmtpAddr, s, dial := startHostileRig(t)

	line := "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
	var msg strings.Builder
	msg.WriteString("From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: large\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nsee the attachment\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	for msg.Len() < 30<<20 {
		msg.WriteString(line)
	}
	msg.WriteString("--b--\r\n")
	sent := msg.String()
	lmtpDeliver(t, lmtpAddr, sent)
	first := dial()
	defer first.Close()
	awaitMessages(t, first, 1)
	whole := &imap.FetchItemBodySection{Peek: true}
	got, err := first.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{whole}}).Collect()
	if err != nil || len(got) != 1 {
		t.Fatalf("FETCH BODY.PEEK[]: %d messages, %v", len(got), err)
	}
	if body := got[0].FindBodySection(whole); !bytes.HasSuffix(body, []byte(sent)) {
		t.Fatalf("BODY[] is %d bytes and does not end with the %d bytes delivered", len(body), len(sent))
	}

	clients := make([]*imapclient.Client, conns)
	for i := range clients {
		clients[i] = dial()
		defer clients[i].Close()
		if _, err := clients[i].Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
	}
	pid := s.daemon.cmd.Process.Pid
	// The peak so far (the sync's) is forgotten: VmHWM starts again from
	// the resident size now (proc(5), clear_refs).
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Fatalf("resetting the daemon's peak resident size: %v", err)
	}
	rest := procStatusKiB(t, pid, "VmRSS") << 10
	part := &imap.FetchItemBodySection{Part: []int{2}, Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: 100}}
	want := []byte(strings.Repeat(line, 2)[:100])
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{part}}).Collect()
			switch {
			case err != nil:
				errs <- fmt.Errorf("FETCH BODY.PEEK[2]<0.100>: %v", err)
			case len(got) != 1 || !bytes.Equal(got[0].FindBodySection(part), want):
				errs <- fmt.Errorf("FETCH BODY.PEEK[2]<0.100>: got %d messages, want one with %q", len(got), want)
			}
		}()
	}
	waitGroup(t, &wg, 5*time.Minute, "the FETCHes of the attachment")
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	hwm := procStatusKiB(t, pid, "VmHWM") << 10
	t.Logf("daemon resident at %d MiB, peak %d MiB while %d connections fetched a part of a %d MB message",
		rest>>20, hwm>>20, conns, len(sent)>>20)
	if hwm-rest > budget+margin {
		t.Errorf("the daemon's peak resident size grew by %d MiB while the part was fetched, want at most the FETCH budget %d MiB and %d MiB",
			(hwm-rest)>>20, budget>>20, margin>>20)
	}
}

// startHostileRig starts a spool server taking mail for alice@example.org
// over LMTP and a device daemon of alice's syncing from it, from the built
// binary; it returns the LMTP address, the daemon's setup and a dial of
// a go-imap client logged in to the daemon.
func startHostileRig(t *testing.T) (string, *statusSetup, func() *imapclient.Client) {
	t.Helper()
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv := startServer(t, bin, lmtpServerArgs(dir, usersPath, lmtpAddr)...)
	t.Cleanup(func() { srv.stop(t) })
	s := &statusSetup{bin: bin, dir: dir, user: "alice", env: append(os.Environ(), "USER=alice"), spoolURL: srv.url}
	s.startDaemonWith(t, "mail.db", "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	addr := fmt.Sprintf("127.0.0.1:%d", s.imapPort)
	return lmtpAddr, s, func() *imapclient.Client {
		t.Helper()
		c, err := imapclient.DialInsecure(addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login(s.user, s.password).Wait(); err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// lmtpDeliver delivers msg to alice@example.org over LMTP.
func lmtpDeliver(t *testing.T, lmtpAddr, msg string) {
	t.Helper()
	lc := dialLMTP(t, lmtpAddr)
	defer lc.Close()
	if err := lc.SendMail("stranger@example.net", []string{"alice@example.org"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("LMTP delivery of %d bytes: %v", len(msg), err)
	}
}

// awaitMessages selects INBOX until it has n messages (at most 60 s).
func awaitMessages(t *testing.T, c *imapclient.Client, n uint32) {
	t.Helper()
	for i := 0; ; i++ {
		sd, err := c.Select("INBOX", nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		if sd.NumMessages == n {
			return
		}
		if i == 600 {
			t.Fatalf("INBOX has %d messages after 60 s, want %d", sd.NumMessages, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
