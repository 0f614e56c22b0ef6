package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"

	"github.com/jackc/pgx/v5"
)

// spoolKeyRecipe returns what docs/OPERATING.md's "Replacing the spool
// key" gives: the gen-keys command (its line breaks undone) and the
// server.conf lines of its first fenced block (the second is the systemd
// unit's, spoolkeyunit_test.go).
func spoolKeyRecipe(t *testing.T) (genKeys, conf string) {
	t.Helper()
	fences := strings.Split(operatingSection(t, "### Replacing the spool key"), "```")
	if len(fences) != 5 || !strings.HasPrefix(fences[3], "sh\n") {
		t.Fatalf("docs/OPERATING.md, Replacing the spool key: %d fenced blocks, want the server.conf lines, then the commands for the systemd unit", (len(fences)-1)/2)
	}
	for _, line := range strings.Split(fences[1], "\n") {
		if line = strings.TrimSpace(line); line != "" {
			conf += line + "\n"
		}
	}
	for _, c := range inlineCode(fences[0]) {
		if strings.HasPrefix(c, "cspool gen-keys ") {
			genKeys = c
		}
	}
	if genKeys == "" || !strings.Contains(conf, "previous-spool-key") {
		t.Fatalf("docs/OPERATING.md, Replacing the spool key: gen-keys %q, server.conf lines %q", genKeys, conf)
	}
	return genKeys, conf
}

