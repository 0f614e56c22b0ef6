package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

// TestMisdeliveredEntryAlarm: an entry sealed to another key than the
// user's that reaches the log anyway (the server refuses such a delivery,
// but a store written around it, or an older server, lets one in) is an
// alarm on the device, not a counter: cspool status and the IMAP login's
// ALERT name it and what to do, across a restart of the daemon, and the
// device keeps its bytes. The holder of the key it was sealed to reads the
// message with cspool open-entry and delivers it again, and afterwards the
// device holds every acknowledged message, the recovered one included.
func TestMisdeliveredEntryAlarm(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	for _, n := range []string{"alice", "bob", "spool"} {
		runCmd(t, dir, env, "", bin, "gen-keys", n+".sec", n+".pub")
	}
	load := func(n string) *keys.SecretKey {
		k, err := keys.LoadSecret(filepath.Join(dir, n+".sec"))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	bob, spoolKey := load("bob"), load("spool")
	writeUsersFile(t, filepath.Join(dir, "users"), map[string]*keys.SecretKey{"alice": load("alice"), "bob": bob})
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	httpPort, imapPort := freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--users", "users", "--spool-dir", "spool",
		"--spool-key", "spool.sec", "--port", fmt.Sprint(httpPort))
	waitHealthy(t, url, server)
	deviceArgs := []string{"imap-server", "--user-key", "alice.sec", "--user-public-key", "alice.pub",
		"--spool-key", "spool.pub", "--db", "alice.db", "--spool-server", url, "--port", fmt.Sprint(imapPort), "--status-addr", ""}
	daemon := startProc(t, "cspool imap-server", dir, env, bin, deviceArgs...)
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))

	var acknowledged []string
	deliver := func(msg string) {
		t.Helper()
		code, out, errOut := runExitStdin(t, dir, env, []byte(msg), bin, "deliver", "--users", "users", "--user", "alice",
			"--spool-key", "spool.sec", "--spool-server", url, "--quiet")
		if code != 0 {
			t.Fatalf("cspool deliver: exit %d\n%s%s", code, out, errOut)
		}
		acknowledged = append(acknowledged, msg)
	}
	deliver("Subject: first\r\n\r\nbefore\r\n")
	// A delivery sealed to bob's key lands in alice's log, written
	// straight into the store around the server's check.
	lost := "From: carol@example.net\r\nSubject: sealed to the wrong key\r\n\r\nrecover me\r\n"
	sealed, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: []byte(lost)},
		spoolKey, bob.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlitestore.Open(filepath.Join(dir, "spool"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lostPos, err := st.Append(ctx, "alice", [][]byte{sealed})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	deliver("Subject: second\r\n\r\nafter\r\n")

	statusSays := func(want ...string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, out, errOut := runExit(t, dir, env, bin, "status", "--db", "alice.db")
			ok := code == 0
			for _, w := range want {
				ok = ok && strings.Contains(out, w)
			}
			if ok {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("cspool status did not say %q within 30 s: exit %d\n%s%s", want, code, out, errOut)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	kept := filepath.Join(dir, "alice.db.misdelivered", fmt.Sprintf("%d.entry", lostPos))
	alarm := fmt.Sprintf("(at position %d) is sealed to another key than this user's", lostPos)
	statusSays("ALARM", alarm, "cspool open-entry", "alice.db.misdelivered", "Position:      3")
	if b, err := os.ReadFile(kept); err != nil || !bytes.Equal(b, sealed) {
		t.Fatalf("the device did not keep the entry's bytes in %s: %v", kept, err)
	}
	checkAlert := func() {
		t.Helper()
		if got := loginAlert(t, imapPort, password); !strings.Contains(got, alarm) {
			t.Errorf("IMAP login alert %q, want it to name the entry sealed to another key", got)
		}
	}
	checkAlert()
	// The alarm outlives the daemon.
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	daemon = startProc(t, "cspool imap-server", dir, env, bin, deviceArgs...)
	daemon.waitOutput(t, "state:", 30*time.Second)
	statusSays("ALARM", alarm)
	checkAlert()

	// Recovery: bob's key opens it, and it is delivered again to alice,
	// with docs/OPERATING.md's commands as printed (the kept file, the
	// users file, the spool key and the URL this test's).
	if code, _, errOut := runExit(t, dir, env, bin, "open-entry", "--user-key", "alice.sec", "--spool-key", "spool.pub", "--user", "alice", kept); code == 0 || !strings.Contains(errOut, "hint:") {
		t.Errorf("cspool open-entry with alice's key: exit %d, want a failure with a hint\n%s", code, errOut)
	}
	steps := recipe(t, "### Mail sealed to the wrong key")
	if len(steps) != 1 {
		t.Fatalf("docs/OPERATING.md, Mail sealed to the wrong key: %d shell blocks, want 1 (open-entry, then deliver)", len(steps))
	}
	runRecipe(t, steps[0], dir, append(slices.Clone(env), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH")), []string{
		"~/.local/state/cspool/alice/mail.db.misdelivered/42.entry", kept, "/etc/cspool/users", "users",
		"/etc/cspool/spool.sec", "spool.sec", "https://spool.example.org:3999", url,
	}, func(l string) { t.Fatalf("unexpected %q in the recovery", l) })
	if b, err := os.ReadFile(filepath.Join(dir, "message.eml")); err != nil || string(b) != lost {
		t.Fatalf("cspool open-entry with bob's key wrote %q (%v), want %q", b, err, lost)
	}
	acknowledged = append(acknowledged, lost)
	msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, len(acknowledged))
	if len(msgs) != len(acknowledged) {
		t.Fatalf("IMAP shows %d messages, want the %d acknowledged", len(msgs), len(acknowledged))
	}
	for i, want := range acknowledged {
		if string(msgs[i]) != want {
			t.Errorf("message %d over IMAP %q, want %q", i+1, msgs[i], want)
		}
	}

	// Delivered again, the kept file is removed: the alarm ends with the
	// next start.
	if err := os.Remove(kept); err != nil {
		t.Fatal(err)
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	daemon = startProc(t, "cspool imap-server", dir, env, bin, deviceArgs...)
	daemon.waitOutput(t, "state:", 30*time.Second)
	if out := statusSays("Position:"); strings.Contains(out, "sealed to another key") {
		t.Errorf("the alarm outlived its kept file:\n%s", out)
	}
	if got := loginAlert(t, imapPort, password); got != "" {
		t.Errorf("IMAP login alert %q after the kept file was removed, want none", got)
	}
}

// loginAlert logs in over a raw connection and returns the text of the
// untagged OK [ALERT] that follows, "" if none.
func loginAlert(t *testing.T, port int, password string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "a LOGIN alice %q\r\n", password)
	alert := ""
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the login's reply: %v", err)
		}
		if rest, ok := strings.CutPrefix(l, "* OK [ALERT] "); ok {
			alert = strings.TrimSpace(rest)
		}
		if strings.HasPrefix(l, "a ") {
			if !strings.HasPrefix(l, "a OK") {
				t.Fatalf("login: %q", l)
			}
			return alert
		}
	}
}
