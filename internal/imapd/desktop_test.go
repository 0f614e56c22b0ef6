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
	// The portals of a desktop, where the machine has them: the bus
	// would start them when the client asks, and the document portal
	// mounts a FUSE file system at $XDG_RUNTIME_DIR/doc, which the test's
	// cleanup then cannot remove ("unlinkat .../run/doc/by-app: operation
	// not permitted"), and which outlives the test. The session's own
	// services folder, looked in first, names them with a program that
	// fails, as on a machine without them; a mount made all the same is
	// taken down at the end.
	services := filepath.Join(home, ".local", "share", "dbus-1", "services")
	if err := os.MkdirAll(services, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"org.freedesktop.portal.Documents", "org.freedesktop.portal.Desktop", "org.freedesktop.impl.portal.desktop.gtk", "org.freedesktop.impl.portal.PermissionStore"} {
		unit := "[D-BUS Service]\nName=" + name + "\nExec=/bin/false\n"
		if err := os.WriteFile(filepath.Join(services, name+".service"), []byte(unit), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { unmountPortal(t, filepath.Join(run, "doc")) })
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

// unmountPortal takes down a document portal's FUSE mount at dir, if
// there is one, so that the test's folder can be removed.
func unmountPortal(t *testing.T, dir string) {
	out, err := os.ReadFile("/proc/self/mounts")
	if err != nil || !strings.Contains(string(out), " "+dir+" ") {
		return
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		if out, err := exec.Command("fusermount3", "-u", "-z", dir).CombinedOutput(); err != nil {
			t.Logf("unmounting the document portal at %s: %v: %s", dir, err, out)
		}
	}
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

// TestDesktopSessionStartsNoPortal: the desktop session's bus does not
// start the document portal where the machine has it (Debian installs
// it with Geary's recommends): asked for its mount point, the bus fails
// to start it, and nothing is mounted in the session's runtime folder.
// It was started, mounted its FUSE file system there, and TestGeary failed
// in its cleanup ("unlinkat .../run/doc/by-app: operation not
// permitted"), the portal left running.
func TestDesktopSessionStartsNoPortal(t *testing.T) {
	t.Parallel()
	gdbus, err := exec.LookPath("gdbus")
	if err != nil {
		t.Skip("gdbus (libglib2.0-bin) is not installed")
	}
	needTool(t, "dbus-daemon")
	needTool(t, "gnome-keyring-daemon")
	home := t.TempDir()
	s := startDesktopSession(t, home, ":0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gdbus, "call", "--session", "--dest", "org.freedesktop.portal.Documents",
		"--object-path", "/org/freedesktop/portal/documents", "--method", "org.freedesktop.portal.Documents.GetMountPoint")
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("the session's bus started the document portal: %s", out)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if doc := filepath.Join(home, "run", "doc"); strings.Contains(string(mounts), " "+doc+" ") {
		t.Errorf("%s is mounted", doc)
	}
}
