package devicedb

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOpenTightensModes: a database file made or restored by hand (touch,
// a plain cp of a backup) kept mode 0644, readable by every user of the
// machine, where one Open makes is 0600. Open now makes it 0600, and its
// WAL with it.
func TestOpenTightensModes(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "mail.db")
	db, err := Open(path, Options{Key: &key1, Params: "_pragma=journal_mode(WAL)"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE t(x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// An empty WAL, as a copy of a stopped database's files may bring.
	if f, err := os.OpenFile(path+"-wal", os.O_CREATE|os.O_WRONLY, 0o600); err != nil {
		t.Fatal(err)
	} else {
		f.Close()
	}
	for _, p := range []string{path, path + "-wal"} {
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	db, err = Open(path, Options{Key: &key1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, p := range []string{path, path + "-wal"} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s after Open: %v (%v), want 0600", filepath.Base(p), info.Mode().Perm(), err)
		}
	}
}
