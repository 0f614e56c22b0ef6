package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeyOwnedByAnother runs `cspool sync` as nobody with a secret key
// that root copied into place (owned by root, mode 0600: right for its
// mode, wrong for its owner). The error said `permission denied` with the
// hint for a key never copied ("copy user.sec and user.pub from another
// of the user's devices ... only a new user makes one"); now the hint
// names the owner, the mode and the user the command runs as, and the
// chown to run. Once the key is given to that user, the same command
// syncs.
func TestKeyOwnedByAnother(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, to run a program as another user")
		}
		t.Skip("needs root, to run a program as another user")
	}
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", filepath.Join(dir, "spool.sec"))
	msg := []byte("From: carol@example.org\r\nSubject: kept\r\n\r\nhello\r\n")
	if code, out, errOut := runExitStdin(t, dir, nil, msg, bin, "deliver", "--users", usersPath, "--spool-key", "spool.sec",
		"--spool-server", srv.url, "--user", "alice"); code != 0 {
		t.Fatalf("deliver: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	// The device's folder, nobody's own (a folder others may write to is
	// refused, checkDBFolder), with the binary and root's copy of the keys.
	home, err := os.MkdirTemp("", "cspool-keyowner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := os.Chown(home, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"user.sec": 0o600, "user.pub": 0o644, "spool.pub": 0o644} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "cspool"), exe, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func() (int, string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(home, "cspool"), "sync", "--once", "--user", "alice", "--user-key", "user.sec",
			"--user-public-key", "user.pub", "--spool-key", "spool.pub", "--db", "mail.db", "--spool-server", srv.url)
		cmd.Dir, cmd.Env = home, []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return exitCode(t, err), stdout.String(), stderr.String()
	}

	code, out, errOut := asNobody()
	who := userName(65534)
	want := "--user-key: user.sec belongs to root and is mode 0600, and this command runs as " + who + ", who may not read it"
	wantCmd := "chown " + chownName(65534) + " user.sec && chmod 600 user.sec"
	if code != 77 || !strings.Contains(errOut, "key file user.sec: permission denied") || !strings.Contains(errOut, want) || !strings.Contains(errOut, wantCmd) {
		t.Fatalf("sync as %s with root's key: exit %d, stdout %q, stderr %q; want 77, %q and %q", who, code, out, errOut, want, wantCmd)
	}
	if strings.Contains(errOut, "gen-keys") || strings.Contains(errOut, "another of the user's devices") {
		t.Fatalf("the hint for an unreadable key sends the user after another key: %q", errOut)
	}

	// As the hint says.
	if err := os.Chown(filepath.Join(home, "user.sec"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := asNobody(); code != 0 || !strings.Contains(out, "synced to position 1") {
		t.Fatalf("sync as %s once the key is theirs: exit %d, stdout %q, stderr %q; want a sync to position 1", who, code, out, errOut)
	}
}
