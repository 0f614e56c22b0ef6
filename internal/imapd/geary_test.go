package imapd

import (
	"fmt"
	"mime"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// gearyAccount is the geary.ini of a Geary account ("other" provider,
// configured by hand): IMAP on the logging proxy in plain text, the
// server's special folders as Geary's, nothing saved to Sent or Drafts,
// an outgoing server never used. The password is in the keyring.
const gearyAccount = `[Metadata]
version=1
status=enabled

[Account]
ordinal=1
label=cspool
prefetch_days=-1
save_drafts=false
save_sent=false
use_signature=false
sender_mailboxes=Alice <alice@example.net>;
service_provider=other

[Folders]
archive_folder=Archive;
drafts_folder=Drafts;
sent_folder=Sent;
spam_folder=Junk;
trash_folder=Trash;

[Incoming]
login=alice
remember_password=true
host=127.0.0.1
port=%d
transport_security=none
credentials=custom

[Outgoing]
remember_password=false
host=127.0.0.1
port=9
transport_security=none
credentials=none
`

// gearySettings are Geary's GSettings (the keyfile back end): no
// migration of an older configuration, no staying in the background
// after its window closes, no optional plugins.
const gearySettings = `[org/gnome/Geary]
migrated-config=true
run-in-background=false
optional-plugins=@as []
`

// gearyDB reads Geary's database of the account (geary.db, SQLite) with
// the sqlite3 program: query's rows, one a line, columns separated by "|",
// RFC 2047 words decoded (Geary keeps ENVELOPE's subject as it came).
func gearyDB(home, query string) (string, error) {
	db := filepath.Join(home, ".local", "share", "geary", "account_01", "geary.db")
	if _, err := os.Stat(db); err != nil {
		return "", err
	}
	out, err := exec.Command("sqlite3", "-readonly", db, query).CombinedOutput()
	if err != nil {
		return string(out), err
	}
	return new(mime.WordDecoder).DecodeHeader(strings.TrimSpace(string(out)))
}

// gearyFolderQuery lists what Geary holds of a folder: UID, subject, and
// 1 or 0 for \Flagged, in UID order. Geary keeps the subject of a message
// it read at start from ENVELOPE, and of a message that arrived later
// from the header field, as it was, space and CRLF included.
const gearyFolderQuery = `SELECT l.ordering, trim(m.subject, ' ' || char(13) || char(10)), instr(m.flags, '\Flagged') > 0
FROM MessageTable m JOIN MessageLocationTable l ON l.message_id = m.id JOIN FolderTable f ON f.id = l.folder_id
WHERE f.name = '%s' AND l.remove_marker = 0 ORDER BY l.ordering`

// waitGeary waits up to limit for query to give want.
func waitGeary(t *testing.T, home, query, want string, limit time.Duration) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got, err = gearyDB(home, query); err == nil && got == want {
			return
		}
	}
	t.Fatalf("Geary's database: %s gave %q (%v) within %v, want %q", query, got, err, limit, want)
}

