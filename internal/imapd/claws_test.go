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

// clawsAccount is Claws Mail's accountrc: one IMAP account on the logging
// proxy, plain text on loopback, every folder shown (not only the
// subscribed ones). The password is given in the clear ("password="),
// which Claws Mail takes into its password store at start.
const clawsAccount = `[Account: 1]
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
imap_subsonly=0
smtp_server=127.0.0.1
set_smtpport=1
smtp_port=9
account_id=1
`

// clawsFolders is Claws Mail's folderlist.xml: its local mailbox only, so
// that it makes the account's folder at start and lists the server's
// folders into it, as it does for a new account.
const clawsFolders = `<?xml version="1.0" encoding="UTF-8"?>
<folderlist>
	<folder type="mh" name="Mailbox" path="%s" collapsed="0">
	</folder>
</folderlist>
`

// clawsPrefs is Claws Mail's clawsrc: no spell checker (Debian installs
// no dictionary with it, and the compose window would say so), no
// questions on exit, no periodic checks.
const clawsPrefs = `[Common]
enable_aspell=0
check_while_typing=0
confirm_on_exit=0
clean_trash_on_exit=0
warn_queued_on_exit=0
work_offline=0
autochk_newmail=0
`

// TestClawsMail drives Claws Mail (Debian's, 4.1, its own IMAP code on
// libetpan) under Xvfb through a proxy that records its IMAP
// conversation. The account is seeded in a configuration folder of its
// own (accountrc, folderlist.xml, clawsrc); Claws Mail is driven through
// its remote commands (--receive-all, --status-full, --select) and keys
// typed into its window with xdotool: it lists the folders at start
// (nested ones, "Bills & Tax", "Grüße"), fetches INBOX's headers, shows a
// message (marking it read), flags it (*), moves it to Archive (Ctrl+O,
// the folder typed into the chooser: UID COPY, STORE \Deleted, EXPUNGE)
// and deletes the other one (Delete: the same into Trash). Another session
// finds each change, and the conversation holds no NO or BAD. About 5 s.
func TestClawsMail(t *testing.T) {
	t.Parallel()
	claws := needTool(t, "claws-mail")
	needTool(t, "Xvfb")
	needTool(t, "xdotool")
	d, w := terminalRig(t)
	w.ok("CREATE Work/2025/")
	w.ok(`CREATE "Bills &- Tax"`)
	w.ok(`CREATE "Gr&APwA3w-e"`)
	proxy := newIMAPProxy(t, d.addr)
	var port int
	fmt.Sscanf(proxy.addr[strings.LastIndexByte(proxy.addr, ':')+1:], "%d", &port)

	dir := t.TempDir()
	cfg, home, mail := filepath.Join(dir, "cfg"), filepath.Join(dir, "home"), filepath.Join(dir, "Mail")
	for _, p := range []string{cfg, home, mail} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{
		"accountrc":      fmt.Sprintf(clawsAccount, port, testPassword),
		"folderlist.xml": fmt.Sprintf(clawsFolders, mail),
		"clawsrc":        clawsPrefs,
	} {
		if err := os.WriteFile(filepath.Join(cfg, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	disp := xServer(t)
	env := append(os.Environ(), "DISPLAY="+disp, "HOME="+home, "NO_AT_BRIDGE=1")
	cm := exec.Command(claws, "--alternate-config-dir", cfg)
	cm.Env = env
	startGroup(t, cm, filepath.Join(dir, "claws.log"), "Claws Mail")
	// remote runs a remote command in the running Claws Mail (through
	// its socket in HOME) and returns its output.
	remote := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, claws, append([]string{"--alternate-config-dir", cfg}, args...)...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("claws-mail %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Claws Mail ignores SIGTERM while it runs: it is asked to quit
	// first (cleanups run last registered first).
	t.Cleanup(func() {
		c := exec.Command(claws, "--alternate-config-dir", cfg, "--exit")
		c.Env = env
		c.Run()
	})
	// answered waits for a command matching re after line mark and the
	// server's OK to it, and returns the line after the command's: Claws
	// Mail may have sent its next one before the OK is seen here.
	answered := func(what string, mark int, re string) int {
		t.Helper()
		i := proxy.waitFor(mark, 'C', regexp.MustCompile(re), 20*time.Second)
		if i < 0 {
			t.Fatalf("%s: no command matching %s", what, re)
		}
		proxy.answeredOK(t, what, i, regexp.MustCompile(re))
		return i + 1
	}
	// show selects message uid of INBOX from the command line and waits
	// for Claws Mail to fetch it. A selection that comes while Claws Mail
	// still works on the last action (its move's follow-up, under load)
	// can be dropped: it is asked again, up to 3 times.
	show := func(mark int, uid string) int {
		t.Helper()
		re := regexp.MustCompile(`^\S+ UID FETCH ` + uid + ` BODY\.PEEK\[\]$`)
		for try := 1; ; try++ {
			remote("--select", "#imap/cspool/INBOX/"+uid)
			if i := proxy.waitFor(mark, 'C', re, 10*time.Second); i >= 0 {
				proxy.answeredOK(t, "showing", i, re)
				return i + 1
			}
			if try == 3 {
				t.Fatalf("showing: no command matching %s after %d selections", re, try)
			}
		}
	}
	// window waits for a visible window named name and gives it the
	// keyboard (there is no window manager to do it).
	window := func(name string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if out, err := xdotool(disp, "search", "--onlyvisible", "--name", name); err == nil && out != "" {
				if _, err := xdotool(disp, "windowfocus", "--sync", strings.Fields(out)[0]); err != nil {
					t.Fatalf("focusing %q: %v", name, err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no window named %q", name)
			}
		}
	}

	// At start it lists the folders, level by level.
	mark := answered("listing", 0, `^\S+ LIST "" "%"$`)
	answered("listing Work", 0, `^\S+ LIST "" "Work/2025/%"$`)
	window("Claws Mail")
	status := remote("--status-full")
	for _, f := range []string{"INBOX", "Archive", "Trash", "Work", "Work/2025", "Bills & Tax", "Grüße"} {
		if !regexp.MustCompile(`(?m) #imap/cspool/` + regexp.QuoteMeta(f) + `$`).MatchString(status) {
			t.Errorf("--status-full does not show %s:\n%s", f, status)
		}
	}

	// Get Mail: INBOX's headers.
	remote("--receive-all")
	mark = answered("fetching headers", mark, `^\S+ UID FETCH \S+ \(UID FLAGS RFC822\.SIZE BODY\.PEEK\[HEADER\.FIELDS`)
	if status := remote("--status-full"); !regexp.MustCompile(`(?m)^\s+\d+\s+2\s+2 #imap/cspool/INBOX$`).MatchString(status) {
		t.Errorf("--status-full after Get Mail: INBOX is not 2 unread of 2:\n%s", status)
	}

	// The multipart message (UID 2): shown, read, flagged, moved.
	mark = show(mark, "2")
	mark = answered("marking read", mark, `^\S+ UID STORE 2 \+FLAGS\.SILENT \(\\Seen\)$`)
	window("Claws Mail")
	if _, err := xdotool(disp, "key", "asterisk"); err != nil {
		t.Fatal(err)
	}
	mark = answered("flagging", mark, `^\S+ UID STORE 2 \+FLAGS\.SILENT \(\\Flagged\)$`)
	if _, err := xdotool(disp, "key", "ctrl+o"); err != nil {
		t.Fatal(err)
	}
	window("^Select folder$")
	if _, err := xdotool(disp, "type", "--delay", "50", "Archive"); err != nil {
		t.Fatal(err)
	}
	if _, err := xdotool(disp, "key", "Return"); err != nil {
		t.Fatal(err)
	}
	mark = answered("moving", mark, `^\S+ UID COPY 2 "?Archive"?$`)
	mark = answered("moving", mark, `^\S+ EXPUNGE$`)

	// The plain one (UID 1): deleted, into Trash.
	mark = show(mark, "1")
	mark = answered("marking read", mark, `^\S+ UID STORE 1 \+FLAGS\.SILENT \(\\Seen\)$`)
	window("Claws Mail")
	if _, err := xdotool(disp, "key", "Delete"); err != nil {
		t.Fatal(err)
	}
	mark = answered("deleting", mark, `^\S+ UID COPY 1 "?Trash"?$`)
	answered("deleting", mark, `^\S+ EXPUNGE$`)

	expectUntagged(t, "STATUS INBOX", w.ok("STATUS INBOX (MESSAGES)"), "* STATUS INBOX (MESSAGES 0)")
	w.ok("SELECT Archive")
	u := w.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if got := strings.Join(u, ""); len(u) != 1 || !strings.Contains(got, `\Flagged`) || !strings.Contains(got, `\Seen`) || !strings.Contains(got, "Gr=C3=BC=C3=9Fe") {
		t.Errorf("Archive after Claws Mail's flag and move: %q", u)
	}
	w.ok("SELECT Trash")
	u = w.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if got := strings.Join(u, ""); len(u) != 1 || !strings.Contains(got, "Lunch on Friday") {
		t.Errorf("Trash after Claws Mail's delete: %q", u)
	}
	checkConversation(t, proxy.lines())
}
