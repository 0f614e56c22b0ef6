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

// evolutionSources are the account's ESource key files (evolution-data-
// server's source registry reads them from ~/.config/evolution/sources/):
// the IMAP account (camel's imapx back end, plain text on loopback, every
// folder shown, not only the subscribed ones, the server's Trash and Junk
// as Evolution's, Archive as its archive folder), its identity and a
// transport that is never used.
var evolutionSources = map[string]string{
	"cspool.source": `[Data Source]
DisplayName=cspool
Enabled=true
Parent=

[Offline]
StaySynchronized=false

[Refresh]
Enabled=true
IntervalMinutes=1

[Mail Account]
BackendName=imapx
IdentityUid=cspool-identity
ArchiveFolder=folder://cspool/Archive
NeedsInitialSetup=false

[Authentication]
Host=127.0.0.1
Method=
Port=%d
RememberPassword=true
User=alice

[Security]
Method=none

[Imapx Backend]
UseIdle=true
UseSubscriptions=false
CheckAll=true
UseRealTrashPath=true
RealTrashPath=Trash
UseRealJunkPath=true
RealJunkPath=Junk
`,
	"cspool-identity.source": `[Data Source]
DisplayName=Alice
Enabled=true
Parent=cspool

[Mail Identity]
Address=alice@example.net
Name=Alice

[Mail Submission]
TransportUid=cspool-transport
`,
	"cspool-transport.source": `[Data Source]
DisplayName=cspool
Enabled=true
Parent=cspool

[Mail Transport]
BackendName=smtp

[Authentication]
Host=127.0.0.1
Port=9

[Security]
Method=none
`,
}

// evolutionSettings are GSettings (the keyfile back end) that keep
// Evolution's first-run questions away.
const evolutionSettings = `[org/gnome/evolution/mail]
prompt-check-if-default-mailer=false
show-startup-wizard=false
image-loading-policy='never'

[org/gnome/evolution/shell]
start-offline=false
`

// evolutionCache reads Evolution's cache of the account's folders (camel's
// folders.db, SQLite) with the sqlite3 program: query's rows, one a line,
// the columns separated by "|".
func evolutionCache(t *testing.T, home, query string) (string, error) {
	t.Helper()
	db := filepath.Join(home, ".cache", "evolution", "mail", "cspool", "folders.db")
	if _, err := os.Stat(db); err != nil {
		return "", err
	}
	out, err := exec.Command("sqlite3", "-readonly", db, query).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// waitCache waits up to limit for query to give want.
func waitCache(t *testing.T, home, query, want string, limit time.Duration) {
	t.Helper()
	var got string
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if got, err = evolutionCache(t, home, query); err == nil && got == want {
			return
		}
	}
	t.Fatalf("Evolution's cache: %s gave %q (%v) within %v, want %q", query, got, err, limit, want)
}

