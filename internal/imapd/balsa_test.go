package imapd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// balsaConfig is Balsa's ~/.balsa/config: its local mail folder (which
// keeps the first-run assistant away), no questions about a changed user
// interface, no periodic checks, the special mailboxes (local Maildirs,
// but Trash, which is the server's), and the IMAP server as a folder
// (plain text on loopback, Security=4: NET_CLIENT_CRYPT_NONE). Each
// server's user name is in config-private (balsaPrivate), its password in
// the keyring.
const balsaConfig = `[Globals]
MailDir=%[1]s

[Notifications]
GtkUIManager=true
LibBalsaAddressView=true

[MailboxChecking]
OnStartup=false
Auto=false

[mailbox-Inbox]
Type=LibBalsaMailboxMaildir
Name=Inbox
Path=%[1]s/inbox

[mailbox-Outbox]
Type=LibBalsaMailboxMaildir
Name=Outbox
Path=%[1]s/outbox

[mailbox-Sentbox]
Type=LibBalsaMailboxMaildir
Name=Sentbox
Path=%[1]s/sentbox

[mailbox-Draftbox]
Type=LibBalsaMailboxMaildir
Name=Draftbox
Path=%[1]s/draftbox

[mailbox-Trash]
Type=LibBalsaMailboxImap
Name=Trash
Path=Trash
Server=127.0.0.1:%[2]d
Security=4
RememberPasswd=true

[folder-1]
Type=LibBalsaImapServer
Name=cspool
Server=127.0.0.1:%[2]d
Security=4
RememberPasswd=true
Directory=
Subscribed=false
ListInbox=true

[identity-default]
Address=Alice <alice@example.net>
`

// balsaPrivate is Balsa's ~/.balsa/config-private: the user names.
const balsaPrivate = `[folder-1]
Username=alice

[mailbox-Trash]
Username=alice
`

