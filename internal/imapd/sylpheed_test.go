package imapd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sylpheedAccount is Sylpheed's accountrc: one IMAP account on the
// logging proxy, plain text on loopback, every folder listed, not only
// INBOX checked. The password is given in the clear ("password=").
const sylpheedAccount = `[Account: 1]
account_name=cspool
is_default=1
name=Alice
address=alice@example.net
protocol=3
receive_server=127.0.0.1
set_imapport=1
imap_port=%d
user_id=alice
password=%s
imap_auth_method=0
ssl_imap=0
imap_check_inbox_only=0
smtp_server=127.0.0.1
set_smtpport=1
smtp_port=9
account_id=1
`

// sylpheedFolders is Sylpheed's folderlist.xml: its local mailbox only,
// so that it adds the account's folder at start and lists the server's
// folders into it, as it does for a new account.
const sylpheedFolders = `<?xml version="1.0" encoding="UTF-8"?>
<folderlist>
	<folder type="mh" name="Mailbox" path="%s" collapsed="0">
	</folder>
</folderlist>
`

// sylpheedPrefs is Sylpheed's sylpheedrc: no spell checker, no questions
// on exit, no periodic checks for mail or for a newer Sylpheed, no tray
// icon.
const sylpheedPrefs = `[Common]
enable_aspell=0
confirm_on_exit=0
clean_trash_on_exit=0
warn_queued_on_exit=0
autochk_newmail=0
auto_update_check=0
show_trayicon=0
`

