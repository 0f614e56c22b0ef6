package main

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/spool/sqlitestore"
)

// A --db mistyped onto another program's SQLite file (the spool server's
// own database, anyone's) is refused and left as it is. It used to be
// encrypted in place with the user's key first, since a plaintext
// database was taken for an earlier cspool's, and refused only after:
// the spool server then could not open its own database, and deliveries
// it acknowledged meanwhile were lost.
func TestForeignDatabaseLeftAlone(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, _, _ := aliceWithSpool(t)
	spoolDir := newSpoolDir(t, dir)
	notes := filepath.Join(dir, "notes.db")
	db, err := sql.Open("sqlite", "file:"+notes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE notes(x TEXT); INSERT INTO notes VALUES ('important')"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	spoolDB := filepath.Join(spoolDir, sqlitestore.DBName)
	env := append(os.Environ(), "USER=alice")
	for _, args := range [][]string{
		{"reindex", "--db", spoolDB, "--user-key", "user.sec"},
		{"sync", "--db", notes, "--user", "alice", "--user-key", "user.sec", "--spool-key", "spool.pub", "--spool-server", "http://127.0.0.1:9"},
		{"export", "--db", notes, "--user-key", "user.sec", filepath.Join(dir, "out")},
	} {
		code, _, stderr := runExit(t, dir, env, bin, args...)
		if code == 0 || !strings.Contains(stderr, "another program") || strings.Contains(stderr, "encrypting") {
			t.Errorf("cspool %s: exit %d, want a refusal naming another program's database and nothing encrypted:\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	st, err := sqlitestore.Open(spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("the spool's database after the mistakes: %v", err)
	}
	st.Close()
	db, err = sql.Open("sqlite", "file:"+notes)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var x string
	if err := db.QueryRow("SELECT x FROM notes").Scan(&x); err != nil || x != "important" {
		t.Errorf("notes.db after the mistakes: %q, %v", x, err)
	}
}

// A --db given the spool server's own spool.db is refused, and the
// refusal puts nothing beside it. It left spool.db-wal and spool.db-shm
// (a read-only SQLite connection to a database in WAL mode makes them and
// cannot remove them), spool.db.lock (taken before the store was opened)
// and, for the daemon, spool.db.password.
func TestForeignDatabaseLeavesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, _, _ := aliceWithSpool(t)
	spoolDir := newSpoolDir(t, dir)
	spoolDB := filepath.Join(spoolDir, sqlitestore.DBName)
	listing := func() []string {
		t.Helper()
		des, err := os.ReadDir(spoolDir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, de := range des {
			names = append(names, de.Name())
		}
		return names
	}
	before := listing()
	env := append(os.Environ(), "USER=alice")
	keyFlags := []string{"--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--spool-server", "http://127.0.0.1:9"}
	for _, args := range [][]string{
		append([]string{"sync", "--db", spoolDB}, keyFlags...),
		append([]string{"imap-server", "--db", spoolDB, "--port", "0", "--status-addr", ""}, keyFlags...),
	} {
		code, _, stderr := runExit(t, dir, env, bin, args...)
		if code == 0 || !strings.Contains(stderr, "another program") {
			t.Errorf("cspool %s: exit %d, want a refusal naming another program's database:\n%s", args[0], code, stderr)
		}
		if after := listing(); strings.Join(after, " ") != strings.Join(before, " ") {
			t.Errorf("cspool %s --db %s: the spool's directory held %q before, %q after; want nothing added", args[0], spoolDB, before, after)
		}
	}
	st, err := sqlitestore.Open(spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("the spool's database after the mistakes: %v", err)
	}
	st.Close()
}
