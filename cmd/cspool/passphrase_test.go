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
)

// cspoolNoTTY runs bin to completion in its own session, without a
// controlling terminal (so a passphrase can never be asked there), and
// returns its exit status and combined output.
func cspoolNoTTY(t *testing.T, dir string, env []string, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	return exitCode(t, err), string(out)
}

// TestPassphrasePaths protects a user key with a passphrase and loads it
// the ways the issue lists, with cspool sync against a real spool server:
// from a file, from the systemd credentials directory, wrong, missing with
// no terminal, changed, removed, and typed on a terminal (tmux).
func TestPassphrasePaths(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice", "CREDENTIALS_DIRECTORY=")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pp1 := write("pp1", "first passphrase\n")
	pp2 := write("pp2", "second passphrase\n")
	wrong := write("wrong", "first passphrase!\n")

	out := runCmd(t, dir, env, "", bin, "gen-keys", "--passphrase", "--new-passphrase-file", pp1, "--work-factor", "10", "user.sec", "user.pub")
	if strings.Contains(out, "has no passphrase") {
		t.Errorf("gen-keys --passphrase says the key has none:\n%s", out)
	}
	sec, _ := os.ReadFile(filepath.Join(dir, "user.sec"))
	if strings.Contains(string(sec), "CSPOOL-SECRET-KEY-1:") || !strings.Contains(string(sec), "BEGIN AGE ENCRYPTED FILE") {
		t.Fatalf("user.sec is not protected:\n%s", sec)
	}
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port))
	waitHealthy(t, url, server)

	sync := func(env []string, extra ...string) (int, string) {
		args := append([]string{"sync", "--once", "--user", "alice", "--db", "alice.db", "--spool-server", url}, extra...)
		return cspoolNoTTY(t, dir, env, bin, args...)
	}
	ok := func(name string, code int, out string) {
		t.Helper()
		if code != 0 || !strings.Contains(out, "synced to position") {
			t.Fatalf("%s: exit %d, want 0 and a sync; output:\n%s", name, code, out)
		}
	}
	refused := func(name string, code int, out string, want ...string) {
		t.Helper()
		if code != 77 {
			t.Errorf("%s: exit %d, want 77; output:\n%s", name, code, out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", name, w, out)
			}
		}
		if strings.Contains(out, "first passphrase") || strings.Contains(out, "second passphrase") {
			t.Errorf("%s: the output shows a passphrase:\n%s", name, out)
		}
	}

	code, out := sync(env, "--passphrase-file", pp1)
	ok("passphrase file", code, out)
	if strings.Contains(out, "notice") {
		t.Errorf("a protected key got the notice:\n%s", out)
	}

	creds := filepath.Join(dir, "creds")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(creds, "cspool-passphrase"), []byte("first passphrase"), 0o400); err != nil {
		t.Fatal(err)
	}
	code, out = sync(append(env, "CREDENTIALS_DIRECTORY="+creds))
	ok("systemd credential", code, out)

	code, out = sync(env, "--passphrase-file", wrong)
	refused("wrong passphrase", code, out, "user.sec", "wrong passphrase", "cspool: hint: the passphrase does not open")

	code, out = sync(env)
	refused("no passphrase, no terminal", code, out, "user.sec", "protected by a passphrase", "--passphrase-file FILE", "LoadCredentialEncrypted=cspool-passphrase")

	code, out = cspoolNoTTY(t, dir, env, bin, "passphrase", "--passphrase-file", pp1, "--new-passphrase-file", pp2, "--work-factor", "10", "user.sec")
	if code != 0 || !strings.Contains(out, "changed the passphrase of user.sec") {
		t.Fatalf("cspool passphrase (change): exit %d\n%s", code, out)
	}
	code, out = sync(env, "--passphrase-file", pp1)
	refused("old passphrase after the change", code, out, "wrong passphrase")
	code, out = sync(env, "--passphrase-file", pp2)
	ok("new passphrase", code, out)

	code, out = cspoolNoTTY(t, dir, env, bin, "passphrase", "--remove", "--passphrase-file", pp2, "user.sec")
	if code != 0 || !strings.Contains(out, "removed the passphrase") {
		t.Fatalf("cspool passphrase --remove: exit %d\n%s", code, out)
	}
	code, out = sync(env)
	ok("key without a passphrase", code, out)
	if !strings.Contains(out, "cspool: notice: user.sec has no passphrase") || !strings.Contains(out, "cspool passphrase user.sec") {
		t.Errorf("an unprotected key got no notice saying how to protect it:\n%s", out)
	}

	t.Run("secret service", func(t *testing.T) { testPassphraseKeyring(t, bin, dir, url, pp1) })
	t.Run("terminal", func(t *testing.T) { testPassphraseTerminal(t, bin, dir, url) })
}

