package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool/pgstore/pgtest"
	"cspool/internal/userdb"

	"github.com/jackc/pgx/v5"
)

// TestDeliverRefusesWrongKeyAndUnknownUser drives cspool deliver against a
// real cspool server, with the users in a users file (SQLite store) and in
// the PostgreSQL users table (PostgreSQL store): a delivery sealed to
// another user's key exits 65 and one to a name that is not a user exits
// 67, with nothing stored, where both used to be acknowledged and then
// lost. Afterwards a device syncs and holds exactly the acknowledged
// messages, and a user added later under the refused name starts with an
// empty log.
func TestDeliverRefusesWrongKeyAndUnknownUser(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	t.Run("sqlite, users file", func(t *testing.T) { testDeliverRefusals(t, bin, "sqlite") })
	t.Run("postgres, users table", func(t *testing.T) { testDeliverRefusals(t, bin, "postgres") })
}

func testDeliverRefusals(t *testing.T, bin, backend string) {
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	for _, name := range []string{"alice", "bob", "spool", "carol"} {
		runCmd(t, dir, env, "", bin, "gen-keys", name+".sec", name+".pub")
	}
	pub := func(name string) keys.PublicKey {
		k, err := keys.LoadPublic(filepath.Join(dir, name+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	usersPath := filepath.Join(dir, "users")
	writeUsers := func(names ...string) {
		var b strings.Builder
		for _, n := range names {
			fmt.Fprintf(&b, "%s %s\n", n, pub(n))
		}
		if err := os.WriteFile(usersPath, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeUsers("alice", "bob")
	args := []string{"server", "--spool-key", "spool.sec"}
	var addCarol func()
	var server *proc
	if backend == "postgres" {
		dsn := pgtest.Database(t)
		for _, n := range []string{"alice", "bob"} {
			insertPGUser(t, dsn, n, pub(n))
		}
		args = append(args, "--store", "postgres", "--dsn", dsn, "--users-table", "--spool-dir", "spool")
		addCarol = func() { insertPGUser(t, dsn, "carol", pub("carol")) }
	} else {
		args = append(args, "--users", usersPath, "--spool-dir", "spool")
		if err := os.Mkdir(filepath.Join(dir, "spool"), 0o700); err != nil {
			t.Fatal(err)
		}
		addCarol = func() {
			writeUsers("alice", "bob", "carol")
			server.cmd.Process.Signal(syscall.SIGHUP)
			waitLog(t, server, "users reloaded")
		}
	}
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server = startProc(t, "cspool server", dir, env, bin, append(args, "--port", fmt.Sprint(port))...)
	waitHealthy(t, url, server)

	var acknowledged [][]byte
	deliver := func(name string, user, key string, wantCode int, wantHint string) {
		t.Helper()
		msg := []byte(fmt.Sprintf("From: x@example.org\r\nSubject: %s\r\n\r\nbody of %s\r\n", name, name))
		code, out, errOut := runExitStdin(t, dir, env, msg, bin, "deliver", "--user", user,
			"--user-key", key, "--spool-key", "spool.sec", "--spool-server", url, "--timeout", "20s")
		if code != wantCode {
			t.Fatalf("%s: cspool deliver exited %d, want %d\nstdout: %s\nstderr: %s", name, code, wantCode, out, errOut)
		}
		if code == 0 {
			acknowledged = append(acknowledged, msg)
			return
		}
		if !strings.Contains(errOut, "hint:") || !strings.Contains(errOut, wantHint) {
			t.Errorf("%s: stderr lacks a hint naming %q:\n%s", name, wantHint, errOut)
		}
	}
	deliver("first", "alice", "alice.pub", 0, "")
	deliver("mixed-up key", "alice", "bob.pub", exDataErr, "--users")
	deliver("unknown user", "carol", "carol.pub", exNoUser, "no such user")
	deliver("second", "alice", "alice.pub", 0, "")

	// Nothing of the refusals reached a log.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	head := func(user string) uint64 {
		k, err := keys.LoadSecret(filepath.Join(dir, user+".sec"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := api.NewClient(url, user, k, nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.Head(ctx)
		if err != nil {
			t.Fatalf("head of %s: %v", user, err)
		}
		return h
	}
	if h := head("alice"); h != uint64(len(acknowledged)) {
		t.Errorf("alice's log has %d entries, want the %d acknowledged", h, len(acknowledged))
	}
	// carol, added later, does not inherit anything under her name.
	addCarol()
	if h := head("carol"); h != 0 {
		t.Errorf("carol, added after a refused delivery to her name, starts at head %d, want 0", h)
	}

	// A device holds exactly what was acknowledged, and rejected nothing.
	db := filepath.Join(dir, "alice.db")
	code, _, errOut := runExit(t, dir, env, bin, "sync", "--once", "--user", "alice", "--user-key", "alice.sec",
		"--user-public-key", "alice.pub", "--spool-key", "spool.pub", "--db", db, "--spool-server", url)
	if code != 0 {
		t.Fatalf("cspool sync: exit %d\n%s", code, errOut)
	}
	aliceKey, err := keys.LoadSecret(filepath.Join(dir, "alice.sec"))
	if err != nil {
		t.Fatal(err)
	}
	st := openTestStore(t, db, aliceKey)
	got := inboxRaw(t, st)
	if len(got) != len(acknowledged) {
		t.Fatalf("the device has %d messages, want the %d acknowledged", len(got), len(acknowledged))
	}
	for i := range got {
		if !bytes.Equal(got[i], acknowledged[i]) {
			t.Errorf("message %d is %q, want %q", i+1, got[i], acknowledged[i])
		}
	}
	if n, err := st.RejectedCount(ctx); err != nil || n != 0 {
		t.Errorf("the device rejected %d entries (%v), want none", n, err)
	}
}

// inboxRaw returns the raw bytes of every INBOX message of a mail
// store, in UID order.
func inboxRaw(t *testing.T, st *mailstore.Store) [][]byte {
	t.Helper()
	ctx := context.Background()
	mb, err := st.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	err = st.Scan(ctx, mb.ID, mailstore.WantRaw, func(m *mailstore.Message) error {
		out = append(out, bytes.Clone(m.Raw))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitLog waits for the process to log want.
func waitLog(t *testing.T, p *proc, want string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(p.stderr.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%q never logged:\n%s", want, p.stderr)
		}
	}
}

// insertPGUser adds a user to the PostgreSQL users table at dsn (created
// if missing).
func insertPGUser(t *testing.T, dsn, name string, k keys.PublicKey) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	udb, err := userdb.OpenPG(ctx, dsn, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	udb.Close()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "INSERT INTO cspool_users (name, public_key) VALUES ($1, $2)", name, k.String()); err != nil {
		t.Fatal(err)
	}
}

// runExitStdin is runExit with stdin as the command's standard input.
func runExitStdin(t *testing.T, dir string, env []string, stdin []byte, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env, cmd.Stdin = dir, env, bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return exitCode(t, err), stdout.String(), stderr.String()
}
