package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestPostfixVirtualDomain runs docs/DELIVERY.md's "A virtual domain" as
// printed: the spool server's command of "Postfix" above it, then a
// Postfix whose main.cf holds the virtual domain's lines and whose
// /etc/postfix/cspool-recipients is the list printed (mounted for this
// instance alone). Only the LMTP address, the server's files and its port
// are the test's. Mail for alice arrives over IMAP; a user not in the
// list is refused during the SMTP dialogue, with no bounce.
func TestPostfixVirtualDomain(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	postfix := needPostfix(t)
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	section := deliveryDocSections(t)
	server := section("## Postfix")
	virtual := section("### A virtual domain")
	if len(virtual) < 2 || !strings.HasPrefix(virtual[0], "virtual_mailbox_domains") || !strings.HasPrefix(virtual[1], "alice@example.org") {
		t.Fatalf("docs/DELIVERY.md, A virtual domain: want the main.cf lines, then the recipients' list; got %q", virtual)
	}
	const docLMTP, docMap = "lmtp:inet:127.0.0.1:2424", "texthash:/etc/postfix/cspool-recipients"
	if !strings.Contains(virtual[0], docLMTP) || !strings.Contains(virtual[0], docMap) {
		t.Fatalf("docs/DELIVERY.md's virtual domain %q lacks %s or %s", virtual[0], docLMTP, docMap)
	}

	work := postfixWorkDir(t)
	env := os.Environ()
	alice, spoolK := mustKey(t), mustKey(t)
	if err := keys.WriteFiles(alice, filepath.Join(work, "alice.sec"), filepath.Join(work, "alice.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(spoolK, filepath.Join(work, "spool.sec"), filepath.Join(work, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writeUsersFile(t, filepath.Join(work, "users"), map[string]*keys.SecretKey{"alice": alice})
	if err := os.Mkdir(filepath.Join(work, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "message.eml"), []byte(postfixMessage), 0o600); err != nil {
		t.Fatal(err)
	}
	httpPort, imapPort, lmtpPort, smtpPort := freePort(t), freePort(t), freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", lmtpPort)
	srv := startRecipe(t, "cspool server", strings.TrimSpace(server[0]), work, env, []string{
		"cspool server ", bin + fmt.Sprintf(" server --port %d ", httpPort), "/etc/cspool/users", "users",
		"/var/lib/cspool", "spool", "/etc/cspool/spool.sec", "spool.sec", "127.0.0.1:2424", lmtpAddr})
	waitHealthy(t, spoolURL, srv)
	daemon := startProc(t, "cspool imap-server", work, env, bin, "imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub",
		"--db", "alice.db", "--port", fmt.Sprint(imapPort), "--status-addr", "", "--spool-server", spoolURL)
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))

	pf := startPostfixWith(t, postfix, work, smtpPort, strings.Replace(virtual[0], docLMTP, "lmtp:inet:"+lmtpAddr, 1),
		map[string]string{"cspool-recipients": virtual[1]}, filepath.Join(work, "etc-postfix"))
	send := func(rcpt string) string {
		t.Helper()
		return strings.TrimSpace(runCmd(t, work, env, "", python, "-c", smtplibSend, "127.0.0.1", fmt.Sprint(smtpPort),
			"bob@example.org", rcpt, filepath.Join(work, "message.eml")))
	}
	if got := send("alice@example.org"); got != "SENT" {
		t.Fatalf("SMTP to alice@example.org: %q, want SENT", got)
	}
	msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 1)
	checkPostfixCopy(t, msgs[0])
	if got := send("carol@example.org"); !strings.HasPrefix(got, "REFUSED 550 ") {
		t.Errorf("SMTP to carol@example.org, who is not in the list: %q, want REFUSED 550", got)
	}
	pf.stop(t)
	if b, _ := os.ReadFile(pf.maillog); strings.Contains(string(b), "status=bounced") {
		t.Errorf("Postfix bounced a message; the recipe refuses unknown users at RCPT:\n%s", b)
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	srv.stop(t, syscall.SIGTERM, 40*time.Second)
}

// deliveryDocSections reads docs/DELIVERY.md and returns a function that
// gives the code blocks of the section under a heading, up to the next
// "###" heading. The "## Postfix" section starts with the spool server's
// command, which the recipes' tests start.
func deliveryDocSections(t *testing.T) func(heading string) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/DELIVERY.md")
	if err != nil {
		t.Fatal(err)
	}
	section := func(heading string) []string {
		t.Helper()
		_, s, ok := strings.Cut(string(doc), "\n"+heading+"\n")
		if !ok {
			t.Fatalf("docs/DELIVERY.md has no %q", heading)
		}
		s, _, _ = strings.Cut(s, "\n### ")
		return codeBlocks(s)
	}
	if server := section("## Postfix"); len(server) == 0 || !strings.HasPrefix(server[0], "cspool server ") {
		t.Fatalf("docs/DELIVERY.md, Postfix: want the server's command first, got %q", server)
	}
	return section
}
