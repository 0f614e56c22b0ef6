package imapd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestAlpine drives Alpine (Debian's, built on the UW c-client library) in
// tmux, as a person would, through a proxy that records its IMAP
// conversation: it logs in with the password typed at its prompt, shows
// both messages, flags one and deletes and expunges it, opens the
// multipart one and shows its quoted-printable part decoded, saves it to
// Archive (a COPY, then deleted and expunged), and lists the folders, one
// whose name holds "&"; another session then finds each change, and the
// conversation holds no NO or BAD.
func TestAlpine(t *testing.T) {
	t.Parallel()
	alpine := needTool(t, "alpine")
	d, w := terminalRig(t)
	w.ok(`CREATE "Bills &- Tax"`)
	proxy := newIMAPProxy(t, d.addr)

	home := t.TempDir()
	server := fmt.Sprintf("{%s/user=alice/notls}", proxy.addr)
	pinerc := filepath.Join(home, "pinerc")
	conf := fmt.Sprintf("personal-name=Alice\nuser-domain=example.net\ninbox-path=%sINBOX\nfolder-collections=%s[]\nlast-version-used=2.26\nfeature-list=quit-without-confirm\n", server, server)
	if err := os.WriteFile(pinerc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tm := startTmux(t, []string{"TERM=xterm", "HOME=" + home, "LANG=C.UTF-8"}, alpine+" -p "+pinerc+" -i")
	waitAny, keys := tm.waitFor, tm.keys
	answered := func(what string, mark int, sent *regexp.Regexp) {
		t.Helper()
		proxy.answeredOK(t, what, mark, sent)
	}

	// The greeting shown once, then the password prompt.
	waitAny(`press "E"`)
	keys("E")
	waitAny("ENTER PASSWORD")
	keys(testPassword, "Enter")
	if waitAny("Preserve password", "Lunch on Friday") == "Preserve password" {
		keys("n")
	}
	waitAny("Lunch on Friday")
	waitAny("Grüße nested")

	// Message 1: flag it (Important), delete it, expunge.
	mark := len(proxy.lines())
	keys("*")
	waitAny("Important")
	keys("Enter")
	answered("flag", mark, regexp.MustCompile(`(?i)^\S+ (UID )?STORE \S+ \+FLAGS(\.SILENT)? \(\\Flagged\)`))
	mark = len(proxy.lines())
	keys("d")
	answered("delete", mark, regexp.MustCompile(`(?i)^\S+ (UID )?STORE \S+ \+FLAGS(\.SILENT)? \(\\Deleted\)`))
	keys("x")
	waitAny("Expunge 1 message")
	mark = len(proxy.lines())
	keys("y")
	answered("expunge", mark, regexp.MustCompile(`(?i)^\S+ (UID )?EXPUNGE`))

	// The multipart message, now the only one: its first part decoded.
	waitAny("Message 1 of 1")
	keys("Enter")
	waitAny("café crème brûlée")
	keys("<")
	waitAny("Message 1 of 1")
	// Saved to Archive: a COPY, then deleted; expunged.
	keys("s")
	waitAny("SAVE Msg #1")
	mark = len(proxy.lines())
	keys("C-u", "Archive", "Enter")
	answered("save", mark, regexp.MustCompile(`(?i)^\S+ (UID )?(COPY|MOVE) \S+ "?Archive"?$`))
	keys("x")
	waitAny("Expunge 1 message")
	mark = len(proxy.lines())
	keys("y")
	answered("expunge after save", mark, regexp.MustCompile(`(?i)^\S+ (UID )?EXPUNGE`))
	// The folder list.
	keys("<")
	waitAny("Bills & Tax")

	expectUntagged(t, "STATUS INBOX", w.ok("STATUS INBOX (MESSAGES)"), "* STATUS INBOX (MESSAGES 0)")
	w.ok("SELECT Archive")
	u := w.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if len(u) != 1 || !strings.Contains(u[0], "Gr=C3=BC=C3=9Fe") {
		t.Errorf("Archive after Alpine's save: %q", u)
	}
	checkConversation(t, proxy.lines())
}
