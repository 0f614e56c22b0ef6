package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
)

// pgRestoreDB is a role and a database it owns, of one test, in place of
// docs/POSTGRES.md's cspool and cspool, with the replacements that make
// docs/OPERATING.md's PostgreSQL recipes use them.
type pgRestoreDB struct {
	name, dsn string
	replace   []string
}

func newPGRestoreDB(t *testing.T) *pgRestoreDB {
	t.Helper()
	base, err := url.Parse(pgtest.BaseDSN())
	if err != nil {
		t.Fatal(err)
	}
	name := pgScratchName(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, pgtest.BaseDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, q := range []string{"CREATE ROLE " + name + " LOGIN", "CREATE DATABASE " + name + " OWNER " + name} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	host, port := base.Hostname(), base.Port()
	if port == "" {
		port = "5432"
	}
	su := base.User.Username()
	return &pgRestoreDB{
		name: name,
		dsn:  fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable", name, net.JoinHostPort(host, port), name),
		replace: []string{
			"-h 127.0.0.1 -U cspool ", fmt.Sprintf("-h %s -p %s -U %s ", host, port, name),
			"-h 127.0.0.1 -U postgres --owner cspool cspool", fmt.Sprintf("-h %s -p %s -U %s --owner %s %s", host, port, su, name, name),
			"-h 127.0.0.1 -U postgres cspool", fmt.Sprintf("-h %s -p %s -U %s %s", host, port, su, name),
			"--dbname=cspool ", "--dbname=" + name + " ",
			`.pgdump" cspool`, `.pgdump" ` + name,
		},
	}
}

// conn connects to the database as its role; the caller closes it (the
// recipe's dropdb refuses while a connection is open).
func (db *pgRestoreDB) conn(t *testing.T) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// toolsDir is the bin directory of the machine's PostgreSQL of the
// server's major version (Debian's /usr/lib/postgresql/N/bin), or "".
func (db *pgRestoreDB) toolsDir(t *testing.T) string {
	t.Helper()
	c := db.conn(t)
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var num int
	if err := c.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&num); err != nil {
		t.Fatal(err)
	}
	dir := fmt.Sprintf("/usr/lib/postgresql/%d/bin", num/10000)
	if _, err := os.Stat(filepath.Join(dir, "pg_dump")); err != nil {
		return ""
	}
	return dir
}

// lookPathIn finds name in the PATH of env.
func lookPathIn(name string, env []string) (string, error) {
	for _, e := range env {
		if path, ok := strings.CutPrefix(e, "PATH="); ok {
			for _, dir := range filepath.SplitList(path) {
				p := filepath.Join(dir, name)
				if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
					return p, nil
				}
			}
		}
	}
	return "", fmt.Errorf("%s not in the PATH", name)
}

// catalog describes what cspool needs of the database: the schema
// version, the functions (with their settings and owners), the triggers,
// the storage of the entries' bytes, the tables' owners and options, the
// log ids' sequence, and the rows of the spool key, the logs (their
// usage), the entries (how many, the last position, the hashes), the
// appends made once, the users and the keys' users.
func (db *pgRestoreDB) catalog(t *testing.T) []string {
	t.Helper()
	c := db.conn(t)
	defer c.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []string
	for _, q := range []string{
		"SELECT 'version ' || version FROM cspool_schema",
		`SELECT 'function ' || p.oid::regprocedure || ' ' || coalesce(array_to_string(p.proconfig, ','), '') || ' ' ||
			p.prosecdef || ' ' || pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.proname LIKE 'cspool%' ORDER BY 1`,
		`SELECT 'trigger ' || tgrelid::regclass || ' ' || pg_get_triggerdef(oid) || ' ' || tgenabled::text
			FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1`,
		`SELECT 'storage ' || attrelid::regclass || '.' || attname || ' ' || attstorage::text FROM pg_attribute
			WHERE attname = 'data' AND attrelid::regclass::text LIKE 'cspool%' ORDER BY 1`,
		"SELECT 'table ' || relname || ' ' || pg_get_userbyid(relowner) || ' ' || coalesce(array_to_string(reloptions, ','), '') FROM pg_class WHERE relname LIKE 'cspool%' ORDER BY 1",
		"SELECT 'sequence ' || coalesce(pg_sequence_last_value('cspool_logs_id_seq'), 0)",
		"SELECT 'spool key ' || encode(key, 'hex') FROM cspool_spool_key",
		"SELECT 'log ' || id || ' ' || encode(name, 'escape') || ' ' || bytes FROM cspool_logs ORDER BY 1",
		"SELECT 'entries ' || count(*) || ' ' || coalesce(max(pos), 0) || ' ' || count(hash) FROM cspool_entries",
		"SELECT 'once ' || encode(id, 'hex') || ' ' || pos || ' ' || n FROM cspool_once ORDER BY 1",
		"SELECT 'user ' || name || ' ' || public_key FROM cspool_users ORDER BY 1",
		"SELECT 'key of ' || name || ' ' || public_key FROM cspool_user_keys ORDER BY 1",
	} {
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out = append(out, lines...)
	}
	return out
}

