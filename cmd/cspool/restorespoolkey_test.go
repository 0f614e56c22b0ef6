package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// restoreSpoolKeyLine is the server.conf line docs/OPERATING.md's
// "Restoring a backup" gives for a backup made before the spool key was
// replaced: the first code span there that sets previous-spool-key.
func restoreSpoolKeyLine(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "OPERATING.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), "\n### Restoring a backup\n")
	if !ok {
		t.Fatal("docs/OPERATING.md has no \"### Restoring a backup\"")
	}
	sec, _, _ = strings.Cut(sec, "\n### ")
	parts := strings.Split(sec, "`")
	for k := 1; k < len(parts); k += 2 {
		if c := strings.Join(strings.Fields(parts[k]), " "); strings.HasPrefix(c, "previous-spool-key = ") {
			return c
		}
	}
	t.Fatal("docs/OPERATING.md, Restoring a backup: no `previous-spool-key = ...` line for a backup made before the spool key was replaced")
	return ""
}

// TestRestoreAfterSpoolKeyReplaced and
// TestRestoreAfterSpoolKeyReplacedPostgres follow docs/OPERATING.md's
// "Backups" and "Restoring a backup" (as printed, for the store) with real
// servers across a replacement of the spool key made after the backup: the
// restored store records the old key, so the server started with the new
// key alone is refused and so is cspool deliver straight into it, each
// with a hint that names the restore and the old key's id; with the line
// the restore recipe gives put back in server.conf the server replaces the
// key again, takes mail, records the old key as the one replaced, and
// starts again once the line is removed. The old key is refused on the
// restored store from then on, with a hint that says the store records it
// as replaced (the restore is not named: the key given is the old one for
// certain).
func TestRestoreAfterSpoolKeyReplaced(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	needTool(t, "sqlite3", "sqlite3")
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	testRestoreAfterSpoolKeyReplaced(t, dir, restoreKeyStore{
		conf:   "spool-dir = " + spoolDir + "\n",
		flags:  []string{"--spool-dir", spoolDir},
		step:   0,
		ext:    ".db",
		paths:  []string{"/var/lib/cspool", spoolDir},
		backup: "spool-2026-03-01.db",
		open: func() spoolKeyStore {
			st, err := openSpoolDir(spoolDir)
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	})
}

func TestRestoreAfterSpoolKeyReplacedPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	db := newPGRestoreDB(t)
	dir := t.TempDir()
	// The recipes' tools of the server's major version, as the doc says,
	// where the machine has them; else those on PATH.
	env := os.Environ()
	if tools := db.toolsDir(t); tools != "" {
		env = append(env, "PATH="+tools+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	for _, tool := range []string{"pg_dump", "pg_restore", "dropdb", "createdb", "psql"} {
		if _, err := lookPathIn(tool, env); err != nil {
			needTool(t, tool, "postgresql-client")
		}
	}
	testRestoreAfterSpoolKeyReplaced(t, dir, restoreKeyStore{
		conf:   "store = postgres\ndsn = " + db.dsn + "\nusers-table = true\n",
		flags:  []string{"--store", "postgres", "--dsn", db.dsn},
		table:  db,
		env:    env,
		step:   1,
		ext:    ".pgdump",
		paths:  db.replace,
		backup: "spool-2026-03-01.pgdump",
		open: func() spoolKeyStore {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := openPostgres(ctx, db.dsn)
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	})
}

// spoolKeyStore is what the restore tests read of a store.
type spoolKeyStore interface {
	spool.Store
	spool.KeyHistory
}

// restoreKeyStore is one store of testRestoreAfterSpoolKeyReplaced: its
// server.conf lines and flags, the users table (nil: the users file), the index of
// its backup and restore recipes, its backup's extension, the recipes'
// replacements and backup name, and how to open it.
type restoreKeyStore struct {
	conf   string
	flags  []string
	env    []string // the recipes' environment; nil: os.Environ()
	table  *pgRestoreDB
	step   int
	ext    string
	paths  []string
	backup string
	open   func() spoolKeyStore
}

func testRestoreAfterSpoolKeyReplaced(t *testing.T, dir string, store restoreKeyStore) {
	bin := buildServerBinary(t)
	path := func(name string) string { return filepath.Join(dir, name) }
	backups := path("backup") // made by the backup recipe
	alice := mustKey(t)
	ks := map[string]*keys.SecretKey{"spool": mustKey(t), "spool-new": mustKey(t)}
	for name, k := range ks {
		if err := keys.WriteFiles(k, path(name+".sec"), path(name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	idOld := fmt.Sprintf("%x", ks["spool"].Public().KeyID())
	writeUsersFile(t, path("users"), map[string]*keys.SecretKey{"alice": alice})
	users := "users = " + path("users") + "\n"
	if store.table != nil {
		users = ""
	}
	env := store.env
	if env == nil {
		env = os.Environ()
	}
	env = append(slices.Clone(env), "USER=alice")
	conf := func(key string, extra ...string) string {
		t.Helper()
		c := users + store.conf + "spool-key = " + path(key) + "\n" + strings.Join(extra, "\n") + "\n"
		if err := os.WriteFile(path("server.conf"), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
		return path("server.conf")
	}
	lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start := func(args ...string) *serverProc {
		t.Helper()
		return startServer(t, bin, append(args, "--lmtp", lmtp)...)
	}
	send := func(tok string) {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		if ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: k\r\n\r\ntoken="+tok+"\r\n"); len(ok) != 1 {
			t.Fatalf("LMTP %s: %d %v, want 250", tok, code, err)
		}
	}
	entries := func() int {
		t.Helper()
		st := store.open()
		defer st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		es, err := st.Read(ctx, "alice", 0, 1000, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	hinted := func(what, stderr string) {
		t.Helper()
		for _, w := range []string{"signed by the key with id " + idOld, "restored from a backup", "the key with id " + idOld + "'s public file as --previous-spool-key",
			`"Restoring a backup"`} {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s does not say %q:\n%s", what, w, stderr)
			}
		}
	}

	// Mail signed by the old key, the backup as documented, then the key
	// replaced ("Replacing the spool key", step 3) and more mail.
	srv := start("--config", conf("spool.sec"))
	if store.table != nil {
		c := store.table.conn(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := c.Exec(ctx, "INSERT INTO cspool_users VALUES ('alice', $1)", alice.Public().String())
		cancel()
		c.Close(context.Background())
		if err != nil {
			t.Fatal(err)
		}
	}
	send("old-1")
	send("old-2")
	runRecipe(t, backupSteps(t)[store.step], dir, env, append(slices.Clone(store.paths), "/backup/cspool", backups),
		func(l string) { t.Fatalf("unexpected %q in the backup recipe", l) })
	names, err := filepath.Glob(filepath.Join(backups, "spool-*"+store.ext))
	if err != nil || len(names) != 1 {
		t.Fatalf("the backup recipe made %v (%v), want one spool-DATE%s", names, err, store.ext)
	}
	srv.stop(t)
	srv = start("--config", conf("spool-new.sec", "previous-spool-key = "+path("spool.pub")))
	send("new-1")
	srv.stop(t)
	srv = start("--config", conf("spool-new.sec")) // the line removed once all started
	send("new-2")

	// The restore as printed; its start, with the new key alone, is refused.
	line := strings.ReplaceAll(restoreSpoolKeyLine(t), "/etc/cspool/", dir+"/")
	runRecipe(t, restoreSteps(t)[store.step], dir, env,
		append(slices.Clone(store.paths), "/backup/cspool", backups, store.backup, filepath.Base(names[0])), func(l string) {
			switch l {
			case "systemctl stop cspool-server":
				srv.stop(t)
			case "systemctl start cspool-server":
				code, _, stderr := runExit(t, dir, env, bin, "server", "--port", fmt.Sprint(freePort(t)), "--lmtp", lmtp, "--config", path("server.conf"))
				if code != 78 {
					t.Fatalf("the server with the new key alone on the restored store exited %d, want 78:\n%s", code, stderr)
				}
				hinted("the server with the new key alone on the restored store", stderr)
				code, _, stderr = runExitStdin(t, dir, env, []byte("Subject: d\r\n\r\ntoken=deliver\r\n"), bin,
					append([]string{"deliver", "--spool-key", path("spool-new.sec"), "--user", "alice", "--users", path("users"), "--quiet"}, store.flags...)...)
				if code == 0 {
					t.Fatal("cspool deliver with the new key alone into the restored store exited 0")
				}
				hinted("cspool deliver with the new key alone into the restored store", stderr)
				// The recipe's way out: the line put back.
				srv = start("--config", conf("spool-new.sec", line))
				if !strings.Contains(srv.stderr.String(), "the spool key was replaced") {
					t.Errorf("the server with the restore recipe's line did not log the replacement:\n%s", srv.stderr)
				}
			default:
				t.Fatalf("unexpected %q in the operator's recipe", l)
			}
		})
	send("after-restore")
	srv.stop(t)
	if n := entries(); n != 3 {
		t.Errorf("alice's log holds %d entries after the restore, want the backup's 2 and one more", n)
	}
	st := store.open()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prev, err := st.PreviousSpoolKey(ctx, ks["spool-new"].Public().Bytes())
	st.Close()
	if err != nil || !bytes.Equal(prev, ks["spool"].Public().Bytes()) {
		t.Errorf("the restored store records %x (%v) as the key the new one replaced, want the old one", prev, err)
	}

	// The line removed: the new key alone starts; the old key is refused.
	srv = start("--config", conf("spool-new.sec"))
	send("after-restore-2")
	srv.stop(t)
	code, _, stderr := runExit(t, dir, env, bin, "server", "--port", fmt.Sprint(freePort(t)), "--lmtp", lmtp, "--config", conf("spool.sec"))
	if code != 78 || !strings.Contains(stderr, "this is the old one: the store records that it was replaced") || strings.Contains(stderr, "Restoring a backup") {
		t.Errorf("the server with the old key on the re-replaced store exited %d, want 78 saying the store records the key as replaced, with no word of a restore:\n%s", code, stderr)
	}
}

// TestRecoverAfterRestoreAcrossSpoolKeyReplacement: a device that applied
// deliveries signed by the new spool key (past the cutover) before the
// spool was restored from a backup made before the replacement. The server
// is started on the restored store as "Restoring a backup" says (the old
// key's public file as previous-spool-key), and the device, given both
// keys, is recovered with the documented recipe: its history after the
// restored head, the new key's deliveries among it, goes back onto the
// spool. A second device, which dropped previous-spool-key once past the
// cutover, takes the restoration by itself, and a new device given the
// new key alone ends with the same mail.
func TestRecoverAfterRestoreAcrossSpoolKeyReplacement(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	needTool(t, "sqlite3", "sqlite3")
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python)
	a, b := s.newDevice(t, "a"), s.newDevice(t, "b")
	s.start(t, a)
	s.start(t, b)
	m := s.deliver(t, 2)
	s.synced(t, a)
	s.synced(t, b)
	backup := s.backupSpool(t)

	// The spool key replaced: the old pair kept as spool-old.*, the new
	// one under the names the rig signs with.
	s.server.stop(t, syscall.SIGTERM, 45*time.Second)
	for _, ext := range []string{".sec", ".pub"} {
		if err := os.Rename(filepath.Join(s.dir, "spool"+ext), filepath.Join(s.dir, "spool-old"+ext)); err != nil {
			t.Fatal(err)
		}
	}
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	s.serverArgs = []string{"--spool-dir", s.spoolDir, "--previous-spool-key", "spool-old.pub"}
	s.startServer(t)
	// Both devices given both keys ("Replacing the spool key: the
	// devices").
	confs := map[*deviceDaemon][]byte{}
	for _, d := range []*deviceDaemon{a, b} {
		d.stop(t)
		conf := filepath.Join(d.home, ".config", "cspool")
		for _, name := range []string{"spool-old.pub", "spool.pub"} {
			k, err := os.ReadFile(filepath.Join(s.dir, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(conf, name), k, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		c, err := os.ReadFile(filepath.Join(conf, "alice.conf"))
		if err != nil {
			t.Fatal(err)
		}
		confs[d] = c
		c = fmt.Appendf(slices.Clone(c), "previous-spool-key = %s\n", filepath.Join(conf, "spool-old.pub"))
		if err := os.WriteFile(filepath.Join(conf, "alice.conf"), c, 0o600); err != nil {
			t.Fatal(err)
		}
		s.start(t, d)
	}
	m = append(m, s.deliver(t, 2)...) // m[2], m[3]: signed by the new key
	s.synced(t, a)
	s.imap(t, a, []string{"flag", "INBOX", m[2], `\Flagged`}, []string{"create", "Projects"})
	s.synced(t, a)
	s.synced(t, b)
	// b, past the cutover, drops previous-spool-key, as the devices'
	// section allows.
	b.stop(t)
	if err := os.WriteFile(filepath.Join(b.home, ".config", "cspool", "alice.conf"), confs[b], 0o600); err != nil {
		t.Fatal(err)
	}
	s.start(t, b)
	s.synced(t, b)

	// The restore, its start with the old key's public file as
	// previous-spool-key (s.serverArgs), as the recipe says.
	s.restoreSpool(t, backup)
	n := s.deliver(t, 1) // at a position a applied before the restore
	a.awaitRollbackAlarm(t)
	s.recoverSaying(t, a, "restored head: position 2 ", "message bytes put back: 2 messages", "synced to position")
	last := s.deliver(t, 1)
	s.synced(t, a)
	s.synced(t, b) // took a's restoration by itself, with the new key alone

	c := s.newDevice(t, "c") // the new spool.pub alone
	runCmd(t, c.home, s.deviceEnv(c), "", bin, "sync", "--config", filepath.Join(c.home, ".config", "cspool", "alice.conf"))
	a.stop(t)
	b.stop(t)
	want := s.dumpOf(t, a.db)
	for _, d := range []*deviceDaemon{b, c} {
		if diff := mailstore.Diff(want, s.dumpOf(t, d.db), 5); diff != nil {
			t.Errorf("%s differs from a: %v", d.name, diff)
		}
	}
	expect := map[string]string{
		m[0]: "INBOX", m[1]: "INBOX", m[2]: `INBOX \Flagged`, m[3]: "INBOX", n[0]: "INBOX", last[0]: "INBOX",
	}
	s.checkPlaced(t, want, expect, "", "after the restore")
}
