package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/testproc"
)

// TestPasswordSources runs the daemon from the built binary with each way
// of giving it a password: --password on the command line (works, with a
// warning: other users can read it in /proc), --password-file and the
// environment (no warning, nothing in /proc/PID/cmdline), and a config file
// open to its owner only. A mail client (Python's imaplib) logs in with each.
func TestPasswordSources(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	runCmd(t, dir, env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	// No spool server: the daemon starts and serves IMAP from its database.
	spool := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	write := func(name, text string, mode os.FileMode) string { return writeMode(t, dir, name, text, mode) }
	pwFile := write("imap.pw", "from-the-file\n", 0o600)
	conf := write("imap.conf", "password = from-the-config\n", 0o600)

	const warning = "--password on the command line can be read by every user"
	for _, c := range []struct {
		name     string
		args     []string
		env      string
		password string
		warned   bool
		printed  string
	}{
		{"command line", []string{"--password", "on-the-command-line"}, "", "on-the-command-line", true, "as given"},
		{"password file", []string{"--password-file", "imap.pw"}, "", "from-the-file", false, "in " + pwFile},
		{"environment", nil, passwordEnv + "=from-the-environment", "from-the-environment", false, "as given"},
		{"config file", []string{"--config", conf}, "", "from-the-config", false, "as given"},
	} {
		t.Run(c.name, func(t *testing.T) {
			port := freePort(t)
			args := append([]string{"imap-server", "--user", "alice", "--user-key=user.sec", "--spool-key=spool.pub",
				"--user-public-key=user.pub", "--db", "mail.db", "--spool-server", spool, "--port", fmt.Sprint(port),
				"--status-addr", ""}, c.args...)
			penv := env
			if c.env != "" {
				penv = append(append([]string{}, env...), c.env)
			}
			daemon := startProc(t, "cspool imap-server", dir, penv, bin, args...)
			out := daemon.waitOutput(t, "state:", 30*time.Second)
			if got := settingValue(t, out, "password"); got != c.printed {
				t.Errorf("daemon printed password %q, want %q", got, c.printed)
			}
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", daemon.cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if inArgs := bytes.Contains(cmdline, []byte(c.password)); inArgs != c.warned {
				t.Errorf("password in /proc/PID/cmdline: %v, want %v", inArgs, c.warned)
			}
			if got := runPythonLogin(t, python, port, "alice", c.password); !strings.Contains(got, "OK") {
				t.Errorf("imaplib login with %q: %q, want OK", c.password, got)
			}
			daemon.stop(t, syscall.SIGTERM, 30*time.Second)
			log := daemon.stderr.String()
			if strings.Contains(log, warning) != c.warned {
				t.Errorf("warning about --password in the log: %v, want %v:\n%s", !c.warned, c.warned, log)
			}
			if strings.Contains(log, c.password) {
				t.Errorf("the log holds the password:\n%s", log)
			}
		})
	}
}