// TestReplaceSpoolKeyRecipeSQLite and TestReplaceSpoolKeyRecipePostgres
// follow docs/OPERATING.md, "Replacing the spool key", with real server
// processes: a store with mail signed by the old key; while a server runs
// with it a server given the new key and the old one's public file is
// refused, naming the running key, and the running one goes on; once it
// is stopped a store recording neither key is refused, and so are a
// previous key that is the new one, a secret key and a damaged file; then
// the recipe's gen-keys and server.conf lines, verbatim but for the
// folder: the first server replaces the key (its INFO line names both
// ids), a second one with the same lines and a restart start as usual, and
// one with the new key alone too. Every log, position and chain hash is as
// it was, and new deliveries follow them. The old key is refused after it:
// a server with it does not start, cspool deliver with it exits 78
// straight into the store and 77 through a server, each with a hint. Last,
// cspool deliver straight into a new store makes the replacement itself,
// with the same lines in the server's config file.
func TestReplaceSpoolKeyRecipeSQLite(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testReplaceSpoolKey(t, func() ([]string, string, func() spool.Store) {
		dir := t.TempDir()
		return []string{"--spool-dir", dir}, dir, func() spool.Store {
			st, err := openSpoolDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}

func TestReplaceSpoolKeyRecipePostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	testReplaceSpoolKey(t, func() ([]string, string, func() spool.Store) {
		dsn := pgtest.Database(t)
		return []string{"--store", "postgres", "--dsn", dsn}, "the PostgreSQL store " + pgstore.Redact(dsn), func() spool.Store {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := openPostgres(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}

func testReplaceSpoolKey(t *testing.T, newStore func() (args []string, named string, open func() spool.Store)) {
	bin := buildServerBinary(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	genKeys, confLines := spoolKeyRecipe(t)
	// The recipe's /etc/cspool is this test's folder.
	genKeys = strings.ReplaceAll(genKeys, "/etc/cspool/", dir+"/")
	confLines = strings.ReplaceAll(confLines, "/etc/cspool/", dir+"/")
	alice := mustKey(t)
	ks := map[string]*keys.SecretKey{"user": alice, "spool": mustKey(t), "c": mustKey(t)}
	for name, k := range ks {
		if err := keys.WriteFiles(k, path(name+".sec"), path(name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, path("users"), map[string]*keys.SecretKey{"alice": alice})
	if err := os.WriteFile(path("damaged.pub"), []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "USER=alice")
	store, named, open := newStore()
	conf := func(name string) string {
		t.Helper()
		c := "users = " + path("users") + "\n" + confLines
		for i := 0; i < len(store); i += 2 {
			c += strings.TrimPrefix(store[i], "--") + " = " + store[i+1] + "\n"
		}
		if err := os.WriteFile(path(name), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		return path(name)
	}
	start := func(args ...string) (*serverProc, string) {
		t.Helper()
		lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		return startServer(t, bin, append(args, "--lmtp", lmtp)...), lmtp
	}
	onStore := func(args ...string) []string {
		return append(append(append([]string{}, store...), "--users", path("users")), args...)
	}
	// refused runs a server that must exit non-zero before it serves, and
	// returns its stderr.
	refused := func(args ...string) string {
		t.Helper()
		port := freePort(t)
		cmd := exec.Command(bin, append([]string{"server", "--port", fmt.Sprint(port), "--lmtp", fmt.Sprintf("127.0.0.1:%d", freePort(t))}, args...)...)
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
			t.Fatalf("server %q started, want it refused:\n%s", args, stderr)
		}
		if code := exitCode(t, err); code == 0 {
			t.Fatalf("the refused server %q exited 0:\n%s", args, stderr)
		}
		if strings.Contains(stderr.String(), `msg="cspool server started"`) {
			t.Errorf("the refused server logged its start:\n%s", stderr)
		}
		return stderr.String()
	}
	says := func(what, text string, wants ...string) {
		t.Helper()
		for _, w := range wants {
			if !strings.Contains(text, w) {
				t.Errorf("%s does not say %q:\n%s", what, w, text)
			}
		}
	}
	acked := 0
	send := func(lmtp, tok string) {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: k\r\n\r\ntoken="+tok+"\r\n")
		if len(ok) != 1 {
			t.Fatalf("LMTP %s through %s: %d %v, want 250", tok, lmtp, code, err)
		}
		acked++
	}
	deliver := func(args ...string) (int, string) {
		t.Helper()
		code, _, stderr := runExitStdin(t, dir, env, []byte("Subject: d\r\n\r\ntoken=deliver\r\n"), bin,
			append([]string{"deliver", "--users", path("users"), "--user", "alice", "--quiet"}, args...)...)
		if code == 0 {
			acked++
		}
		return code, stderr
	}
	// snapshot: alice's log and its chain hash at every position.
	snapshot := func() ([]spool.Entry, []spool.Hash) {
		t.Helper()
		st := open()
		defer st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		es, err := st.Read(ctx, "alice", 0, 1000, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		hs := []spool.Hash{{}}
		for _, e := range es {
			h, err := st.(spool.Chainer).ChainHash(ctx, "alice", e.Pos)
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
		}
		return es, hs
	}

	// Mail signed by the old key: LMTP, and cspool deliver beside the server.
	old, lmtpOld := start(onStore("--spool-key", path("spool.sec"))...)
	send(lmtpOld, "old-1")
	if code, stderr := deliver(append(store, "--spool-key", path("spool.sec"))...); code != 0 {
		t.Fatalf("cspool deliver with the old key: exit %d\n%s", code, stderr)
	}
	send(lmtpOld, "old-2")

	// The recipe's step 1.
	if out := runCmd(t, dir, env, "", bin, strings.Fields(genKeys)[1:]...); !strings.Contains(out, "public key:") {
		t.Fatalf("%s: %s", genKeys, out)
	}
	newSK, err := keys.LoadSecret(path("spool-new.sec"))
	if err != nil {
		t.Fatal(err)
	}
	idOld, idNew := fmt.Sprintf("%x", ks["spool"].Public().KeyID()), fmt.Sprintf("%x", newSK.Public().KeyID())
	idC := fmt.Sprintf("%x", ks["c"].Public().KeyID())

	// Refused while a server runs with the old key; it goes on.
	says("the replacement beside a server running with the old key", refused("--config", conf("server.conf")),
		"--previous-spool-key", idOld, idNew, named, "nothing replaced", "stop every server (and cspool deliver) running with the key with id "+idOld+" first")
	send(lmtpOld, "old-3")
	before, beforeHashes := snapshot()
	if len(before) != acked {
		t.Fatalf("alice's log holds %d entries, want the %d acknowledged", len(before), acked)
	}
	old.stop(t)

	// The refusals of the files.
	says("a store recording neither key", refused(onStore("--spool-key", path("spool-new.sec"), "--previous-spool-key", path("c.pub"))...),
		idC, idNew, "records the spool key with id "+idOld+", neither of them; nothing replaced", "hint:")
	says("a previous key that is the new one", refused(onStore("--spool-key", path("spool-new.sec"), "--previous-spool-key", path("spool-new.pub"))...),
		"spool-new.pub is the public half of --spool-key", "nothing to replace")
	says("a secret key as the previous key", refused(onStore("--spool-key", path("spool-new.sec"), "--previous-spool-key", path("spool.sec"))...),
		path("spool.sec"), "--previous-spool-key takes a public key file")
	says("a damaged previous key", refused(onStore("--spool-key", path("spool-new.sec"), "--previous-spool-key", path("damaged.pub"))...),
		path("damaged.pub"))
	if after, _ := snapshot(); len(after) != len(before) {
		t.Fatalf("the refusals changed alice's log: %d entries, want %d", len(after), len(before))
	}
	// Nothing was replaced: the old key still starts.
	check, _ := start(onStore("--spool-key", path("spool.sec"))...)
	check.stop(t)

	// The recipe's step 3, twice, and a restart.
	first, lmtpFirst := start("--config", conf("server.conf"))
	says("the replacing server's log", first.stderr.String(), "the spool key was replaced", "spool_key_id="+idNew, "previous_key_id="+idOld)
	send(lmtpFirst, "new-1")
	second, lmtpSecond := start("--config", conf("server.conf"))
	says("the second server's log", second.stderr.String(), "may go", "spool_key_id="+idNew)
	if strings.Contains(second.stderr.String(), "the spool key was replaced") {
		t.Errorf("the second server replaced the key again:\n%s", second.stderr)
	}
	send(lmtpSecond, "new-2")
	first.stop(t)
	first, lmtpFirst = start("--config", conf("server.conf"))
	send(lmtpFirst, "new-3")
	alone, lmtpAlone := start(onStore("--spool-key", path("spool-new.sec"))...)
	send(lmtpAlone, "new-4")
	// The recipe's step 4: cspool deliver with the server's config file.
	if code, stderr := deliver("--config", conf("server.conf")); code != 0 {
		t.Fatalf("cspool deliver with the recipe's server.conf: exit %d\n%s", code, stderr)
	}

	// The old key after the replacement.
	// The store records it as replaced: no word of a restore, which a
	// new key refused on a store restored from an older backup hears.
	oldHint := "If its key was replaced, this is the old one: the store records that it was replaced"
	stderr := refused(onStore("--spool-key", path("spool.sec"))...)
	says("a server with the old key", stderr, "signed by the key with id "+idNew, oldHint)
	if strings.Contains(stderr, "Restoring a backup") {
		t.Errorf("a server with the old key is told of a restore:\n%s", stderr)
	}
	code, stderr := deliver(append(store, "--spool-key", path("spool.sec"))...)
	if code != exConfig {
		t.Errorf("cspool deliver with the old key straight into the store: exit %d, want %d\n%s", code, exConfig, stderr)
	}
	says("cspool deliver with the old key", stderr, "signed by the key with id "+idNew, oldHint)
	code, stderr = deliver("--spool-key", path("spool.sec"), "--spool-server", alone.url)
	if code != exNoPerm {
		t.Errorf("cspool deliver with the old key through the server: exit %d, want %d\n%s", code, exNoPerm, stderr)
	}
	says("cspool deliver with the old key through the server", stderr, "if its spool key was replaced")
	// The two files swapped: back to the old key, which the store
	// records as replaced. Before, only the running servers stopped it
	// (a *LiveKeyError, whose hint said to stop them and start again so).
	says("the files swapped, back to the old key", refused(onStore("--spool-key", path("spool.sec"), "--previous-spool-key", path("spool-new.pub"))...),
		"records that the key with id "+idOld+" was replaced, by the key with id "+idNew, "nothing replaced", "is not taken back", "swapped")
	code, stderr = deliver("--spool-key", path("spool-new.sec"), "--previous-spool-key", path("spool.pub"), "--spool-server", alone.url)
	if code != exUsage {
		t.Errorf("cspool deliver --previous-spool-key with --spool-server: exit %d, want %d\n%s", code, exUsage, stderr)
	}
	for _, p := range []*serverProc{first, second, alone} {
		if strings.Contains(p.stderr.String(), "spool key mismatch") {
			t.Errorf("a server with the new key logged a mismatch:\n%s", p.stderr)
		}
	}

	// Every entry from before is where it was, with its chain hash.
	after, afterHashes := snapshot()
	if len(after) != acked {
		t.Fatalf("alice's log holds %d entries, want the %d acknowledged", len(after), acked)
	}
	for i, e := range before {
		if after[i].Pos != e.Pos || !bytes.Equal(after[i].Data, e.Data) || afterHashes[i+1] != beforeHashes[i+1] {
			t.Fatalf("entry %d of alice's log changed with the replacement", e.Pos)
		}
	}
	for i, e := range after {
		if e.Pos != uint64(i+1) || afterHashes[i+1] != spool.ChainNext(afterHashes[i], e.Data) {
			t.Fatalf("alice's log after the replacement: entry %d at position %d, or its chain hash, is not the next", i, e.Pos)
		}
	}
	alone.stop(t)
	first.stop(t)
	second.stop(t)

	// cspool deliver straight into a new store makes the replacement.
	store, named, _ = newStore()
	if code, stderr := deliver(append(store, "--spool-key", path("spool.sec"))...); code != 0 {
		t.Fatalf("cspool deliver with the old key into a new store: exit %d\n%s", code, stderr)
	}
	code, _, stderr = runExitStdin(t, dir, env, []byte("Subject: d\r\n\r\ntoken=replaced\r\n"), bin,
		"deliver", "--config", conf("deliver.conf"), "--user", "alice")
	if code != 0 {
		t.Fatalf("cspool deliver replacing the key: exit %d\n%s", code, stderr)
	}
	says("cspool deliver replacing the key", stderr, "the spool key with id "+idOld, "is replaced by the key with id "+idNew, named)
	if code, stderr := deliver("--config", conf("deliver.conf")); code != 0 || stderr != "" {
		t.Fatalf("cspool deliver with the key replaced already: exit %d, want 0 and nothing said\n%s", code, stderr)
	}
	if code, stderr := deliver(append(store, "--spool-key", path("spool.sec"))...); code != exConfig {
		t.Errorf("cspool deliver with the old key after its replacement: exit %d, want %d\n%s", code, exConfig, stderr)
	}
}

// TestReplaceSpoolKeyHoldLostPostgres: a server with the old key whose
// hold on it was lost (its session ended) when the key was replaced, the
// one way a process holding the old key meets the new one: its LMTP
// deliveries get 451 and nothing is appended, its log says the store
// records another key, and a server with the new key delivers. The
// replacement is tried right after each end of the old server's session
// until it finds no holder (the server takes its hold again on its own).
func TestReplaceSpoolKeyHoldLostPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	alice, oldK, newK := mustKey(t), mustKey(t), mustKey(t)
	for name, k := range map[string]*keys.SecretKey{"old": oldK, "new": newK} {
		if err := keys.WriteFiles(k, path(name+".sec"), path(name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, path("users"), map[string]*keys.SecretKey{"alice": alice})
	dsn := pgtest.Database(t)
	start := func(key string) (*serverProc, string) {
		t.Helper()
		lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		return startServer(t, bin, "--store", "postgres", "--dsn", dsn, "--users", path("users"), "--spool-key", path(key+".sec"), "--lmtp", lmtp), lmtp
	}
	send := func(lmtp, tok string) int {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: k\r\n\r\ntoken="+tok+"\r\n")
		if err != nil && code == 0 {
			t.Fatalf("LMTP %s: %v", tok, err)
		}
		if len(ok) == 1 {
			return 250
		}
		return code
	}
	old, lmtpOld := start("old")
	if code := send(lmtpOld, "old-1"); code != 250 {
		t.Fatalf("LMTP through the server with the old key: %d, want 250", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := openPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	replaced := false
	for try := 0; try < 100 && !replaced; try++ {
		// This test's store only: other tests run beside it.
		if _, err := c.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock'
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND classid::bigint = $1 AND objid::bigint = 'cspool_spool_key'::regclass::oid::bigint AND objsubid = 2`, int64(pgstore.HoldLockClass)); err != nil {
			t.Fatal(err)
		}
		var live *spool.LiveKeyError
		replaced, err = st.ReplaceSpoolKey(ctx, oldK.Public().Bytes(), newK.Public().Bytes())
		if err != nil && !errors.As(err, &live) {
			t.Fatalf("ReplaceSpoolKey: %v", err)
		}
	}
	if !replaced {
		t.Fatal("the old key was never replaced: the server with it always held it again first")
	}
	if code := send(lmtpOld, "old-2"); code != 451 {
		t.Errorf("LMTP through the server with the old key after its replacement: %d, want 451", code)
	}
	said := "the store records another spool key"
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(old.stderr.String(), said) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(old.stderr.String(), said) {
		t.Errorf("the old server's log does not say %q:\n%s", said, old.stderr)
	}
	if code := send(lmtpOld, "old-3"); code != 451 {
		t.Errorf("LMTP through the server with the old key after its replacement: %d, want 451", code)
	}
	_, lmtpNew := start("new")
	if code := send(lmtpNew, "new-1"); code != 250 {
		t.Errorf("LMTP through a server with the new key: %d, want 250", code)
	}
	es, err := st.Read(ctx, "alice", 0, 100, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 {
		t.Errorf("alice's log holds %d entries, want the 2 acknowledged (nothing through the old key after the replacement)", len(es))
	}
}
