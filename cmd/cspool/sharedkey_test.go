package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestUsersFileSharedKey: an operator adds bob by copying alice's line and
// changing the name but not the key. The server refuses to start on that
// users file, naming the file, both lines and both users, with a hint. It
// started: bob's mail was then sealed to alice's key, and `cspool sync
// --user bob` with alice's secret key applied it.
func TestUsersFileSharedKey(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	for _, n := range []string{"alice", "spool"} {
		runCmd(t, dir, env, "", bin, "gen-keys", n+".sec", n+".pub")
	}
	alice, err := keys.LoadPublic(filepath.Join(dir, "alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("alice %s\nbob %s\n", alice, alice)
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "server", "--users", "users", "--spool-dir", "spool",
		"--spool-key", "spool.sec", "--port", fmt.Sprint(freePort(t)))
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if code := exitCode(t, err); code == 0 || ctx.Err() != nil {
		t.Fatalf("cspool server on a users file giving alice's key to bob: exit %d (%v), want a refusal at start\n%s", code, ctx.Err(), out)
	}
	for _, want := range []string{"users", "line 2", `"bob"`, `"alice"`, "(line 1)", "cspool: hint: put each user's own public key"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
}

// TestDeliverRefusesSpoolKey: cspool deliver straight into the store with a
// users file that gives the recipient the spool's public key refuses, as
// the server does at start (exit 77, naming the file and the user, with a
// hint), and appends nothing. It delivered: the mail was sealed to the
// spool's key, readable by whoever holds spool.sec.
func TestDeliverRefusesSpoolKey(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	for _, n := range []string{"alice", "spool"} {
		runCmd(t, dir, env, "", bin, "gen-keys", n+".sec", n+".pub")
	}
	alice, err := keys.LoadPublic(filepath.Join(dir, "alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	spoolPub, err := keys.LoadPublic(filepath.Join(dir, "spool.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("alice %s\nbob %s\n", alice, spoolPub)
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "deliver", "--users", "users", "--user", "bob",
		"--spool-dir", "spool", "--spool-key", "spool.sec")
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdin = strings.NewReader("From: a@example.org\r\nTo: bob@example.org\r\nSubject: x\r\n\r\nsecret\r\n")
	out, err := cmd.CombinedOutput()
	if code := exitCode(t, err); code != 77 {
		t.Fatalf("cspool deliver to bob, who has the spool's key in --users: exit %d, want 77 (refused)\n%s", code, out)
	}
	for _, want := range []string{"users file users", `"bob"`, "spool.sec", "cspool: hint: put the user's own public key"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
}
