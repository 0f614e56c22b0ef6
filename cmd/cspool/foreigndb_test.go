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
