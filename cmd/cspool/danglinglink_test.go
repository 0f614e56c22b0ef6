package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDanglingKeyLink gives the binary a key file and a users file that
// are symbolic links to files that are gone (a volume not mounted, a key
// moved): `ls` shows the names, and the errors said "no such file or
// directory", with the hint for a key that was never copied. Now they say
// that the name is a link and which file it leads to; once that file is
// back, the same command syncs everything.
func TestDanglingKeyLink(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)

	if err := os.Symlink(filepath.Join("gone", "users"), filepath.Join(dir, "users-link")); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runExit(t, dir, nil, bin, "deliver", "--users", "users-link", "--spool-key", "spool.sec",
		"--spool-dir", "spool", "--user", "alice")
	wantUsers := "users file users-link: a symbolic link to " + filepath.Join("gone", "users") + ", which does not exist"
	if code == 0 || !strings.Contains(errOut, wantUsers) {
		t.Fatalf("deliver with a dangling users file link: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, wantUsers)
	}

	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", filepath.Join(dir, "spool.sec"))
	msg := []byte("From: carol@example.org\r\nSubject: kept\r\n\r\nhello\r\n")
	if code, out, errOut := runExitStdin(t, dir, nil, msg, bin, "deliver", "--users", usersPath, "--spool-key", "spool.sec",
		"--spool-server", srv.url, "--user", "alice"); code != 0 {
		t.Fatalf("deliver: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// A link into a folder of keys that is not there (a volume not mounted).
	if err := os.Symlink(filepath.Join("keys", "user.sec"), filepath.Join(dir, "link.sec")); err != nil {
		t.Fatal(err)
	}
	sync := []string{"sync", "--once", "--user", "alice", "--user-key", "link.sec", "--user-public-key", "user.pub",
		"--spool-key", "spool.pub", "--db", "mail.db", "--spool-server", srv.url}
	code, out, errOut = runExit(t, dir, nil, bin, sync...)
	wantKey := "key file link.sec: a symbolic link to " + filepath.Join("keys", "user.sec") + ", which does not exist"
	wantHint := "--user-key: link.sec is a symbolic link to " + filepath.Join("keys", "user.sec") + ", which is missing"
	if code != 77 || !strings.Contains(errOut, wantKey) || !strings.Contains(errOut, wantHint) {
		t.Fatalf("sync with a dangling key link: exit %d, stdout %q, stderr %q; want 77, %q and %q", code, out, errOut, wantKey, wantHint)
	}
	if strings.Contains(errOut, "no such file") {
		t.Fatalf("sync with a dangling key link still says there is no such file: %q", errOut)
	}

	// The key back where the link points: the same command syncs.
	if err := os.Mkdir(filepath.Join(dir, "keys"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "user.sec"), filepath.Join(dir, "keys", "user.sec")); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runExit(t, dir, nil, bin, sync...)
	if code != 0 || !strings.Contains(out, "synced to position 1") {
		t.Fatalf("sync once the link's target is back: exit %d, stdout %q, stderr %q; want a sync to position 1", code, out, errOut)
	}
}
