package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// TestRepeatedFlags gives the real binary a flag twice, against a real
// server. The flag package kept the last value: `cspool deliver --user
// alice --user bob` delivered alice's message into bob's log, and a sync
// given two --spool-server URLs went to the second. Now two different
// values are a usage error naming the flag and both values, before
// anything is done; the same value twice, and the flags that take many
// values, pass.
func TestRepeatedFlags(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	bob := mustKey(t)
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", filepath.Join(dir, "spool.sec"))
	msg := []byte("From: carol@example.org\r\nTo: alice@example.org\r\nSubject: for alice\r\n\r\nhello\r\n")

	deliver := []string{"deliver", "--users", usersPath, "--spool-key", "spool.sec", "--spool-server", srv.url}
	code, out, errOut := runExitStdin(t, dir, nil, msg, bin, append(deliver, "--user", "alice", "--user", "bob")...)
	if code != 64 || !strings.Contains(errOut, `--user given 2 times on the command line ("alice", "bob")`) {
		t.Fatalf("deliver --user alice --user bob: exit %d, stdout %q, stderr %q; want 64 and an error naming --user and both values", code, out, errOut)
	}
	// Nothing reached either log: bob's first delivery is at position 1.
	code, out, errOut = runExitStdin(t, dir, nil, msg, bin, append(deliver, "--user", "bob")...)
	if code != 0 || !strings.Contains(out, "to bob at log position 1") {
		t.Fatalf("deliver --user bob: exit %d, stdout %q, stderr %q; want bob's first entry at position 1", code, out, errOut)
	}
	// The same value twice is one value.
	code, out, errOut = runExitStdin(t, dir, nil, msg, bin, append(deliver, "--user", "alice", "--user=alice")...)
	if code != 0 || !strings.Contains(out, "to alice at log position 1") {
		t.Fatalf("deliver --user alice --user=alice: exit %d, stdout %q, stderr %q; want alice's first entry at position 1", code, out, errOut)
	}

	sync := []string{"sync", "--once", "--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "spool.pub", "--db", "mail.db"}
	other := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	code, out, errOut = runExit(t, dir, nil, bin, append(sync, "--spool-server", srv.url, "--spool-server", other)...)
	want := fmt.Sprintf("--spool-server given 2 times on the command line (%q, %q)", srv.url, other)
	if code != 2 || !strings.Contains(errOut, want) {
		t.Fatalf("sync with two --spool-server: exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "mail.db")); !os.IsNotExist(err) {
		t.Fatalf("the refused sync made its database (stat: %v)", err)
	}
	code, out, errOut = runExit(t, dir, nil, bin, append(sync, "--spool-server", srv.url, "--debug", "--debug=false")...)
	if code != 2 || !strings.Contains(errOut, `--debug given 2 times on the command line ("true", "false")`) {
		t.Fatalf("sync --debug --debug=false: exit %d, stdout %q, stderr %q; want 2 naming --debug", code, out, errOut)
	}
	code, out, errOut = runExit(t, dir, nil, bin, append(sync, "--spool-server", srv.url, "--spool-server", srv.url, "--once")...)
	if code != 0 || !strings.Contains(out, "synced to position 1") {
		t.Fatalf("sync with one --spool-server given twice: exit %d, stdout %q, stderr %q; want a sync to position 1", code, out, errOut)
	}

	// --mailbox takes many values.
	code, out, errOut = runExit(t, dir, nil, bin, "export", "--db", "mail.db", "--user-key", "user.sec",
		"--mailbox", "INBOX", "--mailbox", "INBOX", filepath.Join(dir, "export"))
	if code != 0 {
		t.Fatalf("export --mailbox INBOX --mailbox INBOX: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if files, _ := os.ReadDir(filepath.Join(dir, "export", "INBOX", "cur")); len(files) != 1 {
		t.Fatalf("export wrote %d messages into INBOX/cur, want 1", len(files))
	}
}
