package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDBFolderOfOthers: imap-server, sync and reindex took a --db
// in a folder another user owns or others may write to (a sticky /tmp
// included), where another local user could make the lock, the
// database's -wal and -shm, DB.password or the control socket's folder
// first. Now each refuses such a folder with its name and a hint, before
// making anything in it; a folder of the user's own not open to others'
// writes is taken (every other test's t.TempDir, mode 0700).
func TestDBFolderOfOthers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	keysDir := t.TempDir()
	runCmd(t, keysDir, nil, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, keysDir, nil, "", bin, "gen-keys", "spool.sec", "spool.pub")
	userKey, spoolPub := filepath.Join(keysDir, "user.sec"), filepath.Join(keysDir, "spool.pub")
	// No spool answers there: the folder is refused before any read.
	const spool = "http://127.0.0.1:1"
	commands := map[string]func(db string) []string{
		"imap-server": func(db string) []string {
			return []string{"imap-server", "--db", db, "--user", "alice", "--user-key", userKey, "--spool-key", spoolPub,
				"--spool-server", spool, "--port", "0", "--status-addr", "", "--password", "pw"}
		},
		"sync": func(db string) []string {
			return []string{"sync", "--once", "--db", db, "--user", "alice", "--user-key", userKey, "--spool-key", spoolPub, "--spool-server", spool}
		},
		"reindex": func(db string) []string { return []string{"reindex", "--db", db, "--user-key", userKey} },
	}
	cases := []struct {
		name, want string
		setup      func(dir string) error
		needRoot   bool
	}{
		{"mode 0777", "may be written to by other users (mode 0777)", func(d string) error { return os.Chmod(d, 0o777) }, false},
		{"sticky mode 1777", "may be written to by other users (mode 0777)", func(d string) error { return os.Chmod(d, 0o777|os.ModeSticky) }, false},
		{"mode 0770", "may be written to by other users (mode 0770)", func(d string) error { return os.Chmod(d, 0o770) }, false},
		{"owned by nobody", "is owned by", func(d string) error { return os.Chown(d, 65534, 65534) }, true},
	}
	for _, c := range cases {
		if c.needRoot && os.Geteuid() != 0 {
			t.Logf("%s: needs root to give a folder to another user; skipped", c.name)
			continue
		}
		for name, args := range commands {
			dir := filepath.Join(t.TempDir(), "device")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			db := filepath.Join(dir, "mail.db")
			made := 0
			if name == "reindex" { // works on a database that is there
				if err := os.WriteFile(db, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				made = 1
			}
			if err := c.setup(dir); err != nil {
				t.Fatal(err)
			}
			code, _, errOut := runExit(t, keysDir, nil, bin, args(db)...)
			if code != 77 || !strings.Contains(errOut, "the folder of --db "+db) || !strings.Contains(errOut, c.want) ||
				!strings.Contains(errOut, "hint: keep --db in a folder of your own") {
				t.Errorf("%s, folder %s: exit %d, stderr %q; want 77, the folder named, %q and a hint", name, c.name, code, errOut, c.want)
			}
			if names, _ := os.ReadDir(dir); len(names) != made {
				t.Errorf("%s, folder %s: the refused command made %d files there", name, c.name, len(names)-made)
			}
		}
	}
}
