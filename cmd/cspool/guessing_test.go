package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGuessingOneRateForAllListeners runs the quickstart and keeps four
// failed IMAP logins waiting out their delay: a wrong password then sent
// to submission or to the status page is refused unchecked, as a fifth
// IMAP login is (docs/IMAP.md, "Login"). Each listener had a guard of its
// own, so a guesser who used all three had three times the rate the docs
// promise a source.
func TestGuessingOneRateForAllListeners(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	work := t.TempDir()
	imapPort, smtpPort, statusPort := freePort(t), freePort(t), freePort(t)
	qs := startProc(t, "cspool quickstart", work, os.Environ(), bin, "quickstart", "--dir", filepath.Join(work, "state"),
		"--user", "alice", "--http-port", "0", "--lmtp-port", "0", "--imap-port", fmt.Sprint(imapPort),
		"--smtp-port", fmt.Sprint(smtpPort), "--status-addr", fmt.Sprintf("127.0.0.1:%d", statusPort))
	out := qs.waitOutput(t, "See this quickstart's state with:", 60*time.Second)
	password := settingValue(t, out, "password")
	imapAddr := fmt.Sprintf("127.0.0.1:%d", imapPort)

	// login sends a LOGIN with a wrong password on a new connection and
	// returns the connection and its reader, the reply not read.
	login := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", imapAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("IMAP greeting: %v", err)
		}
		if _, err := fmt.Fprintf(c, "a LOGIN alice wrong-guess\r\n"); err != nil {
			t.Fatal(err)
		}
		return c, r
	}
	reply := func(c net.Conn, r *bufio.Reader) string {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("IMAP reply: %v", err)
		}
		return l
	}

	// Four failures answered (delays 0.5 to 4 s), then four more, whose
	// delays (8 to 16 s) keep them waiting while the other listeners are
	// tried.
	var first [4]func() string
	for i := range first {
		c, r := login()
		first[i] = func() string { return reply(c, r) }
	}
	for _, f := range first {
		if l := f(); !strings.HasPrefix(l, "a NO [AUTHENTICATIONFAILED]") {
			t.Fatalf("a wrong IMAP password got %q, want NO [AUTHENTICATIONFAILED]", l)
		}
	}
	var waiting []net.Conn
	for range 4 {
		c, _ := login()
		waiting = append(waiting, c)
	}
	// Once a fifth login is refused unchecked, the four are waiting. The
	// right password is used here, so that a login that is let in counts
	// no failure.
	refused := false
	for range 100 {
		c, err := net.Dial("tcp", imapAddr)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		r.ReadString('\n')
		fmt.Fprintf(c, "b LOGIN alice %s\r\n", password)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		l, _ := r.ReadString('\n')
		c.Close()
		if strings.HasPrefix(l, "b NO [UNAVAILABLE]") {
			refused = true
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !refused {
		t.Fatal("IMAP never refused a login unchecked while four wrong ones were sent")
	}

	// Submission: a wrong password is refused unchecked.
	sc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", smtpPort))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	sc.SetDeadline(time.Now().Add(60 * time.Second))
	sr := bufio.NewReader(sc)
	smtpLine := func() string {
		for {
			l, err := sr.ReadString('\n')
			if err != nil {
				t.Fatalf("SMTP reply: %v", err)
			}
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	smtpLine()
	fmt.Fprintf(sc, "EHLO guesser\r\n")
	smtpLine()
	fmt.Fprintf(sc, "AUTH PLAIN %s\r\n", base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong-guess")))
	smtpReply := smtpLine()

	// The status page: the same.
	req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", statusPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("alice", "wrong-guess")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	// The four IMAP logins must still be waiting for the answers above to
	// mean anything: the shortest waits 8 s.
	for i, c := range waiting {
		c.SetReadDeadline(time.Now())
		var b [1]byte
		if n, _ := c.Read(b[:]); n > 0 {
			t.Fatalf("waiting IMAP login %d was answered before submission and the page were tried: the machine was too slow for this test", i)
		}
	}
	if !strings.HasPrefix(smtpReply, "454 4.7.0") {
		t.Errorf("submission answered a wrong password %q while four failed IMAP logins waited; want 454 4.7.0 (refused unchecked)", strings.TrimSpace(smtpReply))
	}
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("the status page answered a wrong password %d while four failed IMAP logins waited; want 429 (refused unchecked)", resp.StatusCode)
	}
	qs.stop(t, syscall.SIGINT, 30*time.Second)
	if log := qs.stderr.String(); strings.Contains(log, password) || strings.Contains(log, "wrong-guess") {
		t.Errorf("the log holds a password tried:\n%s", log)
	}
}