// testPassphraseKeyring runs a real Secret Service (GNOME Keyring in a
// D-Bus session of its own): cspool passphrase --keyring protects the key
// and stores the passphrase there, and cspool sync, with no passphrase
// file and no terminal, finds it; outside the session it cannot.
func testPassphraseKeyring(t *testing.T, bin, dir, url, pp string) {
	session := needTool(t, "dbus-run-session", "dbus-daemon")
	needTool(t, "gnome-keyring-daemon", "gnome-keyring")
	home := t.TempDir()
	sync := fmt.Sprintf("setsid -w %s sync --once --user alice --db alice.db --spool-server %s", bin, url)
	script := fmt.Sprintf(`printf unlock | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 9
%s passphrase --keyring --new-passphrase-file %s --work-factor 10 user.sec || exit 8
%s; echo "sync-exit=$?"`, bin, pp, sync)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, session, "--", "sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home, "CREDENTIALS_DIRECTORY=", "XDG_RUNTIME_DIR="+home)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the D-Bus session: %v\n%s", err, out)
	}
	for _, want := range []string{"added a passphrase to user.sec", "stored it in the Secret Service", "synced to position", "sync-exit=0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the session's output lacks %q:\n%s", want, out)
		}
	}
	// Outside the session nothing holds the passphrase.
	code, rest := cspoolNoTTY(t, dir, append(os.Environ(), "CREDENTIALS_DIRECTORY=", "DBUS_SESSION_BUS_ADDRESS="), bin,
		"sync", "--once", "--user", "alice", "--db", "alice.db", "--spool-server", url)
	if code != 77 || !strings.Contains(rest, "protected by a passphrase") {
		t.Errorf("sync outside the session: exit %d, want 77 and no passphrase found:\n%s", code, rest)
	}
	code, rest = cspoolNoTTY(t, dir, append(os.Environ(), "CREDENTIALS_DIRECTORY="), bin, "passphrase", "--remove", "--passphrase-file", pp, "user.sec")
	if code != 0 {
		t.Fatalf("cspool passphrase --remove: exit %d\n%s", code, rest)
	}
}

// testPassphraseTerminal types passphrases into cspool on a terminal:
// tmux runs cspool passphrase (asked twice), then cspool sync (asked once),
// with the right passphrase and with a wrong one.
func testPassphraseTerminal(t *testing.T, bin, dir, url string) {
	tmux := needTool(t, "tmux", "tmux")
	session := fmt.Sprintf("cspool-passphrase-%d", os.Getpid())
	start := exec.Command(tmux, "new-session", "-d", "-s", session, "-x", "200", "-y", "50", "-c", dir, "sh")
	start.Env = append(os.Environ(), "TERM=xterm", "PS1=$ ")
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("starting tmux: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command(tmux, "kill-session", "-t", session).Run() })
	screen := func() string {
		out, _ := exec.Command(tmux, "capture-pane", "-p", "-S", "-100", "-t", session).Output()
		return string(out)
	}
	waitFor := func(what string, n int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if strings.Count(screen(), what) >= n {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("the terminal never showed %q %d times; the screen:\n%s", what, n, screen())
	}
	keys := func(k ...string) {
		t.Helper()
		if out, err := exec.Command(tmux, append([]string{"send-keys", "-t", session}, k...)...).CombinedOutput(); err != nil {
			t.Fatalf("tmux send-keys %q: %v %s", k, err, out)
		}
	}
	line := func(s string) { keys("-l", s); keys("Enter") }

	line(fmt.Sprintf("CREDENTIALS_DIRECTORY= USER=alice %s passphrase --work-factor 10 user.sec; echo done-$?", bin))
	waitFor("New passphrase for user.sec:", 1)
	line("typed on a terminal")
	waitFor("Repeat it:", 1)
	line("typed on a terminal")
	waitFor("done-0", 1)
	if !strings.Contains(screen(), "added a passphrase to user.sec") {
		t.Fatalf("cspool passphrase on the terminal:\n%s", screen())
	}
	syncCmd := fmt.Sprintf("CREDENTIALS_DIRECTORY= %s sync --once --user alice --db alice.db --spool-server %s; echo done-$?", bin, url)
	line(syncCmd)
	waitFor("Passphrase for user.sec:", 1)
	line("typed on a terminal")
	waitFor("done-0", 2)
	if !strings.Contains(screen(), "synced to position") {
		t.Fatalf("sync with the passphrase typed:\n%s", screen())
	}
	line(syncCmd)
	waitFor("Passphrase for user.sec:", 2)
	line("mistyped on a terminal")
	waitFor("done-77", 1)
	s := screen()
	if !strings.Contains(s, "wrong passphrase") || strings.Contains(s, "typed on a terminal") {
		t.Errorf("a wrong passphrase typed: want the error and no echo of either passphrase:\n%s", s)
	}
}