// TestPasswordRefusals: a password file or a config file holding a
// password that other users may open is refused before anything starts,
// and so are two ways of giving the password at once. These run the real
// command function.
func TestPasswordRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string { return writeMode(t, dir, name, text, mode) }
	for _, k := range []string{"user", "spool"} {
		e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
		if code := run(e, []string{"gen-keys", filepath.Join(dir, k+".sec"), filepath.Join(dir, k+".pub")}); code != 0 {
			t.Fatalf("gen-keys %s: exit %d", k, code)
		}
	}
	openFile := write("open.pw", "secret\n", 0o644)
	groupFile := write("group.pw", "secret\n", 0o640)
	emptyFile := write("empty.pw", "\n", 0o600)
	goodFile := write("good.pw", "secret\n", 0o600)
	openConf := write("open.conf", "password = secret\n", 0o644)
	groupConf := write("group.conf", "# the daemon\npassword = secret\n", 0o604)
	emptyPwConf := write("empty-pw.conf", "password =\nuser = -bad\n", 0o644)
	plainConf := write("plain.conf", "user = -bad\n", 0o644)
	for _, c := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"password file open to all", []string{"--password-file", openFile}, 77,
			[]string{"password file " + openFile + " holds a password and is open to other users (mode 0644)", "hint: run: chmod 600 " + openFile}},
		{"password file open to the group", []string{"--password-file", groupFile}, 77, []string{"(mode 0640)"}},
		{"empty password file", []string{"--password-file", emptyFile}, 77, []string{"is empty"}},
		{"missing password file", []string{"--password-file", filepath.Join(dir, "none")}, 77, []string{"no such file"}},
		{"password file a device", []string{"--password-file", os.DevNull}, 77,
			[]string{"password file " + os.DevNull + " is a device, not a file that holds a password", "hint: name a file"}},
		{"password file a directory", []string{"--password-file", dir}, 77, []string{"password file " + dir + " is a directory"}},
		{"config file open to all", []string{"--config", openConf}, 77,
			[]string{"config file " + openConf + " holds a password and is open to other users (mode 0644)", "chmod 600", "--password-file"}},
		{"config file open to others", []string{"--config", groupConf}, 77, []string{"(mode 0604)"}},
		{"both flags", []string{"--password", "x", "--password-file", goodFile}, 2, []string{"--password or --password-file, not both"}},
		// Only a secret makes the mode matter: these reach the user check.
		{"empty password in an open config", []string{"--config", emptyPwConf}, 2, []string{"-bad"}},
		{"no password in an open config", []string{"--config", plainConf}, 2, []string{"-bad"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			db := filepath.Join(t.TempDir(), "mail.db")
			args := append([]string{"imap-server", "--db", db, "--user-key", filepath.Join(dir, "user.sec"),
				"--user-public-key", filepath.Join(dir, "user.pub"), "--spool-key", filepath.Join(dir, "spool.pub"),
				"--port", "0", "--status-addr", ""}, c.args...)
			// Each case must fail before the daemon runs; one that does not
			// would serve forever.
			done := make(chan int, 1)
			go func() { done <- run(e, args) }()
			var code int
			select {
			case code = <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("cspool %v did not stop at the refusal; it is serving", args)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if code != c.code || strings.Contains(stderr.String(), "secret") {
				t.Errorf("exit %d, want %d; stderr %q", code, c.code, stderr.String())
			}
			if _, err := os.Stat(db); err == nil {
				t.Errorf("the database was created; the refusal came too late")
			}
		})
	}
}

// writeMode writes a file in dir with exactly mode (whatever the umask).
func writeMode(t *testing.T, dir, name, text string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPasswordFolderMissing: --db in a folder that does not exist failed
// with "storing the generated password: ... no such file or directory" and
// no hint, the password file being the first one made there.
func TestPasswordFolderMissing(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "no", "such", "mail.db")
	_, err := storedPassword(db)
	var h *hintError
	if err == nil || !errors.As(err, &h) || !strings.Contains(h.hint, "check that the folder exists") || !strings.Contains(h.hint, filepath.Dir(db)) {
		t.Errorf("a password stored in a missing folder: %v, want a hint naming %s", err, filepath.Dir(db))
	}
}

// TestStoredPasswordPlanted: DB.password is a file the daemon makes itself.
// Another local user who could write to the database's folder (a
// quickstart's --dir /tmp/demo made first by that user, mode 0777) planted
// a symbolic link there to a file of the daemon's user whose first line it
// knew (the quickstart's users file, mode 0600, begins "# cspool users
// file: NAME PUBLIC-KEY"), and the daemon took that line for its IMAP
// password: the other user logged in and read the mail. Run as root, a
// file of another user's in its place was taken too. Now a link, a file
// that is not regular, and a file of another user's are refused, naming
// the file, with nothing generated in their place.
func TestStoredPasswordPlanted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	known := filepath.Join(dir, "users")
	if err := os.WriteFile(known, []byte("# cspool users file: NAME PUBLIC-KEY\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, want string
		plant      func(path string) error
		needRoot   bool
	}{
		{"symlink", "is a symbolic link", func(p string) error { return os.Symlink(known, p) }, false},
		{"fifo", "not a regular file", func(p string) error {
			// With a line waiting in it, so that a reader takes it
			// rather than waiting for a writer.
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				return err
			}
			w, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			t.Cleanup(func() { w.Close() })
			_, err = w.WriteString("chosen by the writer\n")
			return err
		}, false},
		{"another user's", "not by this user", func(p string) error {
			if err := os.WriteFile(p, []byte("chosen by nobody\n"), 0o600); err != nil {
				return err
			}
			return os.Chown(p, 65534, 65534)
		}, true},
	}
	var err error
	for _, c := range cases {
		if c.needRoot && os.Geteuid() != 0 {
			t.Logf("%s: needs root to give a file to another user; skipped", c.name)
			continue
		}
		db := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".db")
		if err := c.plant(db + ".password"); err != nil {
			t.Fatal(err)
		}
		type result struct {
			pw  imapPassword
			err error
		}
		done := make(chan result, 1)
		go func() { pw, err := storedPassword(db); done <- result{pw, err} }()
		var pw imapPassword
		select {
		case r := <-done:
			pw, err = r.pw, r.err
		case <-time.After(testproc.HangLimit):
			t.Errorf("%s planted as DB.password: no answer within %v (a start that waits for good)", c.name, testproc.HangLimit)
			continue
		}
		var h *hintError
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &h) || !strings.Contains(h.hint, "remove it") {
			t.Errorf("%s planted as DB.password: password %q, err %v; want refused (%q), with a hint to remove it", c.name, pw.value, err, c.want)
		}
	}
	// The file the daemon made is still taken.
	db := filepath.Join(dir, "own.db")
	made, err := storedPassword(db)
	if err != nil || !made.generated {
		t.Fatalf("first start: %+v, %v; want a generated password", made, err)
	}
	again, err := storedPassword(db)
	if err != nil || again.value != made.value {
		t.Errorf("second start: %q, %v; want %q", again.value, err, made.value)
	}
}

