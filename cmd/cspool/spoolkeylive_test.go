package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
)

// TestSpoolKeyLivePostgres and TestSpoolKeyLiveSQLite: real server
// processes on one new store. Two with one key both run (several servers
// of one PostgreSQL database are a supported setup). A third given another
// key while they run exits non-zero before serving, with an error naming
// both key ids and the store, and records nothing: the first two go on
// delivering (250). Before, it started, recorded its key over theirs, and
// they answered every delivery 451 from then on. On a second new store,
// the holders SIGKILLed one by one: while one lives another key is still
// refused; once none lives (the operating system, or PostgreSQL ending the
// session, drops a killed process's lock) a server with another key
// starts and delivers.
func TestSpoolKeyLivePostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testSpoolKeyLive(t, func() ([]string, string) {
		dsn := pgtest.Database(t)
		return []string{"--store", "postgres", "--dsn", dsn}, "on the PostgreSQL store " + pgstore.Redact(dsn) + " hold"
	})
}

func TestSpoolKeyLiveSQLite(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testSpoolKeyLive(t, func() ([]string, string) {
		dir := t.TempDir()
		return []string{"--spool-dir", dir}, " on " + dir + " hold"
	})
}

func testSpoolKeyLive(t *testing.T, newStore func() (args []string, named string)) {
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
	idA, idB := fmt.Sprintf("%x", ks["a"].Public().KeyID()), fmt.Sprintf("%x", ks["b"].Public().KeyID())
	args := func(store []string, key, lmtp string) []string {
		return append(append([]string{}, store...), "--users", path("users"), "--spool-key", path(key+".sec"), "--lmtp", lmtp)
	}
	start := func(store []string, key string) (*serverProc, string) {
		t.Helper()
		lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		return startServer(t, bin, args(store, key, lmtp)...), lmtp
	}
	// refused runs a server that must exit before it serves, and returns
	// its log; started: it served instead (then it is stopped).
	refused := func(store []string, key string) (log string, started bool) {
		t.Helper()
		port := freePort(t)
		cmd := exec.Command(bin, append([]string{"server", "--port", fmt.Sprint(port)},
			args(store, key, fmt.Sprintf("127.0.0.1:%d", freePort(t)))...)...)
		stderr := &lockedBuffer{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		exited, err := awaitHealth(t, fmt.Sprintf("http://127.0.0.1:%d", port), done)
		if !exited {
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
			return stderr.String(), true
		}
		if code := exitCode(t, err); code == 0 {
			t.Fatalf("the server refused to start exited 0:\n%s", stderr)
		}
		return stderr.String(), false
	}
	send := func(lmtp, tok string, want int) {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: k\r\n\r\ntoken="+tok+"\r\n")
		if err != nil && code == 0 {
			t.Fatalf("LMTP %s: %v", tok, err)
		}
		if len(ok) == 1 {
			code = 250
		}
		if code != want {
			t.Fatalf("LMTP %s through %s: %d, want %d", tok, lmtp, code, want)
		}
	}
	wantRefusal := func(log, named string) {
		t.Helper()
		for _, want := range []string{"spool key with id " + idB, "the spool key with id " + idA + "; nothing recorded", named, "nothing recorded", "hint:"} {
			if !strings.Contains(log, want) {
				t.Errorf("the refusal does not say %q:\n%s", want, log)
			}
		}
		if strings.Contains(log, `msg="cspool server started"`) {
			t.Errorf("the refused server logged its start:\n%s", log)
		}
	}

	// Two servers with one key, a third with another.
	store, named := newStore()
	a1, lmtp1 := start(store, "a")
	a2, lmtp2 := start(store, "a")
	log, started := refused(store, "b")
	if started {
		t.Fatalf("a server with another spool key started beside two running ones:\n%s", log)
	}
	wantRefusal(log, named)
	// cspool deliver, straight into the store, holds its key while it
	// runs, and is refused the same way.
	code, _, stderr := runExitStdin(t, dir, append(os.Environ(), "USER=alice"), []byte("Subject: d\r\n\r\ntoken=d\r\n"), bin,
		append([]string{"deliver", "--users", path("users"), "--user", "alice", "--spool-key", path("b.sec"), "--quiet"}, store...)...)
	if code != exConfig || !strings.Contains(stderr, "the spool key with id "+idA+"; nothing recorded") {
		t.Errorf("cspool deliver with another spool key beside running servers: exit %d, want %d naming the held key:\n%s", code, exConfig, stderr)
	}
	send(lmtp1, "a1-1", 250)
	send(lmtp2, "a2-1", 250)
	send(lmtp1, "a1-2", 250)
	for _, p := range []*serverProc{a1, a2} {
		if strings.Contains(p.stderr.String(), "spool key mismatch") {
			t.Errorf("a running server logged a mismatch:\n%s", p.stderr)
		}
	}

	// The holders killed: another key starts once none lives.
	store, named = newStore()
	k1, _ := start(store, "a")
	k2, _ := start(store, "a")
	kill := func(p *serverProc) {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
	}
	kill(k1)
	if log, started := refused(store, "b"); started {
		t.Fatalf("a server with another spool key started while one with the first still runs:\n%s", log)
	} else {
		wantRefusal(log, named)
	}
	kill(k2)
	// PostgreSQL ends a killed client's session when it reads the closed
	// connection: wait, by condition, for the lock to be gone.
	deadline := time.Now().Add(30 * time.Second)
	for {
		log, started := refused(store, "b")
		if started {
			break
		}
		if !strings.Contains(log, "the spool key with id "+idA+"; nothing recorded") || time.Now().After(deadline) {
			t.Fatalf("a server with another spool key after every holder of the first was killed:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, lmtpB := start(store, "b")
	send(lmtpB, "b-1", 250)
	if !strings.Contains(b.stderr.String(), "spool_key_id="+idB) {
		t.Errorf("the new server's start line does not name its key %s:\n%s", idB, b.stderr)
	}
}
