package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// usersFileSetup builds the binary, makes the key pairs alice and spool in
// a new folder and writes a users file giving alice her key and bob the
// key bobKey picks, as an operator in a hurry would; it returns the binary,
// the folder and the environment to run it in.
func usersFileSetup(t *testing.T, bobKey func(alice, spool keys.PublicKey) keys.PublicKey) (bin, dir string, env []string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin = buildServerBinary(t)
	dir = t.TempDir()
	env = append(os.Environ(), "USER=alice")
	pub := map[string]keys.PublicKey{}
	for _, n := range []string{"alice", "spool"} {
		runCmd(t, dir, env, "", bin, "gen-keys", n+".sec", n+".pub")
		k, err := keys.LoadPublic(filepath.Join(dir, n+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		pub[n] = k
	}
	users := fmt.Sprintf("alice %s\nbob %s\n", pub["alice"], bobKey(pub["alice"], pub["spool"]))
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	return bin, dir, env
}

// saysAll checks that out says each of want.
func saysAll(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output does not say %q:\n%s", w, out)
		}
	}
}

// TestUsersFileSharedKey: an operator adds bob by copying alice's line and
// changing the name but not the key. The server refuses to start on that
// users file, naming the file, both lines and both users, with a hint. It
// started: bob's mail was then sealed to alice's key, and `cspool sync
// --user bob` with alice's secret key applied it.
func TestUsersFileSharedKey(t *testing.T) {
	t.Parallel()
	bin, dir, env := usersFileSetup(t, func(alice, _ keys.PublicKey) keys.PublicKey { return alice })
	// Exit -1 is the timeout's kill: a server that started.
	code, stdout, stderr := runExitStdin(t, dir, env, nil, bin, "server", "--users", "users", "--spool-dir", "spool",
		"--spool-key", "spool.sec", "--port", fmt.Sprint(freePort(t)))
	out := stdout + stderr
	if code <= 0 {
		t.Fatalf("cspool server on a users file giving alice's key to bob: exit %d, want a refusal at start\n%s", code, out)
	}
	saysAll(t, out, "users", "line 2", `"bob"`, `"alice"`, "(line 1)", "cspool: hint: put each user's own public key")
}

// TestDeliverRefusesSpoolKey: cspool deliver straight into the store with a
// users file that gives the recipient the spool's public key refuses, as
// the server does at start (exit 77, naming the file, the line and the
// user, with a hint; the line was not named), and appends nothing. It delivered: the mail was sealed to the
// spool's key, readable by whoever holds spool.sec.
func TestDeliverRefusesSpoolKey(t *testing.T) {
	t.Parallel()
	bin, dir, env := usersFileSetup(t, func(_, spool keys.PublicKey) keys.PublicKey { return spool })
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runExitStdin(t, dir, env, []byte("From: a@example.org\r\nTo: bob@example.org\r\nSubject: x\r\n\r\nsecret\r\n"),
		bin, "deliver", "--users", "users", "--user", "bob", "--spool-dir", "spool", "--spool-key", "spool.sec")
	out := stdout + stderr
	if code != 77 {
		t.Fatalf("cspool deliver to bob, who has the spool's key in --users: exit %d, want 77 (refused)\n%s", code, out)
	}
	saysAll(t, out, "users file users: line 2: ", `"bob"`, "spool.sec", "cspool: hint: either --spool-key spool.sec is bob's own secret key",
		"or the users file gives bob the spool's public key: put the user's own public key on its line")
}