// TestPasswordFileIsAKeyFile: a key file given as the IMAP or the relay
// password file (the settings mixed up; a secret key file has the mode
// 0600 a password file needs) is refused, naming the file, before the
// daemon starts. Its first line was taken as the password: the comment
// gen-keys writes ("# cspool secret key: keep it private, created
// TIME"), which whoever knows when the key was made can guess, and
// an IMAP login with it was accepted; in a key file without the comment,
// the secret key itself, for mail clients to keep and the smarthost to
// receive.
func TestPasswordFileIsAKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, k := range []string{"user", "spool"} {
		e := &env{stdin: strings.NewReader(""), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
		if code := run(e, []string{"gen-keys", filepath.Join(dir, k+".sec"), filepath.Join(dir, k+".pub")}); code != 0 {
			t.Fatalf("gen-keys %s: exit %d", k, code)
		}
	}
	userSec := filepath.Join(dir, "user.sec")
	text, err := os.ReadFile(userSec)
	if err != nil {
		t.Fatal(err)
	}
	comment, _, _ := strings.Cut(string(text), "\n")
	keyLine := ""
	for _, l := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(l, "CSPOOL-SECRET-KEY-1:") {
			keyLine = l
		}
	}
	bare := writeMode(t, dir, "bare.sec", keyLine+"\n", 0o600)
	pubText, err := os.ReadFile(filepath.Join(dir, "spool.pub"))
	if err != nil {
		t.Fatal(err)
	}
	spoolPub := writeMode(t, dir, "spool-copy.pub", string(pubText), 0o600)
	// SMTP's port is taken: a daemon not refused stops there, not serving.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, takenPort, _ := net.SplitHostPort(taken.Addr().String())
	for _, c := range []struct {
		name, flag, file, want string
	}{
		{"user.sec as the password file", "--password-file", userSec, "password file " + userSec + " holds a file cspool wrote"},
		{"a bare key as the password file", "--password-file", bare, "password file " + bare + " holds a cspool secret key, not a password"},
		{"spool.pub as the password file", "--password-file", spoolPub, "password file " + spoolPub + " holds a file cspool wrote"},
		{"user.sec as the relay password file", "--relay-password-file", userSec, "relay password file " + userSec + " holds a file cspool wrote"},
		{"a bare key as the relay password file", "--relay-password-file", bare, "relay password file " + bare + " holds a cspool secret key, not a password"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			db := filepath.Join(t.TempDir(), "mail.db")
			args := []string{"imap-server", "--user", "alice", "--db", db, "--user-key", userSec,
				"--user-public-key", filepath.Join(dir, "user.pub"), "--spool-key", filepath.Join(dir, "spool.pub"),
				"--port", "0", "--status-addr", "", c.flag, c.file}
			if c.flag == "--relay-password-file" {
				args = append(args, "--password", "pw", "--smtp-port", takenPort, "--relay", "smtps://smtp.example.org",
					"--identity", "alice@example.org", "--relay-user", "alice")
			}
			done := make(chan int, 1)
			go func() { done <- run(e, args) }()
			var code int
			select {
			case code = <-done:
			case <-time.After(60 * time.Second):
				t.Fatalf("cspool %v did not stop at the refusal; it is serving", args)
			}
			msg := stderr.String()
			if code != 77 || !strings.Contains(msg, c.want) || !strings.Contains(msg, "hint: name the file whose first line is the password") {
				t.Errorf("exit %d, want 77 and %q with its hint; stderr %q", code, c.want, msg)
			}
			if strings.Contains(msg, keyLine[20:]) || strings.Contains(msg, comment) {
				t.Errorf("stderr shows the file's first line: %q", msg)
			}
			if c.flag == "--password-file" {
				if _, err := os.Stat(db); err == nil {
					t.Errorf("the database was created; the refusal came too late")
				}
			}
		})
	}
}
