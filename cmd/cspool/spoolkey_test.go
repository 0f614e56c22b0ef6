package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestOtherSpoolKeyRefused: the spool, once it holds deliveries signed by
// one spool key, refuses a server or a cspool deliver with another. A
// device started once with the right
// --spool-key and later with another (a spool.pub of another setup, or the
// user's own public key given in its place, as an operator in a hurry
// does) refuses to sync, naming the database and the flag; before, it
// rejected every delivery from then on as "entry author not trusted" and
// moved past it, so the mail never showed on that device, even once the
// right key was given again. The right key still syncs afterwards, with
// nothing rejected. A new database given the wrong key at its first sync
// applies nothing, names both keys, and exits 77; the right key then
// syncs everything.
func TestOtherSpoolKeyRefused(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	for _, k := range []string{"user", "spool", "other"} {
		runCmd(t, dir, env, "", bin, "gen-keys", k+".sec", k+".pub")
	}
	pub, err := os.ReadFile(dir + "/user.pub")
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for _, l := range strings.Split(string(pub), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			key = l
		}
	}
	if err := os.WriteFile(dir+"/users", []byte("alice "+key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deliver := func(subject string) {
		t.Helper()
		code, _, stderr := runExitStdin(t, dir, env, []byte("Subject: "+subject+"\r\n\r\nbody\r\n"), bin,
			"deliver", "--users", "users", "--user", "alice", "--spool-key", "spool.sec", "--spool-dir", "spool", "--quiet")
		if code != 0 {
			t.Fatalf("deliver %s: exit %d\n%s", subject, code, stderr)
		}
	}
	if err := os.Mkdir(dir+"/spool", 0o700); err != nil {
		t.Fatal(err)
	}
	deliver("one")
	// The spool refuses another spool key as well: a server or a delivery
	// signing with it would make mail every device rejects.
	code, _, stderr := runExitStdin(t, dir, env, []byte("Subject: x\r\n\r\nx\r\n"), bin,
		"deliver", "--users", "users", "--user", "alice", "--spool-key", "other.sec", "--spool-dir", "spool", "--quiet")
	if code != exConfig || !strings.Contains(stderr, "other.sec is the spool key with id") || !strings.Contains(stderr, "hint:") {
		t.Errorf("deliver with another spool key: exit %d, want %d naming other.sec with a hint:\n%s", code, exConfig, stderr)
	}
	code, _, stderr = runExit(t, dir, env, bin, "server", "--port", fmt.Sprint(freePort(t)), "--spool-dir", "spool",
		"--users", "users", "--spool-key", "other.sec")
	if code == 0 || !strings.Contains(stderr, "the deliveries in spool are signed by the key with id") {
		t.Errorf("server with another spool key: exit %d, want a refusal naming the store's key:\n%s", code, stderr)
	}
	port := freePort(t)
	startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port), "--spool-dir", "spool",
		"--users", "users", "--spool-key", "spool.sec")
	sync := func(spoolPub string) (int, string, string) {
		t.Helper()
		var code int
		var stdout, stderr string
		// The server may still be starting: a transport failure is
		// retried, a refusal of the key is not.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, stdout, stderr = runExit(t, dir, env, bin, "sync", "--user", "alice", "--db", "mail.db",
				"--spool-server", fmt.Sprintf("http://127.0.0.1:%d", port),
				"--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", spoolPub)
			if code == 0 || strings.Contains(stderr, "--spool-key") || time.Now().After(deadline) {
				return code, stdout, stderr
			}
		}
	}
	// A new database given the wrong key on its first sync applies
	// nothing and says so, exit 77; the right key then syncs it all.
	code, _, stderr = sync("other.pub")
	for _, w := range []string{"signed by the Ed25519 key", "not by the spool key given", "nothing applied", "hint:", "spool_key_id"} {
		if code != exNoPerm || !strings.Contains(stderr, w) {
			t.Errorf("first sync with --spool-key other.pub: exit %d, want %d, saying %q:\n%s", code, exNoPerm, w, stderr)
		}
	}
	if code, out, stderr := sync("spool.pub"); code != 0 || !strings.Contains(out, "1 applied, 0 rejected") {
		t.Fatalf("first sync: exit %d, want the delivery applied\n%s\n%s", code, out, stderr)
	}
	deliver("two")
	// A database that applied a delivery refuses another key: the same
	// wrong spool.pub, the same exit 77 (docs/STATUS.md; it was 1, the
	// status of an unreachable spool). The user's own key is refused
	// before it reads, either flag naming the wrong file, with the same
	// 77 (it exited 1).
	for _, c := range []struct {
		file string
		code int
		want []string
	}{
		{"other.pub", exNoPerm, []string{"mail.db trusts the spool key", "not cspool-pub", "hint:", "move the database away"}},
		{"user.pub", exNoPerm, []string{"user.pub holds the user's own public key", "hint:", "spool.pub"}},
	} {
		code, _, stderr := sync(c.file)
		if code != c.code {
			t.Errorf("sync with --spool-key %s: exit %d, want %d\n%s", c.file, code, c.code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("sync with --spool-key %s: stderr does not say %q:\n%s", c.file, w, stderr)
			}
		}
	}
	// The delivery made meanwhile is applied now, not passed by.
	code, out, stderr := sync("spool.pub")
	if code != 0 {
		t.Fatalf("sync with the right key again: exit %d\n%s", code, stderr)
	}
	if !strings.Contains(out, "synced to position 2") || !strings.Contains(out, "1 applied, 0 rejected") {
		t.Errorf("sync with the right key again: want the second delivery applied, nothing rejected:\n%s", out)
	}
}
