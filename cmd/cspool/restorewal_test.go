package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// restoreWalCommands are the commands docs/OPERATING.md, "Restoring a
// backup", gives for a backup of three files: the cat that puts its
// spool.db-wal in place, and the chown and chmod that give it the
// database's owner and mode (line breaks in them undone).
func restoreWalCommands(t *testing.T) (cat, owner string) {
	t.Helper()
	for _, c := range inlineCode(strings.ReplaceAll(operatingSection(t, "### Restoring a backup"), "```", "")) {
		switch {
		case strings.HasPrefix(c, "cat ") && strings.HasSuffix(c, "> spool.db-wal"):
			cat = c
		case strings.HasPrefix(c, "chown ") && strings.Contains(c, "spool.db-wal"):
			owner = c
		}
	}
	if cat == "" || owner == "" {
		t.Fatalf("docs/OPERATING.md, Restoring a backup: the backup's spool.db-wal put in place %q, its owner given %q; want both", cat, owner)
	}
	return cat, owner
}

// TestRestoreWalOwner restores, as root, a backup of three files (spool.db,
// spool.db-wal, spool.db-shm of a server that stopped without its
// checkpoint) into the spool of a server that runs as its own user
// (nobody here, the unit's dynamic user in docs/systemd), following
// docs/OPERATING.md, "Restoring a backup": the SQLite block as printed,
// with the backup's spool.db-wal put in place instead of the live one
// removed, as its text says. With the cat alone the WAL is root's: the
// server exits 1 and cspool deliver 73, each naming that file, its owner
// and the chown that fixes it (the hint said to check that --spool-dir is
// writable, which it is). With the doc's chown and chmod the server
// starts, and the log holds what the backup's WAL alone held.
func TestRestoreWalOwner(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	if os.Geteuid() != 0 {
		t.Skip("runs the server as nobody and the restore as root")
	}
	setpriv := needTool(t, "setpriv", "util-linux")
	built := buildServerBinary(t)
	catWal, ownerWal := restoreWalCommands(t)
	work := postfixWorkDir(t)
	bin := filepath.Join(work, "cspool")
	copyFile(t, built, bin, 0o755)
	spoolDir, backups := filepath.Join(work, "spool"), filepath.Join(work, "backup")
	for _, d := range []string{spoolDir, backups} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	alice, spoolK := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(spoolK, filepath.Join(work, "spool.sec"), filepath.Join(work, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(work, "users")
	writeUsersFile(t, users, map[string]*keys.SecretKey{"alice": alice})
	for _, f := range []string{spoolDir, filepath.Join(work, "spool.sec")} {
		if err := os.Chown(f, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(users, 0o644); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) *exec.Cmd {
		return exec.Command(setpriv, append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups", bin}, args...)...)
	}
	lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	type server struct {
		cmd    *exec.Cmd
		stderr *lockedBuffer
		done   chan error
	}
	// start runs the server as nobody; ok: it must serve, else exit.
	start := func(ok bool) *server {
		t.Helper()
		port := freePort(t)
		s := &server{stderr: &lockedBuffer{}, done: make(chan error, 1)}
		s.cmd = asNobody("server", "--port", fmt.Sprint(port), "--spool-dir", spoolDir, "--users", users,
			"--spool-key", filepath.Join(work, "spool.sec"), "--lmtp", lmtp)
		s.cmd.Stderr = s.stderr
		if err := s.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { s.done <- s.cmd.Wait() }()
		t.Cleanup(func() {
			if s.cmd.ProcessState == nil {
				s.cmd.Process.Kill()
				<-s.done
			}
		})
		exited, err := awaitHealth(t, fmt.Sprintf("http://127.0.0.1:%d", port), s.done)
		if exited == ok {
			t.Fatalf("server as nobody: exited %v (%v), want it to serve: %v\n%s", exited, err, ok, s.stderr)
		}
		return s
	}
	stop := func(s *server) {
		t.Helper()
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-s.done:
			if err != nil {
				t.Fatalf("server exit after SIGTERM: %v\n%s", err, s.stderr)
			}
		case <-time.After(40 * time.Second):
			t.Fatal("server did not exit within 40 s of SIGTERM")
		}
	}
	send := func(tok string) {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		if ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: w\r\n\r\ntoken="+tok+"\r\n"); len(ok) != 1 {
			t.Fatalf("LMTP %s: %d %v, want 250", tok, code, err)
		}
	}
	wal := filepath.Join(spoolDir, "spool.db-wal")

	// Two deliveries, then the server ends without its checkpoint: they
	// are in its WAL, and the three files are the backup.
	s := start(true)
	send("backup-1")
	send("backup-2")
	s.cmd.Process.Kill()
	<-s.done
	for _, f := range []string{"spool.db", "spool.db-wal", "spool.db-shm"} {
		copyFile(t, filepath.Join(spoolDir, f), filepath.Join(backups, f), 0o600)
	}
	s = start(true)
	send("after-backup")
	stop(s)
	if _, err := os.Stat(wal); !os.IsNotExist(err) {
		t.Fatalf("a stopped server left %s (%v), want none, as the doc says", wal, err)
	}

	// The SQLite block, with the backup's WAL put in place of the live
	// one's removal, as the text says: first the cat alone.
	block := restoreSteps(t)[0]
	local := strings.NewReplacer("/backup/cspool", backups)
	restore := func(extra string) {
		t.Helper()
		runRecipe(t, block, work, os.Environ(), []string{
			"rm -f spool.db-wal spool.db-shm", "rm -f spool.db-shm",
			"/backup/cspool/spool-2026-03-01.db > spool.db", filepath.Join(backups, "spool.db") + " > spool.db\n" + local.Replace(catWal) + extra,
			"/var/lib/cspool", spoolDir,
		}, func(l string) {
			switch l {
			case "systemctl stop cspool-server":
			case "systemctl start cspool-server":
			default:
				t.Fatalf("unexpected %q in the operator's recipe", l)
			}
		})
	}
	restore("")
	if fi, err := os.Stat(wal); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("the restored %s: %v, want root's", wal, err)
	}
	s = start(false)
	for _, want := range []string{"attempt to write a readonly database", wal, "owned by uid 0", "chown --reference="} {
		if !strings.Contains(s.stderr.String(), want) {
			t.Errorf("the server on a WAL of root's does not say %q:\n%s", want, s.stderr)
		}
	}
	d := asNobody("deliver", "--users", users, "--user", "alice", "--spool-key", filepath.Join(work, "spool.sec"),
		"--spool-dir", spoolDir, "--quiet")
	d.Stdin = strings.NewReader("Subject: d\r\n\r\nhi\r\n")
	out, err := d.CombinedOutput()
	if code := exitCode(t, err); code != exCantCreat || !strings.Contains(string(out), wal) || !strings.Contains(string(out), "chown --reference=") {
		t.Errorf("cspool deliver on a WAL of root's: exit %d, want %d and the file named with its chown:\n%s", code, exCantCreat, out)
	}

	// Again with the doc's chown and chmod.
	restore("\n" + ownerWal)
	if fi, err := os.Stat(wal); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the restored %s after the doc's chown and chmod: %v, want nobody's, mode 0600", wal, err)
	}
	s = start(true)
	stop(s)
	st, err := openSpoolDir(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if head, err := st.Head(ctx, "alice"); err != nil || head != 2 {
		t.Errorf("alice's head after the restore: %d (%v), want 2, the deliveries only the backup's WAL held", head, err)
	}
}
