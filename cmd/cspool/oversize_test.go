package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// TestOversizeDeliveryRefused: the spool holds the spool key, so it may
// put in a user's log a delivery of any size, sealed and signed as any
// other (here `cspool deliver` appends one of 120 MB straight into the
// spool's directory, past the server's own bound on appends). A device
// takes a delivery up to its --max-message-size (50 MiB by default)
// sealed; beyond, it syncs nothing from that entry on, logs an error
// naming the spool's URL, the entry's position and its size with a hint,
// keeps its peak resident size near its resting size (the frame's length
// is read, not the entry), and serves over IMAP what it had. Started
// again with a --max-message-size above it, the device takes the message
// and the mail after it. Before, the device took any entry up to 1 GiB:
// this one cost it a peak of about 2.4 times the message (about 290 MB)
// and 120 MB of disk.
func TestOversizeDeliveryRefused(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary, delivers a 120 MB message")
	}
	const (
		size     = 120 << 20
		peakMost = 128 << 20 // the daemon's peak resident size at the refusal
	)
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	s.deliver(t, 1)

	var msg strings.Builder
	msg.WriteString("From: stranger@example.net\r\nTo: alice@example.org\r\nSubject: far too large\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for msg.Len() < size {
		msg.WriteString(line)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "large"), []byte(msg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	msg.Reset()
	// Straight into the spool's directory, as the spool's operator can.
	runCmd(t, s.dir, s.env, "large", bin, "deliver", "--user", s.user, "--user-key=user.pub", "--spool-key=spool.sec",
		"--max-size", fmt.Sprint(2*size))
	if err := os.Remove(filepath.Join(s.dir, "large")); err != nil {
		t.Fatal(err)
	}

	s.startDaemonWith(t, "mail.db", "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	want := fmt.Sprintf("the spool at %s sent an entry at position 2 of", s.spoolURL)
	for i := 0; !strings.Contains(s.daemon.stderr.String(), want); i++ {
		if i == 600 {
			t.Fatalf("the daemon did not log %q within 60 s; its log:\n%s", want, s.daemon.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid := s.daemon.cmd.Process.Pid
	peak := procStatusKiB(t, pid, "VmHWM") << 10
	t.Logf("the daemon's peak resident size at the refusal: %d MiB", peak>>20)
	if peak > peakMost {
		t.Errorf("the daemon's peak resident size is %d MiB after the spool sent a delivery of %d MiB, want at most %d MiB: it read the entry",
			peak>>20, size>>20, peakMost>>20)
	}
	logText := s.daemon.stderr.String()
	for _, w := range []string{"more than this device takes", "--max-message-size at least the spool's"} {
		if !strings.Contains(logText, w) {
			t.Errorf("the daemon's log does not say %q; its log:\n%s", w, logText)
		}
	}
	if fi, err := os.Stat(filepath.Join(s.dir, "mail.db")); err != nil || fi.Size() > 16<<20 {
		t.Errorf("the device's database: %v, want it under 16 MiB (the large message not kept)", err)
	}
	c := s.login(t)
	awaitMessages(t, c, 1)
	c.Close()

	// Mail after the large message waits behind it, until the device
	// takes messages that large.
	s.deliver(t, 1)
	s.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	s.startDaemonWith(t, "mail.db", "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--max-message-size", fmt.Sprint(2*size))
	c = s.login(t)
	defer c.Close()
	awaitMessages(t, c, 3)
}

// login is a go-imap client logged in to the daemon.
func (s *statusSetup) login(t *testing.T) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", s.imapPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(s.user, s.password).Wait(); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}
