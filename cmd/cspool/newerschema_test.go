package main

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/mailstore"
	"cspool/internal/spool/sqlitestore"
)

// A spool whose schema a newer cspool migrated is refused by this one, as
// it must be, with what to do: run the newer release (nothing is lost), or
// restore the copy made before the upgrade. The hint used to send the
// operator to the directory's permissions, and the quickstart's to remove
// the state folder, which would have thrown the mail away.
func TestNewerSchemaHint(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	spoolDir := newSpoolDir(t, dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(spoolDir, sqlitestore.DBName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	env := append(os.Environ(), "USER=alice")
	for _, args := range [][]string{
		{"server", "--port", "0", "--spool-dir", spoolDir, "--users", usersPath},
		{"deliver", "--spool-dir", spoolDir, "--users", usersPath, "--user", "alice", "--spool-key", "spool.sec"},
	} {
		code, _, stderr := runExit(t, dir, env, bin, args...)
		if code == 0 || !strings.Contains(stderr, "schema version 99") || !strings.Contains(stderr, "a newer release of cspool has migrated it") ||
			strings.Contains(stderr, "writ") {
			t.Errorf("cspool %s on a spool of schema 99: exit %d, want the newer schema's hint:\n%s", args[0], code, stderr)
		}
	}
}

// A device database a newer release migrated gets the same hint, and any
// other failure to open keeps its own.
func TestNewerSchemaHintDevice(t *testing.T) {
	err := fmt.Errorf("opening mail.db: %w", mailstore.ErrNewerSchema)
	if h := storeHint("mail.db", err); h != newerSchemaHint {
		t.Errorf("hint for a newer device database: %q", h)
	}
	if h := storeHint("mail.db", errors.New("unable to open database file")); h == newerSchemaHint {
		t.Errorf("hint for another failure: %q", h)
	}
}

// newSpoolDir makes dir/spool and a spool in it, at this release's schema,
// and returns its path.
func newSpoolDir(t *testing.T, dir string) string {
	t.Helper()
	spoolDir := filepath.Join(dir, "spool")
	if err := os.Mkdir(spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := sqlitestore.Open(spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	return spoolDir
}
