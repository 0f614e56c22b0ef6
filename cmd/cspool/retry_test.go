package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
)

// TestLMTPRetryShownOnce: an MTA that loses the answer to a delivery (here
// the connection closed right after the message's last line) sends the
// same bytes again; the log holds both, and a device shows the message
// once, listing the retry as a rejected duplicate. A second message with
// the same text but another Received field is a message of its own.
func TestLMTPRetryShownOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServer(t, bin, lmtpServerArgs(dir, usersPath, lmtpAddr)...)
	defer p.stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ac, err := api.NewClient(p.url, "alice", alice, nil)
	if err != nil {
		t.Fatal(err)
	}

	msg := "Received: from mx.example.net by relay.example.org with ESMTP id 4AbCd1; Fri, 4 Dec 2026 10:00:00 +0000\r\n" +
		"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: retried\r\nMessage-ID: <retried-1@example.net>\r\n\r\nHello.\r\n"
	// The first attempt: the answer to the final dot is never read.
	h := dialHostile(t, lmtpAddr)
	if err := h.dialogue("LHLO mta.example.org", "250", "MAIL FROM:<bob@example.net>", "250",
		"RCPT TO:<alice@example.org>", "250", "DATA", "354"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Write([]byte(msg + ".\r\n")); err != nil {
		t.Fatal(err)
	}
	h.c.Close()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if head, err := ac.Head(ctx); err == nil && head == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first attempt was never committed")
		}
	}
	// The MTA's retry, answered this time, and another message of the
	// same text through the MTA (its own queue id).
	lc := dialLMTP(t, lmtpAddr)
	if err := lc.SendMail("bob@example.net", []string{"alice@example.org"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	other := strings.Replace(msg, "id 4AbCd1", "id 4AbCd2", 1)
	if err := lc.SendMail("bob@example.net", []string{"alice@example.org"}, strings.NewReader(other)); err != nil {
		t.Fatalf("the second message: %v", err)
	}
	lc.Close()

	env := append(os.Environ(), "USER=alice")
	code, out, stderr := runExit(t, dir, env, bin, "sync", "--user", "alice", "--db", "mail.db", "--spool-server", p.url,
		"--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "spool.pub")
	if code != 0 || !strings.Contains(out, "synced to position 3") || !strings.Contains(out, "2 applied, 1 rejected") {
		t.Fatalf("sync: exit %d, want the retry rejected and two messages applied:\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "level=INFO msg=\"rejected entry\"") || !strings.Contains(stderr, "reason=duplicate") {
		t.Errorf("the sync's log does not name the duplicate, as information:\n%s", stderr)
	}
}

// aliceWithSpool makes a directory holding a users file with alice, her
// key files user.sec and user.pub, and a spool key's spool.sec and
// spool.pub; it returns the directory, the users file and alice's key.
func aliceWithSpool(t *testing.T) (dir, usersPath string, alice *keys.SecretKey) {
	t.Helper()
	dir = t.TempDir()
	alice, spoolK := mustKey(t), mustKey(t)
	usersPath = filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice})
	for name, k := range map[string]*keys.SecretKey{"spool": spoolK, "user": alice} {
		if err := keys.WriteFiles(k, filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return dir, usersPath, alice
}
