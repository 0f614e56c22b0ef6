package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"
)

// TestDamagedDatabaseHint: a device database whose pages were damaged
// (all but its first, after a clean stop) stops the daemon with what to
// do: it is a copy of the spool's log, so moving it aside and starting
// again rebuilds it, and only changes not sent yet are in it alone.
// Before, the daemon said "imapd: reading the mailboxes: listing
// mailboxes: sqlite3: database disk image is malformed" and nothing else.
// With the file moved aside as the hint says, the daemon starts and syncs.
func TestDamagedDatabaseHint(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	env := os.Environ()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-dir", "spool", "--users", usersPath, "--spool-key", "spool.sec")
	waitHealthy(t, url, server)
	for i := range 3 {
		msg := fmt.Sprintf("m%d.eml", i)
		if err := os.WriteFile(filepath.Join(dir, msg), fmt.Appendf(nil, "Subject: %d\r\n\r\nbody\r\n", i), 0o600); err != nil {
			t.Fatal(err)
		}
		runCmd(t, dir, env, msg, bin, "deliver", "--user", "alice", "--user-key", "user.pub", "--spool-key", "spool.sec", "--spool-server", url)
	}
	device := []string{"--db", "alice.db", "--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--spool-server", url}
	runCmd(t, dir, env, "", bin, append([]string{"sync"}, device...)...)
	db := filepath.Join(dir, "alice.db")
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(db + suffix)
	}
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	if len(b) < 3*page {
		t.Fatalf("alice.db is %d bytes: too small to damage", len(b))
	}
	for i := page; i < len(b); i++ {
		b[i] = 0
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	imapPort := freePort(t)
	args := append([]string{"imap-server", "--port", fmt.Sprint(imapPort), "--status-addr", ""}, device...)
	code, _, stderr := runExit(t, dir, env, bin, args...)
	if code == 0 || !strings.Contains(stderr, "alice.db is damaged") || !strings.Contains(stderr, "move alice.db and alice.db-wal aside") {
		t.Fatalf("cspool imap-server on a damaged database: exit %d, want the damaged database's hint:\n%s", code, stderr)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(db+suffix, db+suffix+".damaged"); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	daemon := startProc(t, "cspool imap-server", dir, env, bin, args...)
	daemon.waitOutput(t, "state:", 30*time.Second)
	out := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, out, _ = runExit(t, dir, env, bin, "status", "--db", "alice.db"); strings.Contains(out, "Position:      3 of 3") {
			return
		}
	}
	t.Errorf("after the move the daemon did not sync the 3 messages; cspool status:\n%s", out)
}

// TestDamagedWhileRunning: the database of a running daemon damaged under
// it (a failing disk): an IMAP command that meets the damage is answered
// NO [CORRUPTION] saying what to do, not NO [SERVERBUG] "see the daemon's
// log", and the daemon logs the hint naming the file once, not once per
// command. The daemon keeps answering.
func TestDamagedWhileRunning(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	env := os.Environ()
	port, lmtpPort := freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-dir", "spool", "--users", usersPath, "--spool-key", "spool.sec", "--lmtp", fmt.Sprintf("127.0.0.1:%d", lmtpPort))
	waitHealthy(t, url, server)
	// 8 MB of mail, more than the database connections' page caches hold.
	const messages = 400
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", lmtpPort), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lc := smtp.NewClientLMTP(conn)
	defer lc.Close()
	for i := range messages {
		body := fmt.Sprintf("Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat(fmt.Sprintf("line %d of a message that fills pages\r\n", i), 500))
		if err := lc.SendMail("sender@example.net", []string{"alice@example.org"}, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
	imapPort := freePort(t)
	args := []string{"imap-server", "--port", fmt.Sprint(imapPort), "--status-addr", "", "--db", "alice.db", "--user", "alice",
		"--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "spool.pub", "--spool-server", url}
	daemon := startProc(t, "cspool imap-server", dir, env, bin, args...)
	pw := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))
	out := ""
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out, fmt.Sprintf("Position:      %d of %d", messages, messages)); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not sync the %d messages; cspool status:\n%s", messages, out)
		}
		_, out, _ = runExit(t, dir, env, bin, "status", "--db", "alice.db")
	}

	// The damage: every page but the first, of the file and of its
	// write-ahead log's frames, zeroed under the running daemon.
	db := filepath.Join(dir, "alice.db")
	for _, f := range []struct {
		suffix string
		keep   int64
	}{{"", 4096}, {"-wal", 32}} {
		fi, err := os.Stat(db + f.suffix)
		if err != nil || fi.Size() <= f.keep {
			continue
		}
		w, err := os.OpenFile(db+f.suffix, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt(make([]byte, fi.Size()-f.keep), f.keep); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}

	c, err := imapclient.DialInsecure(fmt.Sprintf("127.0.0.1:%d", imapPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", pw).Wait(); err != nil {
		t.Fatal(err)
	}
	var every imap.SeqSet // 1:messages (SeqSetNum(1, messages) is the two numbers)
	every.AddRange(1, messages)
	for range 3 {
		_, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
		if err == nil {
			_, err = c.Fetch(every, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		}
		var ie *imap.Error
		if !errors.As(err, &ie) || ie.Code != imap.ResponseCodeCorruption || !strings.Contains(ie.Text, "move the database aside") {
			t.Fatalf("SELECT and FETCH of every body on a damaged database: %v; want NO [CORRUPTION] saying what to do", err)
		}
	}
	// The daemon still answers.
	if err := c.Noop().Wait(); err != nil {
		t.Errorf("NOOP after the damage: %v", err)
	}
	logged := strings.Count(daemon.stderr.String(), "the local mail store cannot be read or written until this is fixed")
	if logged != 1 || !strings.Contains(daemon.stderr.String(), "alice.db is damaged") {
		t.Errorf("the hint was logged %d times (want once, naming alice.db); log:\n%s", logged, daemon.stderr)
	}
}
