package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore/pgtest"
	"cspool/internal/spool/sqlitestore"

	"github.com/jackc/pgx/v5"
)

// TestSpoolKeyReplacedPostgres and TestSpoolKeyReplacedSQLite: a server
// runs on a new store, and another key is recorded over its own, as a
// cspool before the hold (which holds nothing, and so is not refused while
// one runs: TestSpoolKeyLive) did when started with another key; a second
// server with that key starts. The first then appends nothing: its LMTP
// deliveries get 451 (the sender retries) and cspool deliver through its
// HTTP API exits 75, and its log names the mismatch by key ids. Before the
// check in the append, both answered 250 and every device passed by the
// deliveries signed by the key it was not given. The normal path goes on:
// a third server with the recorded key, a restart with it, and a device
// given the recorded key syncs every acknowledged message with nothing
// rejected.
func TestSpoolKeyReplacedPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dsn := pgtest.Database(t)
	testSpoolKeyReplaced(t, func(pub []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "UPDATE cspool_spool_key SET key = $1", pub); err != nil {
			t.Fatal(err)
		}
	}, "--store", "postgres", "--dsn", dsn)
}

func TestSpoolKeyReplacedSQLite(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	testSpoolKeyReplaced(t, func(pub []byte) {
		db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, sqlitestore.DBName)+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("UPDATE spool_key SET key = ?", pub); err != nil {
			t.Fatal(err)
		}
	}, "--spool-dir", dir)
}

// testSpoolKeyReplaced: record writes a key into the store as a process
// that holds none would.
func testSpoolKeyReplaced(t *testing.T, record func(pub []byte), store ...string) {
	bin := buildServerBinary(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	alice := mustKey(t)
	ks := map[string]*keys.SecretKey{"user": alice, "a": mustKey(t), "b": mustKey(t)}
	for name, k := range ks {
		if err := keys.WriteFiles(k, path(name+".sec"), path(name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, path("users"), map[string]*keys.SecretKey{"alice": alice})
	start := func(key string) (*serverProc, string) {
		t.Helper()
		lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		args := append(append([]string{}, store...), "--users", path("users"), "--spool-key", path(key+".sec"), "--lmtp", lmtp)
		return startServer(t, bin, args...), lmtp
	}
	acked := 0
	send := func(lmtp, tok string, want int) {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: k\r\n\r\ntoken="+tok+"\r\n")
		if err != nil && code == 0 {
			t.Fatalf("LMTP %s: %v", tok, err)
		}
		if len(ok) == 1 {
			acked++
			code = 250
		}
		if code != want {
			t.Fatalf("LMTP %s through %s: %d, want %d", tok, lmtp, code, want)
		}
	}
	idA, idB := fmt.Sprintf("%x", ks["a"].Public().KeyID()), fmt.Sprintf("%x", ks["b"].Public().KeyID())

	a, lmtpA := start("a")
	record(ks["b"].Public().Bytes()) // the store holds no log: b's key is recorded over a's
	b, lmtpB := start("b")
	send(lmtpA, "a-1", 451)
	// The server's stderr reaches the buffer through a pipe the exec
	// package copies on its own goroutine: the line may follow the 451.
	mismatch := "recorded_key_id=" + idB + " spool_key_id=" + idA
	named := func(log string) bool {
		return strings.Contains(log, "spool key mismatch") && strings.Contains(log, mismatch)
	}
	for deadline := time.Now().Add(20 * time.Second); !named(a.stderr.String()) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if log := a.stderr.String(); !named(log) {
		t.Errorf("the log of the server whose key was replaced does not name the mismatch (%s):\n%s", mismatch, log)
	}
	send(lmtpB, "b-1", 250)
	send(lmtpA, "a-2", 451)
	env := append(os.Environ(), "USER=alice")
	code, _, stderr := runExitStdin(t, dir, env, []byte("Subject: h\r\n\r\ntoken=a-http\r\n"), bin,
		"deliver", "--user", "alice", "--user-key", path("user.pub"), "--spool-key", path("a.sec"), "--spool-server", a.url, "--quiet")
	if code != exTempFail {
		t.Errorf("cspool deliver through the server whose key was replaced: exit %d, want %d\n%s", code, exTempFail, stderr)
	}

	// The normal path: a third server with the recorded key, and the
	// second restarted with it.
	c, lmtpC := start("b")
	send(lmtpC, "c-1", 250)
	b.stop(t)
	b, lmtpB = start("b")
	send(lmtpB, "b-2", 250)
	send(lmtpA, "a-3", 451)
	if strings.Contains(b.stderr.String()+c.stderr.String(), "spool key mismatch") {
		t.Errorf("a server with the recorded key logged a mismatch:\n%s\n%s", b.stderr, c.stderr)
	}

	// A device given the recorded key sees every acknowledged message and
	// rejects nothing: nothing signed by a is in the log.
	out := runCmd(t, dir, env, "", bin, "sync", "--user", "alice", "--db", path("mail.db"), "--spool-server", c.url,
		"--user-key", path("user.sec"), "--user-public-key", path("user.pub"), "--spool-key", path("b.pub"))
	want := fmt.Sprintf("synced to position %d", acked)
	if acked != 3 || !strings.Contains(out, want) || !strings.Contains(out, fmt.Sprintf("%d applied, 0 rejected", acked)) {
		t.Errorf("sync with the recorded key after %d acknowledged deliveries: want %q, all applied, none rejected:\n%s", acked, want, out)
	}
}

// TestKeyIDAgrees: the key id the spool package prints in a mismatch is
// the one keys gives, which the start line prints as spool_key_id.
func TestKeyIDAgrees(t *testing.T) {
	k := mustKey(t).Public()
	if got, want := spool.KeyID(k.Bytes()), fmt.Sprintf("%x", k.KeyID()); got != want {
		t.Errorf("spool.KeyID = %s, keys' KeyID = %s", got, want)
	}
}