// TestBalsa drives Balsa (Debian's 2.6, GTK 3, its own IMAP library)
// under Xvfb through a proxy that records its IMAP conversation. Its
// configuration is seeded in ~/.balsa (config, config-private) and its
// password is in a GNOME Keyring on a D-Bus session bus of the test's
// own (desktopSession), under Balsa's libsecret schema
// (org.gnome.Balsa.NetworkPassword: protocol, server, user). It lists the
// folders at start; a second "balsa -o imap://..." opens INBOX in the
// running Balsa; a delivery is fetched when it is told to get new mail
// (Ctrl+M: a NOOP on INBOX, answered with the EXISTS); keys typed into its window show the next unread message
// (Ctrl+N: UID FETCH n RFC822, which sets \Seen), flag it (X) and move it
// to the server's Trash (D: COPY, STORE \Deleted). The device's store then
// holds the message in Trash, as delivered, flagged and seen, and in INBOX
// marked \Deleted until Balsa closes the mailbox (Ctrl+W: EXPUNGE, CLOSE),
// and the conversation holds no NO or BAD. About 2 s.
func TestBalsa(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"balsa", "Xvfb", "xdotool", "dbus-daemon", "gnome-keyring-daemon", "secret-tool"} {
		needTool(t, tool)
	}
	const bound = 30 * time.Second
	r := newRig(t)
	a := r.device("a")
	r.Deliver([]byte(messages["plain"]))
	a.synced(r.Deliver([]byte(nestedMessage)))
	w := loginWire(t, a.addr)
	w.ok("CREATE Work/2025/")
	proxy := newIMAPProxy(t, a.addr)
	_, port := splitPort(t, proxy.addr)

	home := t.TempDir()
	mail := filepath.Join(home, "Mail")
	for _, b := range []string{"inbox", "outbox", "sentbox", "draftbox"} {
		for _, s := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(mail, b, s), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	conf := filepath.Join(home, ".balsa")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"config": fmt.Sprintf(balsaConfig, mail, port), "config-private": balsaPrivate} {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	disp := xServer(t)
	session := startDesktopSession(t, home, disp)
	session.storePassword("xdg:schema", "org.gnome.Balsa.NetworkPassword", "protocol", "imap",
		"server", fmt.Sprintf("127.0.0.1:%d", port), "user", "alice")
	b := exec.Command("balsa")
	b.Env = session.env
	startGroup(t, b, filepath.Join(home, "balsa.log"), "Balsa")
	// sent waits for the client's command matching re after mark and the
	// server's OK to it, and returns its submatches.
	sent := func(what string, mark int, re string) []string {
		t.Helper()
		rx := regexp.MustCompile(re)
		proxy.answeredOK(t, what, mark, rx)
		return rx.FindStringSubmatch(proxy.lines()[proxy.waitFor(mark, 'C', rx, 0)].text)
	}
	keys := func(k string) {
		t.Helper()
		if _, err := xdotool(disp, "windowfocus", "--sync", waitWindow(t, disp, "^Balsa: INBOX$", bound)); err != nil {
			t.Fatalf("focusing Balsa's window: %v", err)
		}
		if _, err := xdotool(disp, "key", k); err != nil {
			t.Fatalf("key %s: %v", k, err)
		}
	}

	// At start it lists the folders; asked, it opens INBOX.
	sent("listing", 0, `^\S+ LIST "" "%"$`)
	mark := len(proxy.lines())
	session.run(fmt.Sprintf("balsa -o imap://alice@127.0.0.1:%d/INBOX", port))
	sent("opening INBOX", mark, `^\S+ FETCH 1:2 \(FLAGS UID ENVELOPE RFC822\.SIZE BODY\.PEEK\[HEADER\.FIELDS \(CONTENT-TYPE\)\]\)$`)
	sent("showing the first", mark, `^\S+ UID FETCH 1 RFC822$`)

	// A delivery, fetched when Balsa is told to get new mail.
	a.synced(r.Deliver([]byte(messages["multipart"])))
	mark = len(proxy.lines())
	keys("ctrl+m")
	sent("getting new mail", mark, `^\S+ FETCH 3 \(FLAGS UID ENVELOPE`)

	// The next unread message: shown (and so read), flagged, moved to
	// Trash.
	mark = len(proxy.lines())
	keys("ctrl+n")
	uid := sent("showing the next unread", mark, `^\S+ UID FETCH (\d+) RFC822$`)[1]
	mark = len(proxy.lines())
	keys("x")
	sent("flagging", mark, `(?i)^\S+ STORE \d+ \+FLAGS\.SILENT \(\\Flagged\)$`)
	mark = len(proxy.lines())
	keys("d")
	sent("moving to Trash", mark, `(?i)^\S+ (UID )?(COPY|MOVE) \d+ "?Trash"?$`)
	sent("moving to Trash", mark, `(?i)^\S+ STORE \d+ \+FLAGS\.SILENT \(\\Deleted\)$`)
	t.Logf("Balsa read, flagged and moved message %s to Trash", uid)

	delivered := deliveredByUID()
	list, raw := scanBox(t, a, "Trash")
	if len(raw) != 1 || !strings.Contains(list, `\Flagged`) || !strings.Contains(list, `\Seen`) {
		t.Errorf("Trash after Balsa moved message %s there: %s, want that one message, flagged and seen", uid, list)
	}
	for _, m := range raw {
		if string(m) != delivered[uid] {
			t.Errorf("Trash after Balsa moved message %s there holds %q, want %q", uid, m, delivered[uid])
		}
	}
	// Balsa leaves the message in INBOX marked \Deleted until it
	// expunges (on closing the mailbox, or on its timer).
	if inbox, _ := scanBox(t, a, "INBOX"); !regexp.MustCompile(`(^| )` + uid + `\[[^]]*\\Deleted`).MatchString(inbox) {
		t.Errorf("INBOX after Balsa moved message %s to Trash: %s, want it marked \\Deleted", uid, inbox)
	}
	// Closing the mailbox (Ctrl+W) expunges it.
	mark = len(proxy.lines())
	keys("ctrl+w")
	sent("closing INBOX", mark, `^\S+ EXPUNGE$`)
	sent("closing INBOX", mark, `^\S+ CLOSE$`)
	if inbox, _ := scanBox(t, a, "INBOX"); strings.Contains(" "+inbox, " "+uid+"[") || strings.Count(inbox, "[") != 2 {
		t.Errorf("INBOX after Balsa closed it: %s, want the two messages but %s", inbox, uid)
	}
	checkConversation(t, proxy.lines())
}
