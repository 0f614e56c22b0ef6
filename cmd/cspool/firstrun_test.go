package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestUnsyncedDatabaseRemoved: a device database made by a run in which
// the spool answered no read of the log (another user's key pair, which
// the spool refuses with 403; an https:// URL for a plain HTTP spool) is
// removed when the run ends, by cspool sync and by the daemon, so that the
// run with the right flags starts as a first run. It was kept, encrypted
// with the wrong user's key: the next run with the right keys stopped with
// "encrypted with another key" until the file was moved away.
func TestUnsyncedDatabaseRemoved(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	bob := mustKey(t)
	if err := keys.WriteFiles(bob, filepath.Join(dir, "bob.sec"), filepath.Join(dir, "bob.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	env := append(os.Environ(), "USER=alice")
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-key", "spool.sec", "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"))
	waitHealthy(t, url, server)
	for _, user := range []string{"alice", "bob"} {
		// bob's log exists, so his key is known and refused on alice's log.
		if code, _, stderr := runExitStdin(t, dir, env, []byte("Subject: x\r\n\r\nx\r\n"), bin, "deliver", "--users", usersPath,
			"--user", user, "--spool-key", "spool.sec", "--spool-server", url, "--quiet"); code != 0 {
			t.Fatalf("cspool deliver to %s: exit %d\n%s", user, code, stderr)
		}
	}
	as := func(key, url string) []string {
		return []string{"--user", "alice", "--user-key", key + ".sec", "--user-public-key", key + ".pub",
			"--spool-key", "spool.pub", "--spool-server", url}
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	// A first sync with bob's keys: refused, and nothing is left.
	code, _, stderr := runExit(t, dir, env, bin, append([]string{"sync", "--db", "x.db"}, as("bob", url)...)...)
	if code == 0 || !strings.Contains(stderr, "403") {
		t.Errorf("cspool sync with bob's keys on alice's log: exit %d, want a refusal (403):\n%s", code, stderr)
	}
	for _, name := range []string{"x.db", "x.db-wal", "x.db-shm"} {
		if exists(name) {
			t.Errorf("after the refused first sync, %s is there; want it removed", name)
		}
	}
	code, stdout, stderr := runExit(t, dir, env, bin, append([]string{"sync", "--db", "x.db"}, as("user", url)...)...)
	if code != 0 || !strings.Contains(stdout, "synced to position 1") {
		t.Errorf("cspool sync with alice's keys after the refusal: exit %d, want 0 and position 1:\n%s\n%s", code, stdout, stderr)
	}
	// https:// for a plain HTTP spool: nothing is left either.
	code, _, stderr = runExit(t, dir, env, bin, append([]string{"sync", "--db", "y.db"}, as("user", strings.Replace(url, "http:", "https:", 1))...)...)
	if code == 0 || exists("y.db") {
		t.Errorf("cspool sync with https:// to a plain HTTP spool: exit %d, y.db left %v; want a failure and no y.db:\n%s", code, exists("y.db"), stderr)
	}
	// The daemon with bob's keys, sending through a smarthost: it runs,
	// says what is wrong, and leaves neither database when stopped. (No
	// smarthost listens there: nothing is sent.)
	daemonFlags := func(key string) []string {
		return append([]string{"imap-server", "--db", "z.db", "--port", "0", "--status-addr", "", "--smtp-port", "0",
			"--relay", fmt.Sprintf("smtp://127.0.0.1:%d", freePort(t)), "--identity", "alice@example.org"}, as(key, url)...)
	}
	daemon := startProc(t, "cspool imap-server", dir, env, bin, daemonFlags("bob")...)
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(daemon.stderr.String(), "cannot sync with the spool until this is fixed"); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) || daemon.exitedNow() {
			t.Fatalf("the daemon with bob's keys did not log the refusal within 30 s:\n%s", daemon.stderr)
		}
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	for _, name := range []string{"z.db", "z.db.outbox"} {
		if exists(name) {
			t.Errorf("after the daemon with bob's keys stopped, %s is there; want it removed", name)
		}
	}
	daemon = startProc(t, "cspool imap-server", dir, env, bin, daemonFlags("user")...)
	daemon.waitOutput(t, "SMTP settings", 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, out, errOut := runExit(t, dir, env, bin, "status", "--db", "z.db")
		if strings.Contains(out, "Position:      1 of 1") {
			break
		}
		if time.Now().After(deadline) || daemon.exitedNow() {
			t.Fatalf("the daemon with alice's keys did not apply position 1 within 30 s; cspool status:\n%s%s", out, errOut)
		}
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	code, stdout, stderr = runExit(t, dir, env, bin, append([]string{"sync", "--db", "z.db"}, as("user", url)...)...)
	if code != 0 || !strings.Contains(stdout, "synced to position 1") {
		t.Errorf("cspool sync with alice's keys after the daemons with bob's and alice's: exit %d, want 0 and position 1:\n%s\n%s", code, stdout, stderr)
	}
	if !exists("z.db") || !exists("z.db.outbox") {
		t.Errorf("after the daemon with alice's keys, z.db there %v, z.db.outbox there %v; want both kept", exists("z.db"), exists("z.db.outbox"))
	}
}

// TestOutboxOtherKeyHint: an outbox left beside a new database after the
// old database alone was moved away (a new key for the user, or a
// database made with another user's keys) is named as encrypted with
// another key, with the hint to move it with its database. The hint
// was to check that the directory of --db is writable.
func TestOutboxOtherKeyHint(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	bob := mustKey(t)
	if err := keys.WriteFiles(bob, filepath.Join(dir, "bob.sec"), filepath.Join(dir, "bob.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	env := append(os.Environ(), "USER=alice")
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-key", "spool.sec", "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"))
	waitHealthy(t, url, server)
	daemonFlags := func(user, key string) []string {
		return []string{"imap-server", "--db", "m.db", "--port", "0", "--status-addr", "", "--smtp-port", "0",
			"--relay", fmt.Sprintf("smtp://127.0.0.1:%d", freePort(t)), "--identity", user + "@example.org",
			"--user", user, "--user-key", key + ".sec", "--user-public-key", key + ".pub",
			"--spool-key", "spool.pub", "--spool-server", url}
	}
	// bob's daemon on his own log: its read is answered, both files stay.
	daemon := startProc(t, "cspool imap-server", dir, env, bin, daemonFlags("bob", "bob")...)
	daemon.waitOutput(t, "SMTP settings", 30*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, out, errOut := runExit(t, dir, env, bin, "status", "--db", "m.db")
		if strings.Contains(out, "Sync:          connected") {
			break
		}
		if time.Now().After(deadline) || daemon.exitedNow() {
			t.Fatalf("bob's daemon did not read his log within 30 s; cspool status:\n%s%s", out, errOut)
		}
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	if err := os.Rename(filepath.Join(dir, "m.db"), filepath.Join(dir, "m.db.bob")); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runExit(t, dir, env, bin, daemonFlags("alice", "user")...)
	if code == 0 || !strings.Contains(stderr, "m.db.outbox was encrypted with another secret key") ||
		!strings.Contains(stderr, "move m.db.outbox with it") {
		t.Errorf("the daemon with alice's keys beside bob's outbox: exit %d, want a refusal naming m.db.outbox as encrypted with another key, and to move it with its database:\n%s", code, stderr)
	}
}

// TestKilledFirstRunLeavesNothing: a first run of the daemon killed with
// SIGKILL before the spool answered a read (the spool server down) left
// its new database and outbox, encrypted with the key it was given, and
// the next run with another user's keys (the right ones) stopped with
// "encrypted with another key" until a person moved them away. Now the
// database is marked as the first run's (DB.firstrun) until a read is
// answered, and the next start removes what the killed run left: the
// daemon and cspool sync with alice's keys start as first runs. A
// database a read reached is kept, mark removed, even when the daemon is
// killed next: another key is refused on it as before.
func TestKilledFirstRunLeavesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, alice := aliceWithSpool(t)
	bob := mustKey(t)
	if err := keys.WriteFiles(bob, filepath.Join(dir, "bob.sec"), filepath.Join(dir, "bob.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	env := append(os.Environ(), "USER=alice")
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	as := func(key string) []string {
		return []string{"--user", "alice", "--user-key", key + ".sec", "--user-public-key", key + ".pub",
			"--spool-key", "spool.pub", "--spool-server", url}
	}
	daemonFlags := func(db, key string) []string {
		return append([]string{"imap-server", "--db", db, "--port", fmt.Sprint(freePort(t)), "--status-addr", "",
			"--smtp-port", fmt.Sprint(freePort(t)), "--relay", fmt.Sprintf("smtp://127.0.0.1:%d", freePort(t)),
			"--identity", "alice@example.org"}, as(key)...)
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	kill := func(p *proc) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p.exited = true
	}
	// The spool server is down: first runs with bob's keys, killed.
	for _, db := range []string{"k.db", "s.db"} {
		daemon := startProc(t, "cspool imap-server", dir, env, bin, daemonFlags(db, "bob")...)
		daemon.waitOutput(t, "SMTP settings", 30*time.Second)
		kill(daemon)
		for _, name := range []string{db, db + ".outbox"} {
			if !exists(name) {
				t.Fatalf("after the first run on %s was killed, %s is missing: the test sets up nothing", db, name)
			}
		}
	}
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port),
		"--spool-key", "spool.sec", "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"))
	waitHealthy(t, url, server)
	if code, _, stderr := runExitStdin(t, dir, env, []byte("Subject: x\r\n\r\nx\r\n"), bin, "deliver", "--users", usersPath,
		"--user", "alice", "--spool-key", "spool.sec", "--spool-server", url, "--quiet"); code != 0 {
		t.Fatalf("cspool deliver: exit %d\n%s", code, stderr)
	}

	// The daemon with alice's keys on what the killed run left.
	daemon := startProc(t, "cspool imap-server", dir, env, bin, daemonFlags("k.db", "user")...)
	daemon.waitOutput(t, "SMTP settings", 30*time.Second)
	if !strings.Contains(daemon.stderr.String(), "k.db removed: a first run made it and ended") {
		t.Errorf("the daemon after a killed first run did not say it removed k.db; stderr:\n%s", daemon.stderr)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, out, errOut := runExit(t, dir, env, bin, "status", "--db", "k.db")
		if strings.Contains(out, "Position:      1 of 1") {
			break
		}
		if time.Now().After(deadline) || daemon.exitedNow() {
			t.Fatalf("the daemon with alice's keys after a killed first run with bob's did not apply position 1 within 30 s; cspool status:\n%s%s\ndaemon:\n%s", out, errOut, daemon.stderr)
		}
	}
	if exists("k.db" + firstRunSuffix) {
		t.Errorf("k.db%s is still there after the spool answered a read; want it removed", firstRunSuffix)
	}
	// Killed now, the database a read reached stays: bob's keys are
	// refused on it, and alice's sync reads on.
	kill(daemon)
	code, _, stderr := runExit(t, dir, env, bin, append([]string{"sync", "--db", "k.db"}, as("bob")...)...)
	if code == 0 || !strings.Contains(stderr, "encrypted with another secret key") {
		t.Errorf("cspool sync with bob's keys on the database alice's daemon synced: exit %d, want the refusal \"encrypted with another secret key\":\n%s", code, stderr)
	}
	code, stdout, stderr := runExit(t, dir, env, bin, append([]string{"sync", "--db", "k.db"}, as("user")...)...)
	if code != 0 || !strings.Contains(stdout, "synced to position 1") {
		t.Errorf("cspool sync with alice's keys after her daemon was killed: exit %d, want 0 and position 1:\n%s\n%s", code, stdout, stderr)
	}
	if !exists("k.db") || !exists("k.db.outbox") {
		t.Errorf("after alice's daemon, k.db there %v, k.db.outbox there %v; want both kept", exists("k.db"), exists("k.db.outbox"))
	}

	// cspool sync with alice's keys on what the other killed run left.
	code, stdout, stderr = runExit(t, dir, env, bin, append([]string{"sync", "--db", "s.db"}, as("user")...)...)
	if code != 0 || !strings.Contains(stdout, "synced to position 1") {
		t.Errorf("cspool sync with alice's keys after a killed first run with bob's: exit %d, want 0 and position 1:\n%s\n%s", code, stdout, stderr)
	}
	for _, name := range []string{"s.db.outbox", "s.db" + firstRunSuffix} {
		if exists(name) {
			t.Errorf("after cspool sync with alice's keys, %s is there; want it removed (made by the killed run, holding nothing)", name)
		}
	}
}