// TestGeary drives GNOME Geary (Debian's 43, under Xvfb) through a proxy
// that records its IMAP conversation. Its account is seeded as a
// geary.ini and its password is in a GNOME Keyring on a D-Bus session bus
// of the test's own (desktopSession). It checks what Geary keeps in its
// own database (geary.db): the messages of INBOX, subjects decoded, and
// the folder Grüße; a delivery and a flag set on another device, heard
// while it idles on INBOX. Keys typed in its window then star (Ctrl+D),
// mark read (Ctrl+Shift+U) and archive (Ctrl+K) the conversation it
// shows, and move the next to Trash (Delete); Geary does each move as UID
// COPY, STORE \Deleted and UID EXPUNGE. The device's store then holds
// each message where Geary put it, as delivered. Started again after
// another device flagged a message and expunged another, and a delivery,
// Geary shows each change from its database and the server's answers. The
// conversation holds no NO or BAD. About 20 s.
func TestGeary(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"geary", "Xvfb", "xdotool", "dbus-daemon", "gnome-keyring-daemon", "secret-tool", "sqlite3"} {
		needTool(t, tool)
	}
	const bound = 45 * time.Second
	r := newRig(t)
	a := r.device("a")
	r.Deliver([]byte(messages["plain"]))
	a.synced(r.Deliver([]byte(nestedMessage)))
	w := loginWire(t, a.addr)
	w.ok(`CREATE "Gr&APwA3w-e"`)
	proxy := newIMAPProxy(t, a.addr)

	home := t.TempDir()
	_, port := splitPort(t, proxy.addr)
	acct := filepath.Join(home, ".config", "geary", "account_01")
	settings := filepath.Join(home, ".config", "glib-2.0", "settings")
	for _, d := range []string{acct, settings} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(acct, "geary.ini"), []byte(fmt.Sprintf(gearyAccount, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(settings, "keyfile"), []byte(gearySettings), 0o600); err != nil {
		t.Fatal(err)
	}
	disp := xServer(t)
	session := startDesktopSession(t, home, disp)
	// Geary's libsecret schema (org.gnome.Geary) and attributes.
	session.storePassword("xdg:schema", "org.gnome.Geary", "proto", "IMAP", "host", "127.0.0.1", "login", "alice")
	g := exec.Command("geary")
	g.Env = session.env
	start := time.Now()
	startGroup(t, g, filepath.Join(home, "geary.log"), "Geary")

	// Geary logs in, lists the folders, reads INBOX into its database and
	// idles on it.
	proxy.idling(t, 0, "INBOX", bound)
	waitGeary(t, home, fmt.Sprintf(gearyFolderQuery, "INBOX"), "1|Lunch on Friday|0\n2|Grüße nested|0", bound)
	waitGeary(t, home, `SELECT count(*) FROM FolderTable WHERE name = 'Grüße'`, "1", bound)
	t.Logf("Geary started, read INBOX and idles on it after %v", time.Since(start).Round(time.Millisecond))

	// A delivery, and a flag set on another device: Geary hears both.
	mark := len(proxy.lines())
	a.synced(r.Deliver([]byte(messages["multipart"])))
	if proxy.waitFor(mark, 'S', regexp.MustCompile(`^\* 3 EXISTS$`), bound) < 0 {
		t.Fatalf("the delivery was not announced to Geary within %v", bound)
	}
	// The flag is set once Geary has read the delivery: Geary 43 drops a
	// flag change that reaches it inside the answer to its FETCH of the
	// new message (before the tagged OK, as RFC 3501 allows and Dovecot
	// sends it too), logging "missing=PROPERTIES", and its database
	// missed the flag until it read the folder again (docs/IMAP.md,
	// "Geary").
	waitGeary(t, home, fmt.Sprintf(gearyFolderQuery, "INBOX"),
		"1|Lunch on Friday|0\n2|Grüße nested|0\n3|Résumé attached|0", bound)
	b := r.device("b")
	b.synced(r.Head())
	wb := loginWire(t, b.addr)
	wb.ok("SELECT INBOX")
	wb.ok(`UID STORE 1 +FLAGS (\Flagged)`)
	a.synced(r.Head())
	waitGeary(t, home, fmt.Sprintf(gearyFolderQuery, "INBOX"),
		"1|Lunch on Friday|1\n2|Grüße nested|0\n3|Résumé attached|0", bound)

	// In Geary's window, on the conversation it shows.
	win := waitWindow(t, disp, "Inbox", bound)
	key := func(k string) {
		t.Helper()
		if _, err := xdotool(disp, "windowfocus", "--sync", win); err != nil {
			t.Fatalf("focusing Geary's window: %v", err)
		}
		if _, err := xdotool(disp, "key", k); err != nil {
			t.Fatalf("key %s: %v", k, err)
		}
	}
	// sent waits for the client's command matching re after mark, and
	// the server's OK to it, and returns its submatches.
	sent := func(what string, mark int, re *regexp.Regexp) []string {
		t.Helper()
		proxy.answeredOK(t, what, mark, re)
		return re.FindStringSubmatch(proxy.lines()[proxy.waitFor(mark, 'C', re, 0)].text)
	}
	mark = len(proxy.lines())
	key("ctrl+d")
	uid := sent("starring", mark, regexp.MustCompile(`(?i)^\S+ UID STORE (\d+) \+FLAGS(?:\.SILENT)? \(\\Flagged\)$`))[1]
	mark = len(proxy.lines())
	key("ctrl+shift+u")
	sent("marking read", mark, regexp.MustCompile(`(?i)^\S+ UID STORE `+uid+` \+FLAGS(?:\.SILENT)? \(\\Seen\)$`))
	mark = len(proxy.lines())
	key("ctrl+k")
	sent("archiving", mark, regexp.MustCompile(`(?i)^\S+ UID (COPY|MOVE) `+uid+` "?Archive"?$`))
	sent("archiving", mark, regexp.MustCompile(`(?i)^\S+ UID (EXPUNGE|MOVE) `+uid+`\b`))
	mark = len(proxy.lines())
	key("Delete")
	trashed := sent("deleting", mark, regexp.MustCompile(`(?i)^\S+ UID (?:COPY|MOVE) (\d+) "?Trash"?$`))[1]
	sent("deleting", mark, regexp.MustCompile(`(?i)^\S+ UID (EXPUNGE|MOVE) `+trashed+`\b`))
	t.Logf("Geary starred, read and archived message %s, and deleted message %s", uid, trashed)

	checkArchivedAndTrashed(t, a, "Geary", uid, trashed)

	// Geary keeps its database. While it is not running, another device
	// flags the message left in INBOX and expunges one Geary had read,
	// and a message is delivered: started again, Geary finds what went
	// (uid search uid 1:n) and what came, and shows each change.
	subjects := map[string]string{"1": "Lunch on Friday", "2": "Grüße nested", "3": "Résumé attached"}
	left := map[string]bool{"1": true, "2": true, "3": true}
	delete(left, uid)
	delete(left, trashed)
	var kept string
	for k := range left {
		kept = k
	}
	a.synced(r.Deliver([]byte("From: Dan <dan@example.net>\r\nSubject: Soon gone\r\nMessage-ID: <gone@example.net>\r\n\r\nx\r\n")))
	waitGeary(t, home, fmt.Sprintf(gearyFolderQuery, "INBOX"), kept+"|"+subjects[kept]+"|0\n4|Soon gone|0", bound)
	stopGroup(g)
	b.synced(r.Head())
	wb.ok("UID STORE " + kept + ` +FLAGS (\Flagged)`)
	wb.ok(`UID STORE 4 +FLAGS (\Deleted)`)
	wb.ok("UID EXPUNGE 4")
	a.synced(r.Deliver([]byte("From: Dan <dan@example.net>\r\nSubject: While away\r\nMessage-ID: <away@example.net>\r\n\r\nx\r\n")))
	a.synced(r.Head())
	mark = len(proxy.lines())
	again := exec.Command("geary")
	again.Env = session.env
	startGroup(t, again, filepath.Join(home, "geary-again.log"), "Geary, started again")
	proxy.idling(t, mark, "INBOX", bound)
	waitGeary(t, home, fmt.Sprintf(gearyFolderQuery, "INBOX"), kept+"|"+subjects[kept]+"|1\n5|While away|0", bound)
	checkConversation(t, proxy.lines())
}
