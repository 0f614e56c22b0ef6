package imapd

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

// desktopSession is the desktop a GNOME mail client (Evolution, Geary)
// expects around it: a D-Bus session bus of the test's own (which starts
// the services the client asks for, such as evolution-data-server's) and
// GNOME Keyring on it, where the account's password is stored
// (storePassword) under the attributes the client looks it up by. Its
// environment keeps the client's files in home, its settings in
// GSettings' keyfile back end.
type desktopSession struct {
	t   *testing.T
	env []string
}

func startDesktopSession(t *testing.T, home, disp string) *desktopSession {
	t.Helper()
	run := filepath.Join(home, "run")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	bus := filepath.Join(run, "bus")
	env := append(os.Environ(), "HOME="+home, "DISPLAY="+disp, "XDG_RUNTIME_DIR="+run,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"), "DBUS_SESSION_BUS_ADDRESS=unix:path="+bus,
		"GSETTINGS_BACKEND=keyfile", "NO_AT_BRIDGE=1", "LANG=C.UTF-8", "LC_ALL=C.UTF-8",
		"WEBKIT_DISABLE_SANDBOX_THIS_IS_DANGEROUS=1", "WEBKIT_DISABLE_COMPOSITING_MODE=1")
	daemon := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--address=unix:path="+bus)
	daemon.Env = env
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		t.Fatalf("starting dbus-daemon: %v", err)
	}
	t.Cleanup(func() { stopGroup(daemon) })
	for i := 0; ; i++ {
		if _, err := os.Stat(bus); err == nil {
			break
		}
		if i == 100 {
			t.Fatal("the session bus did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An unlocked login keyring (made with the password "unlock").
	keyring := exec.Command("gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets")
	keyring.Env = env
	keyring.Stdin = strings.NewReader("unlock")
	keyring.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := keyring.Start(); err != nil {
		t.Fatalf("starting gnome-keyring-daemon: %v", err)
	}
	t.Cleanup(func() { stopGroup(keyring) })
	return &desktopSession{t: t, env: env}
}

// storePassword stores the account's password (testPassword) in the
// keyring with secret-tool, under the attributes attrs (name, value,
// name, value...), retrying for up to 5 s while the keyring starts.
func (s *desktopSession) storePassword(attrs ...string) {
	s.t.Helper()
	store := fmt.Sprintf(`printf %%s %q | secret-tool store --label=cspool %s`, testPassword, strings.Join(attrs, " "))
	for i := 0; ; i++ {
		err := s.try(store)
		if err == nil {
			return
		}
		if i == 50 {
			s.t.Fatalf("storing the password in the keyring: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// try runs a shell command line in the session, within 30 s, and returns
// its error.
func (s *desktopSession) try(line string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Env = s.env
	return cmd.Run()
}

// run runs a shell command line in the session, within 30 s, its output
// to a file (a program it leaves running in the background keeps its
// output open).
func (s *desktopSession) run(line string) {
	s.t.Helper()
	out, err := os.CreateTemp(s.t.TempDir(), "out")
	if err != nil {
		s.t.Fatal(err)
	}
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		s.t.Fatalf("%s: %v\n%s", line, err, b)
	}
}

// deliveredByUID is what the desktop clients' tests deliver to INBOX
// before the client starts, by UID.
func deliveredByUID() map[string]string {
	return map[string]string{"1": messages["plain"], "2": nestedMessage, "3": messages["multipart"]}
}

// checkArchivedAndTrashed checks what client left after it moved message
// uid to Archive (flagged and seen) and deleted message trashed into
// Trash: each box holds that one message as delivered, and INBOX one
// message, neither of them.
func checkArchivedAndTrashed(t *testing.T, a *device, client, uid, trashed string) {
	t.Helper()
	delivered := deliveredByUID()
	for _, c := range []struct {
		box, uid string
		flags    []string
	}{{"Archive", uid, []string{`\Flagged`, `\Seen`}}, {"Trash", trashed, nil}} {
		list, raw := scanBox(t, a, c.box)
		if len(raw) != 1 {
			t.Errorf("%s after %s's move of message %s: %s, want that one message", c.box, client, c.uid, list)
		}
		for _, f := range c.flags {
			if !strings.Contains(list, f) {
				t.Errorf("%s after %s's move of message %s: %s, want it %s", c.box, client, c.uid, list, f)
			}
		}
		for _, m := range raw {
			if string(m) != delivered[c.uid] {
				t.Errorf("%s after %s's move of message %s holds %q, want %q", c.box, client, c.uid, m, delivered[c.uid])
			}
		}
	}
	if inbox, raw := scanBox(t, a, "INBOX"); len(raw) != 1 || strings.Contains(" "+inbox, " "+uid+"[") || strings.Contains(" "+inbox, " "+trashed+"[") {
		t.Errorf("INBOX after %s moved messages %s and %s: %s", client, uid, trashed, inbox)
	}
}