// TestSylpheed drives Sylpheed (Debian's 3.8, with IMAP code of its own,
// where Claws Mail, forked from it, uses libetpan) under Xvfb through a proxy that records its
// IMAP conversation. Its account is seeded in a configuration folder of
// its own (--configdir: accountrc, folderlist.xml, sylpheedrc), and it is
// driven by its remote commands (--status-full, --receive-all, --exit)
// and keys typed with xdotool into the window given the keyboard: it
// lists the folders at start ("Grüße", a nested one), opens INBOX (G, the
// folder chosen in its folder dialog), fetches a delivery when told to
// receive, shows the next unread message (Shift+N; \Seen), flags it
// (Shift+*), moves it to Archive (Ctrl+O: UID COPY, STORE \Deleted,
// EXPUNGE) and deletes the one it shows next (Ctrl+D: the same into
// Trash). The device's store then holds each message where Sylpheed put
// it, as delivered, and the conversation holds no NO or BAD. About 2 s.
func TestSylpheed(t *testing.T) {
	t.Parallel()
	syl := needTool(t, "sylpheed")
	needTool(t, "Xvfb")
	needTool(t, "xdotool")
	r := newRig(t)
	a := r.device("a")
	r.Deliver([]byte(messages["plain"]))
	a.synced(r.Deliver([]byte(nestedMessage)))
	w := loginWire(t, a.addr)
	w.ok("CREATE Work/2025/")
	w.ok(`CREATE "Gr&APwA3w-e"`)
	proxy := newIMAPProxy(t, a.addr)
	_, port := splitPort(t, proxy.addr)

	dir := t.TempDir()
	cfg, home, mail := filepath.Join(dir, "cfg"), filepath.Join(dir, "home"), filepath.Join(dir, "Mail")
	for _, p := range []string{cfg, home, mail} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{
		"accountrc":      fmt.Sprintf(sylpheedAccount, port, testPassword),
		"folderlist.xml": fmt.Sprintf(sylpheedFolders, mail),
		"sylpheedrc":     sylpheedPrefs,
	} {
		if err := os.WriteFile(filepath.Join(cfg, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	disp := xServer(t)
	env := append(os.Environ(), "DISPLAY="+disp, "HOME="+home, "NO_AT_BRIDGE=1", "LANG=C.UTF-8")
	sp := exec.Command(syl, "--configdir", cfg)
	sp.Env = env
	startGroup(t, sp, filepath.Join(dir, "sylpheed.log"), "Sylpheed")
	// remote runs a remote command in the running Sylpheed and returns
	// its output.
	remote := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, syl, append([]string{"--configdir", cfg}, args...)...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("sylpheed %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Asked to quit first (cleanups run last registered first).
	t.Cleanup(func() {
		c := exec.Command(syl, "--configdir", cfg, "--exit")
		c.Env = env
		c.Run()
	})
	// window waits for a visible window named name and gives it the
	// keyboard (there is no window manager to do it).
	window := func(name string) {
		t.Helper()
		if _, err := xdotool(disp, "windowfocus", "--sync", waitWindow(t, disp, name, 20*time.Second)); err != nil {
			t.Fatalf("focusing %q: %v", name, err)
		}
	}
	keys := func(k ...string) {
		t.Helper()
		for _, k := range k {
			if _, err := xdotool(disp, "key", k); err != nil {
				t.Fatalf("key %s: %v", k, err)
			}
		}
	}
	// sent waits for the client's command matching re after mark and the
	// server's OK to it, and returns its submatches.
	sent := func(what string, mark int, re string) []string {
		t.Helper()
		rx := regexp.MustCompile(re)
		proxy.answeredOK(t, what, mark, rx)
		return rx.FindStringSubmatch(proxy.lines()[proxy.waitFor(mark, 'C', rx, 0)].text)
	}
	// choose picks folder name in the folder dialog: typed (the tree's
	// search), the next match taken (Down) where the local mailbox has a
	// folder of the same name first.
	choose := func(name string, next bool) {
		t.Helper()
		window("^Select folder$")
		if _, err := xdotool(disp, "type", "--delay", "50", name); err != nil {
			t.Fatal(err)
		}
		if next {
			keys("Down")
		}
		keys("Return")
	}

	// At start it lists every folder.
	sent("listing", 0, `^\S+ LIST "" "\*"$`)
	status := remote("--status-full")
	for _, f := range []string{"INBOX", "Archive", "Trash", "Work", "Work/2025", "Grüße"} {
		if !regexp.MustCompile(`(?m) #imap/cspool/` + regexp.QuoteMeta(f) + `$`).MatchString(status) {
			t.Errorf("--status-full does not show %s:\n%s", f, status)
		}
	}

	// INBOX opened: every message's header.
	mark := len(proxy.lines())
	window("Sylpheed 3")
	keys("g")
	choose("INBOX", true)
	sent("opening INBOX", mark, `^\S+ UID FETCH 1:\* \(UID FLAGS RFC822\.SIZE RFC822\.HEADER\)$`)
	sent("showing the first", mark, `^\S+ UID FETCH 1 BODY\.PEEK\[\]$`)

	// A delivery, fetched when Sylpheed is told to receive. Told while it
	// still works on the last action (under load), it does nothing: it is
	// told again, up to 3 times.
	a.synced(r.Deliver([]byte(messages["multipart"])))
	mark = len(proxy.lines())
	for try := 1; ; try++ {
		remote("--receive-all")
		if proxy.waitFor(mark, 'C', regexp.MustCompile(`^\S+ STATUS INBOX `), 5*time.Second) >= 0 {
			break
		}
		if try == 3 {
			t.Fatalf("receiving: no STATUS INBOX after %d --receive-all", try)
		}
	}
	sent("receiving", mark, `^\S+ UID FETCH 3(:\S+)? \(UID FLAGS RFC822\.SIZE RFC822\.HEADER\)$`)

	// The next unread message: shown, read, flagged, moved to Archive.
	mark = len(proxy.lines())
	window("Sylpheed 3")
	keys("shift+n")
	uid := sent("showing", mark, `^\S+ UID FETCH (\d+) BODY\.PEEK\[\]$`)[1]
	sent("marking read", mark, `^\S+ UID STORE `+uid+` \+FLAGS\.SILENT \(\\Seen\)$`)
	mark = len(proxy.lines())
	keys("shift+asterisk")
	sent("flagging", mark, `^\S+ UID STORE `+uid+` \+FLAGS\.SILENT \(\\Flagged\)$`)
	mark = len(proxy.lines())
	keys("ctrl+o")
	choose("Archive", false)
	sent("moving", mark, `^\S+ UID COPY `+uid+` "?Archive"?$`)
	sent("moving", mark, `^\S+ EXPUNGE$`)

	// The message it shows next (marked read once shown: a key typed
	// while it still works on it is dropped): deleted, into Trash.
	trashed := sent("showing the next", mark, `^\S+ UID STORE (\d+) \+FLAGS\.SILENT \(\\Seen\)$`)[1]
	mark = len(proxy.lines())
	window("Sylpheed 3")
	keys("ctrl+d")
	sent("deleting", mark, `^\S+ UID COPY `+trashed+` "?Trash"?$`)
	sent("deleting", mark, `^\S+ EXPUNGE$`)
	t.Logf("Sylpheed read, flagged and moved message %s, and deleted message %s", uid, trashed)

	checkArchivedAndTrashed(t, a, "Sylpheed", uid, trashed)
	checkConversation(t, proxy.lines())
}