// TestEvolution drives GNOME Evolution (Debian's package, camel's imapx
// back end) under Xvfb, with its account seeded as evolution-data-server
// source files and the password in a GNOME Keyring of the test's own,
// through a proxy that records its IMAP conversation. It checks what
// Evolution keeps in its own cache (camel's folders.db): the messages of
// INBOX, subjects decoded, the two multipart ones with attachments, and
// of Grüße, listed in UTF-8 after ENABLE UTF8=ACCEPT; the flags another
// device sets, heard while it idles. Keys typed in its window then open
// the next unread message and delete it, which moves it to Trash, where
// the other device finds it whole. The conversation holds no NO or BAD.
// Slow (about 72 s: Evolution reads the folders other than INBOX
// at its refresh, once a minute) and its packages are large, so it runs
// only with CSPOOL_EVOLUTION=1.
func TestEvolution(t *testing.T) {
	t.Parallel()
	if os.Getenv("CSPOOL_EVOLUTION") != "1" {
		t.Skip("set CSPOOL_EVOLUTION=1 to drive Evolution (apt-get install evolution xvfb xdotool gnome-keyring libsecret-tools sqlite3)")
	}
	for _, tool := range []string{"evolution", "Xvfb", "xdotool", "dbus-daemon", "gnome-keyring-daemon", "secret-tool", "sqlite3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("CSPOOL_EVOLUTION=1 but %s is missing: apt-get install evolution xvfb xdotool gnome-keyring libsecret-tools sqlite3", tool)
		}
	}
	const bound = 60 * time.Second
	r := newRig(t)
	a := r.device("a")
	r.Deliver([]byte(messages["plain"]))
	r.Deliver([]byte(nestedMessage))
	a.synced(r.Deliver([]byte(messages["multipart"])))
	w := loginWire(t, a.addr)
	w.ok(`CREATE "Gr&APwA3w-e"`)
	w.ok("CREATE Work/2025")
	m := messages["plain"]
	w.ok(fmt.Sprintf("APPEND \"Gr&APwA3w-e\" {%d}\r\n%s", len(m), m))
	proxy := newIMAPProxy(t, a.addr)

	home := t.TempDir()
	_, port := splitPort(t, proxy.addr)
	sources := filepath.Join(home, ".config", "evolution", "sources")
	settings := filepath.Join(home, ".config", "glib-2.0", "settings")
	for _, d := range []string{sources, settings} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range evolutionSources {
		if strings.Contains(text, "%d") {
			text = fmt.Sprintf(text, port)
		}
		if err := os.WriteFile(filepath.Join(sources, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(settings, "keyfile"), []byte(evolutionSettings), 0o600); err != nil {
		t.Fatal(err)
	}
	disp := xServer(t)
	session := startDesktopSession(t, home, disp)
	session.storePassword("e-source-uid", "cspool", "eds-origin", "evolution")

	evo := exec.Command("evolution", "--component=mail")
	evo.Env = session.env
	start := time.Now()
	startGroup(t, evo, filepath.Join(home, "evolution.log"), "Evolution")

	// Evolution logs in, enables UTF8=ACCEPT, lists the folders (Grüße in
	// UTF-8) and reads INBOX, and every other folder, into its cache.
	if proxy.waitFor(0, 'C', regexp.MustCompile(`(?i)^\S+ ENABLE .*UTF8=ACCEPT`), bound) < 0 {
		t.Errorf("Evolution did not enable UTF8=ACCEPT within %v", bound)
	}
	if proxy.waitFor(0, 'S', regexp.MustCompile(`^\* LIST .* "/" "Grüße"$`), bound) < 0 {
		t.Fatalf("Evolution was not listed Grüße within %v", bound)
	}
	waitCache(t, home, `SELECT subject, attachment FROM "INBOX" ORDER BY CAST(uid AS INTEGER)`,
		"Lunch on Friday|0\nGrüße nested|1\nRésumé attached|1", bound)
	// Grüße is read at Evolution's first refresh, a minute after it
	// started: on this machine 55 to 60 s after INBOX was cached, at the
	// edge of the bound: the wait failed two runs in three here.
	waitCache(t, home, `SELECT subject FROM "Grüße"`, "Lunch on Friday", 2*bound)
	t.Logf("Evolution started, logged in and cached INBOX and Grüße after %v", time.Since(start).Round(time.Millisecond))
	// That refresh SELECTs every folder in turn on the connection that
	// idles, then INBOX again, and idles. A flag set on another device
	// meanwhile is not heard (it is not INBOX's session then, and a
	// SELECT tells no flags without CONDSTORE): Evolution reads it at
	// its next refresh, a minute later, past the bound below (a failure
	// one run in three here). The flags are set once it idles on INBOX.
	proxy.idlingNow(t, "INBOX", bound)

	// Another device flags message 1 and marks message 2 read: Evolution
	// hears it (it idles on INBOX) and keeps it.
	b := r.device("b")
	b.synced(r.Head())
	cb := loginWire(t, b.addr)
	cb.ok("SELECT INBOX")
	cb.ok(`UID STORE 1 +FLAGS (\Flagged)`)
	cb.ok(`UID STORE 2 +FLAGS (\Seen)`)
	a.synced(r.Head())
	waitCache(t, home, `SELECT uid, important, read FROM "INBOX" ORDER BY CAST(uid AS INTEGER)`, "1|1|0\n2|0|1\n3|0|0", bound)

	// In Evolution's window: INBOX shown (a folder: URI, which Evolution's
	// command line hands to the running Evolution), the next unread
	// message opened (.), then deleted (Delete: a move to the server's
	// Trash).
	out, err := xdotool(disp, "search", "--name", "Mail")
	if err != nil || out == "" {
		t.Fatalf("no Evolution window: %v", err)
	}
	win := strings.Fields(out)[0]
	xdotool(disp, "windowsize", win, "1280", "900")
	session.run("evolution folder://cspool/INBOX")
	time.Sleep(2 * time.Second)
	xdotool(disp, "windowfocus", "--sync", win)
	mark := len(proxy.lines())
	xdotool(disp, "key", "period")
	i := proxy.waitFor(mark, 'C', regexp.MustCompile(`(?i)^\S+ UID FETCH \d+ \(?BODY\.PEEK\[\]`), bound)
	if i < 0 {
		t.Fatalf("Evolution did not fetch the message it opened")
	}
	time.Sleep(3 * time.Second)
	mark = len(proxy.lines())
	xdotool(disp, "key", "Delete")
	moveRE := regexp.MustCompile(`(?i)^\S+ UID MOVE (\d+) "?Trash"?$`)
	proxy.answeredOK(t, "Delete", mark, moveRE)
	moved := moveRE.FindStringSubmatch(proxy.lines()[proxy.waitFor(mark, 'C', moveRE, 0)].text)[1]
	t.Logf("Evolution opened and deleted message %s: %q", moved, proxy.lines()[i].text)
	// The other device finds the message in Trash, whole.
	b.synced(r.Head())
	sent := map[string]string{"1": messages["plain"], "2": nestedMessage, "3": messages["multipart"]}
	list, raw := scanBox(t, b, "Trash")
	if len(raw) != 1 {
		t.Fatalf("Trash after Evolution deleted message %s: %s, want that one message", moved, list)
	}
	for _, m := range raw {
		if string(m) != sent[moved] {
			t.Errorf("Trash after Evolution deleted message %s holds %q, want %q", moved, m, sent[moved])
		}
	}
	if inbox, _ := scanBox(t, b, "INBOX"); strings.Count(inbox, "[") != 2 || strings.Contains(inbox, moved+"[") {
		t.Errorf("INBOX after Evolution moved message %s to Trash: %s", moved, inbox)
	}
	checkConversation(t, proxy.lines())
}

// splitPort is the host and port number of addr.
func splitPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		t.Fatalf("port of %s: %v", addr, err)
	}
	return addr[:i], port
}