// TestRecoverAfterPostgresRestore follows docs/OPERATING.md ("Backups",
// "Restoring a backup") as written for the PostgreSQL store, with a role
// and database of the test's own in place of cspool: a server on the
// database with --users-table and a device; mail delivered and changed,
// the database backed up with the documented pg_dump, more mail delivered
// and changed, the backup restored with the documented dropdb, createdb
// and pg_restore between the server's stop and start, mail delivered
// again, and the documented recovery run on the device. The restored
// database has what the server had made (schema version, functions,
// triggers, the log ids' sequence, the spool key), the users and their
// keys' record as they were at the restore (dave's key replaced and erin
// added after the backup, by the recipe's pg_dump and psql lines), the
// trigger still refuses a key given to another user, and the device, and
// a new one, end with every message acknowledged.
func TestRecoverAfterPostgresRestore(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	db := newPGRestoreDB(t)
	bin := buildServerBinary(t)
	s := newRestoreSetup(t, bin, python, "--store", "postgres", "--dsn", db.dsn, "--users-table")
	// The recipes' tools of the server's major version, as the doc says,
	// where the machine has them; else those on PATH.
	if dir := db.toolsDir(t); dir != "" {
		for i, e := range s.env {
			if strings.HasPrefix(e, "PATH=") {
				s.env[i] = "PATH=" + dir + string(os.PathListSeparator) + strings.TrimPrefix(e, "PATH=")
			}
		}
	}
	for _, tool := range []string{"pg_dump", "pg_restore", "dropdb", "createdb", "psql"} {
		if _, err := lookPathIn(tool, s.env); err != nil {
			needTool(t, tool, "postgresql-client")
		}
	}
	pub, err := os.ReadFile(filepath.Join(s.dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	var aliceKey string
	for _, l := range strings.Split(string(pub), "\n") {
		if strings.HasPrefix(l, "cspool-pub-1:") {
			aliceKey = l
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := db.conn(t)
	_, err = conn.Exec(ctx, "INSERT INTO cspool_users VALUES ('alice', $1)", aliceKey)
	if err == nil {
		// dave's key is replaced after the backup (it leaked), and erin
		// added: the restore keeps both changes.
		_, err = conn.Exec(ctx, "INSERT INTO cspool_users VALUES ('dave', $1)", mustKey(t).Public().String())
	}
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	a := s.newDevice(t, "a")
	s.start(t, a)
	m := s.deliver(t, 3)
	s.synced(t, a)
	s.imap(t, a, []string{"flag", "INBOX", m[0], `\Flagged`})
	s.synced(t, a)

	before := db.catalog(t)
	runRecipe(t, backupSteps(t)[1], s.dir, s.env, append(db.replace, "/backup/cspool", s.backups),
		func(l string) { t.Fatalf("unexpected %q in the backup recipe", l) })
	names, err := filepath.Glob(filepath.Join(s.backups, "spool-*.pgdump"))
	if err != nil || len(names) != 1 {
		t.Fatalf("the backup recipe made %v (%v), want one spool-DATE.pgdump", names, err)
	}

	m = append(m, s.deliver(t, 2)...) // m[3], m[4]
	s.synced(t, a)
	s.imap(t, a, []string{"expunge", "INBOX", m[1]}, []string{"move", "INBOX", m[2], "Archive"}, []string{"create", "Projects"})
	s.synced(t, a)
	conn = db.conn(t)
	_, err = conn.Exec(ctx, "UPDATE cspool_users SET public_key = $1 WHERE name = 'dave'", mustKey(t).Public().String())
	if err == nil {
		_, err = conn.Exec(ctx, "INSERT INTO cspool_users VALUES ('erin', $1)", mustKey(t).Public().String())
	}
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	live := db.catalog(t)

	runRecipe(t, restoreSteps(t)[1], s.dir, s.env,
		append(db.replace, "/backup/cspool", s.backups, "spool-2026-03-01.pgdump", filepath.Base(names[0])), func(l string) {
			switch l {
			case "systemctl stop cspool-server":
				s.server.stop(t, syscall.SIGTERM, 45*time.Second)
			case "systemctl start cspool-server":
				s.startServer(t)
			default:
				t.Fatalf("unexpected %q in the operator's recipe", l)
			}
		})
	// The users and their keys' record as they were at the restore, the
	// rest as at the backup.
	users := func(l string) bool { return strings.HasPrefix(l, "user ") || strings.HasPrefix(l, "key of ") }
	after := db.catalog(t)
	if want, got := slices.DeleteFunc(slices.Clone(before), users), slices.DeleteFunc(slices.Clone(after), users); !slices.Equal(want, got) {
		t.Errorf("the restored database differs from the backed up one:\nbefore:\n%s\nafter:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	if want, got := slices.DeleteFunc(slices.Clone(live), func(l string) bool { return !users(l) }),
		slices.DeleteFunc(slices.Clone(after), func(l string) bool { return !users(l) }); !slices.Equal(want, got) {
		t.Errorf("the restored database's users are not those in force at the restore:\nat the restore:\n%s\nafter:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
	if !slices.ContainsFunc(before, func(l string) bool { return l == fmt.Sprintf("version %d", pgstore.LatestVersion()) }) {
		t.Errorf("the database's catalog names no schema version %d:\n%s", pgstore.LatestVersion(), strings.Join(before, "\n"))
	}
	keyMovedRefused(t, db, aliceKey)

	n := s.deliver(t, 2) // at positions the device applied before the restore
	a.awaitRollbackAlarm(t)
	s.recoverSaying(t, a, "restored head: position 4 ", "message bytes put back: 2 messages", "synced to position")
	last := s.deliver(t, 1)
	s.synced(t, a)

	c := s.newDevice(t, "c")
	runCmd(t, c.home, s.deviceEnv(c), "", bin, "sync", "--config", filepath.Join(c.home, ".config", "cspool", "alice.conf"))
	a.stop(t)
	want := s.dumpOf(t, a.db)
	if diff := mailstore.Diff(want, s.dumpOf(t, c.db), 5); diff != nil {
		t.Errorf("a new device differs from a: %v", diff)
	}
	expect := map[string]string{
		m[0]: `INBOX \Flagged`, m[2]: "Archive", m[3]: "INBOX", m[4]: "INBOX",
		n[0]: "INBOX", n[1]: "INBOX", last[0]: "INBOX",
	}
	s.checkPlaced(t, want, expect, m[1], "after the backup")
}

// keyMovedRefused checks, in a transaction rolled back, that the restored
// database refuses alice's key given to bob while alice is listed with
// another (docs/POSTGRES.md, "A key stays with its user").
func keyMovedRefused(t *testing.T, db *pgRestoreDB, aliceKey string) {
	t.Helper()
	other, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := db.conn(t)
	defer c.Close(context.Background())
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "UPDATE cspool_users SET public_key = $1 WHERE name = 'alice'", other.Public().String()); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "INSERT INTO cspool_users VALUES ('bob', $1)", aliceKey)
	if err == nil || !strings.Contains(err.Error(), "is still listed") {
		t.Errorf("bob given alice's key in the restored database: %v, want the refusal of a key moved", err)
	}
}

// TestPostgresMissingTriggerHint starts the server on a database whose
// schema lacks one of its triggers (restored in part): it exits 1, naming
// the trigger, with a hint that points at the restore. It ran without it.
func TestPostgresMissingTriggerHint(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dsn := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Exec(ctx, "DROP TRIGGER cspool_entries_keep_chain ON cspool_entries")
	c.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	runCmd(t, dir, nil, "", bin, "gen-keys", "spool.sec", "spool.pub")
	code, out, errOut := runExit(t, dir, nil, bin, "server", "--port", fmt.Sprint(freePort(t)), "--store", "postgres", "--dsn", dsn, "--users-table",
		"--spool-key", "spool.sec")
	if code != 1 || !strings.Contains(errOut, "cspool_entries.cspool_entries_keep_chain") || !strings.Contains(errOut, `"Restoring a backup"`) {
		t.Fatalf("server on a schema without a trigger: exit %d, stdout %q, stderr %q; want 1, naming the trigger, with the restore's hint", code, out, errOut)
	}
}
