package imapd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"cspool/internal/testproc"
)

// quickstartMuttrc returns the lines docs/QUICKSTART.md gives NeoMutt
// for a server without STARTTLS, which TestNeomutt runs it with as
// printed.
func quickstartMuttrc(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "QUICKSTART.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "\n```\nset ssl_")
	if !ok {
		t.Fatal("docs/QUICKSTART.md has no block of NeoMutt's settings (starting \"set ssl_\")")
	}
	block, _, _ = strings.Cut("set ssl_"+block, "\n```")
	return block
}

// TestNeomutt drives neomutt in tmux, as a person would, against a
// mailbox with nested folders, a keyword and a multipart message: it
// learns the delimiter with LIST "" "", shows the keyword, decodes the
// quoted-printable part and opens a nested folder; its protocol log must
// hold no NO or BAD. Its muttrc holds docs/QUICKSTART.md's lines for a
// server without STARTTLS as printed.
func TestNeomutt(t *testing.T) {
	t.Parallel()
	neomutt := needTool(t, "neomutt")
	d, w := terminalRig(t)
	w.ok("CREATE Work/2025/Q1/")
	w.ok("SELECT INBOX")
	w.ok("STORE 1 +FLAGS (work-tag)")
	w.ok("LOGOUT")

	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(d.addr)
	rc := filepath.Join(dir, "muttrc")
	conf := fmt.Sprintf(`set folder="imap://alice@%s:%s/"
set imap_pass="%s"
set spoolfile="+INBOX"
%s
set mail_check=60
set timeout=0
set header_cache=""
set message_cachedir=""
set index_format="%%4C %%-24.24s [%%g]"
set sort=date
set wait_key=no
set mailcap_path=/dev/null
set quit=yes
`, host, port, testPassword, quickstartMuttrc(t))
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "log")
	tm := startTmux(t, []string{"TERM=xterm", "HOME=" + dir}, fmt.Sprintf("%s -n -F %s -d 5 -l %s", neomutt, rc, logPath))
	screen, waitFor, keys := tm.screen, tm.waitFor, tm.keys

	// The index: both messages, the keyword as a tag.
	waitFor("Lunch on Friday")
	waitFor("[work-tag]")
	waitFor("Grüße nested")
	// Open the multipart message: its quoted-printable part, decoded.
	keys("2", "Enter")
	time.Sleep(300 * time.Millisecond)
	keys("Enter")
	waitFor("café crème brûlée")
	keys("q")
	waitFor("Lunch on Friday")
	// A nested folder.
	keys("c")
	time.Sleep(300 * time.Millisecond)
	keys("C-u", "=Work/2025/Q1", "Enter")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(testproc.ReadRotated(t, logPath), `SELECT "Work/2025/Q1"`) {
		if time.Now().After(deadline) {
			t.Fatalf("neomutt did not select Work/2025/Q1; the screen:\n%s", screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
	keys("q")

	log := testproc.ReadRotated(t, logPath)
	if !strings.Contains(log, `LIST "" ""`) || !strings.Contains(log, `< * LIST (\Noselect) "/" ""`) {
		t.Errorf("neomutt did not learn the delimiter with LIST \"\" \"\"; its LIST lines: %q",
			regexp.MustCompile(`(?m)^.*LIST.*$`).FindAllString(log, 10))
	}
	bad := regexp.MustCompile(`(?m)< a[0-9]+ (NO|BAD) .*$`)
	if m := bad.FindAllString(log, 5); len(m) > 0 {
		t.Errorf("NO or BAD answers in neomutt's conversation: %q", m)
	}
}
