package imapd

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAerc drives aerc (Debian's, a terminal client built on go-imap v1)
// in tmux, as a person would, through a proxy that records its IMAP
// conversation: it lists the folders (a nested one, one whose name holds
// "&"), shows both messages, opens the multipart one and shows its
// quoted-printable part decoded, flags it and moves it to Archive, and
// deletes the other; another session then finds each change, and the
// conversation holds no NO or BAD.
func TestAerc(t *testing.T) {
	t.Parallel()
	aerc := needTool(t, "aerc")
	d, w := terminalRig(t)
	w.ok("CREATE Work/2025/")
	w.ok(`CREATE "Bills &- Tax"`)
	proxy := newIMAPProxy(t, d.addr)

	home := t.TempDir()
	conf := filepath.Join(home, ".config", "aerc")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	source := url.URL{Scheme: "imap+insecure", User: url.UserPassword("alice", testPassword), Host: proxy.addr}
	accounts := fmt.Sprintf("[cspool]\nsource = %s\noutgoing = /bin/true\ndefault = INBOX\nfrom = Alice <alice@example.net>\n", source.String())
	if err := os.WriteFile(filepath.Join(conf, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}
	tm := startTmux(t, []string{"TERM=xterm", "HOME=" + home, "XDG_CONFIG_HOME=" + filepath.Join(home, ".config")}, aerc)
	waitFor, keys := tm.waitFor, tm.keys
	// command types an aerc command and waits for the server's OK to the
	// client command it leads to.
	command := func(cmd string, sent *regexp.Regexp) {
		t.Helper()
		mark := len(proxy.lines())
		keys(":"+cmd, "Enter")
		proxy.answeredOK(t, ":"+cmd, mark, sent)
	}

	// The folders and the index.
	waitFor("Bills & Tax")
	waitFor("Work")
	waitFor("Lunch on Friday")
	waitFor("Grüße nested")
	// The newest message is selected: open it, its first part decoded.
	keys("Enter")
	waitFor("café crème brûlée")
	keys("q")
	waitFor("Lunch on Friday")
	command("flag", regexp.MustCompile(`(?i)^\S+ UID STORE \S+ \+FLAGS(\.SILENT)? \(\\Flagged\)`))
	command("move Archive", regexp.MustCompile(`(?i)^\S+ UID (MOVE|COPY) \S+ "?Archive"?$`))
	waitFor("Lunch on Friday")
	command("delete", regexp.MustCompile(`(?i)^\S+ (UID )?(EXPUNGE|MOVE)`))

	expectUntagged(t, "STATUS INBOX", w.ok("STATUS INBOX (MESSAGES)"), "* STATUS INBOX (MESSAGES 0)")
	w.ok("SELECT Archive")
	u := w.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if got := strings.Join(u, ""); len(u) != 1 || !strings.Contains(got, `\Flagged`) || !strings.Contains(got, "Gr=C3=BC=C3=9Fe") {
		t.Errorf("Archive after aerc's flag and move: %q", u)
	}
	checkConversation(t, proxy.lines())
}
