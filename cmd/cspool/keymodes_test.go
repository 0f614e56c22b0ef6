package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretKeyModes pins what a secret key file open to its group or to
// others gets, with the binary: the user's key of a device (cspool sync,
// against a real server) and the spool's key of cspool server, each at
// 0640, 0604 and 0644. Both are refused (exit 77, EX_NOPERM), as ssh refuses a
// private key with any such bit: the error names the file and its mode,
// the hint the chmod; nothing is made (no database), and once the file is
// chmod 600 the same command runs.
func TestSecretKeyModes(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", filepath.Join(dir, "spool.sec"))
	sync := []string{"sync", "--once", "--user", "alice", "--user-key", "user.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--db", "mail.db", "--spool-server", srv.url}
	server := []string{"server", "--port", fmt.Sprint(freePort(t)), "--users", usersPath, "--spool-dir", "spool", "--spool-key", "spool.sec"}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		for _, c := range []struct {
			file string
			args []string
		}{{"user.sec", sync}, {"spool.sec", server}} {
			if err := os.Chmod(filepath.Join(dir, c.file), mode); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runExit(t, dir, nil, bin, c.args...)
			want := fmt.Sprintf("key file %s: secret key file is readable by its group or others: permissions %04o", c.file, mode)
			if code != 77 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "hint: run: chmod 600 "+c.file) {
				t.Errorf("%s with %s at %04o: exit %d, stdout %q, stderr %q; want 77, %q and the chmod", c.args[0], c.file, mode, code, out, errOut, want)
			}
			if err := os.Chmod(filepath.Join(dir, c.file), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "mail.db")); !os.IsNotExist(err) {
			t.Fatalf("a sync refused for its key's mode made its database (stat: %v)", err)
		}
	}
	if code, out, errOut := runExit(t, dir, nil, bin, sync...); code != 0 {
		t.Fatalf("sync with user.sec at 0600: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
