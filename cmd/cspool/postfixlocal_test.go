package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestPostfixLocalRecipes runs docs/DELIVERY.md's three recipes for
// Postfix's own routing as printed, each in a Postfix of its own: "All
// local mailboxes through LMTP" (mailbox_transport) for a system account,
// "Routing with transport_maps" (its main.cf line and its
// /etc/postfix/transport, mounted for the instance alone) for a domain and
// an address, and the local(8) recipe under "Exit status", whose
// mailbox_command runs `cspool deliver` as the recipient. Only the LMTP
// address, the files' paths and the binary's are the test's; what an
// instance needs besides the recipe (the domains it takes, a local
// service) is said at each. The system account is nobody, a cspool user
// of that name; the spool server runs as nobody too, so that the spool
// nobody's mailbox_command writes is its own (the recipe's note: the
// recipient must read the spool key and write the spool).
func TestPostfixLocalRecipes(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	postfix := needPostfix(t)
	python := needTool(t, "python3", "python3")
	setpriv := needTool(t, "setpriv", "util-linux")
	built := buildServerBinary(t)
	section := deliveryDocSections(t)
	const docLMTP = "lmtp:inet:127.0.0.1:2424"
	server := section("## Postfix")
	local := section("### All local mailboxes through LMTP")
	if len(local) != 1 || !strings.HasPrefix(local[0], "mailbox_transport = "+docLMTP) {
		t.Fatalf("docs/DELIVERY.md, All local mailboxes through LMTP: want the one main.cf line, got %q", local)
	}
	routing := section("### Routing with transport_maps")
	if len(routing) != 2 || !strings.HasPrefix(routing[0], "transport_maps = texthash:/etc/postfix/transport") ||
		!strings.Contains(routing[1], docLMTP) {
		t.Fatalf("docs/DELIVERY.md, Routing with transport_maps: want the main.cf line and the transport table, got %q", routing)
	}
	var command string
	for _, b := range section("### Exit status (sysexits)") {
		if strings.HasPrefix(b, "mailbox_command = ") {
			command = strings.TrimSpace(b)
		}
	}
	const docBin = "/usr/local/bin/cspool "
	if !strings.HasPrefix(command, "mailbox_command = "+docBin) {
		t.Fatalf("docs/DELIVERY.md, Exit status: want the local(8) recipe's mailbox_command running %s, got %q", docBin, command)
	}

	// The spool's files, the spool server's and nobody's: nobody runs
	// the server and reads the key and the users file.
	work := postfixWorkDir(t)
	env := os.Environ()
	alice, nobody, spoolK := mustKey(t), mustKey(t), mustKey(t)
	for name, k := range map[string]*keys.SecretKey{"alice": alice, "nobody": nobody, "spool": spoolK} {
		if err := keys.WriteFiles(k, filepath.Join(work, name+".sec"), filepath.Join(work, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, filepath.Join(work, "users"), map[string]*keys.SecretKey{"alice": alice, "nobody": nobody})
	if err := os.Mkdir(filepath.Join(work, "spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"spool", "spool.sec", "users"} {
		if err := os.Chown(filepath.Join(work, f), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(work, "message.eml"), []byte(postfixMessage), 0o644); err != nil {
		t.Fatal(err)
	}
	// The binary where nobody may run it, as /usr/local/bin/cspool.
	bin := filepath.Join(work, "cspool")
	if b, err := os.ReadFile(built); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	httpPort, lmtpPort := freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", lmtpPort)
	paths := []string{"/etc/cspool/users", filepath.Join(work, "users"), "/var/lib/cspool", filepath.Join(work, "spool"),
		"/etc/cspool/spool.sec", filepath.Join(work, "spool.sec")}
	srv := startRecipe(t, "cspool server", strings.TrimSpace(server[0]), work, env, append([]string{
		"cspool server ", fmt.Sprintf("%s --reuid=nobody --regid=nogroup --clear-groups %s server --port %d ", setpriv, bin, httpPort),
		"127.0.0.1:2424", lmtpAddr}, paths...))
	waitHealthy(t, spoolURL, srv)
	if fi, err := os.Stat(filepath.Join(work, "spool", "spool.db")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Fatalf("the spool server does not run as nobody: its database %v", err)
	}
	daemon := func(user string) (port int, password string) {
		port = freePort(t)
		d := startProc(t, "cspool imap-server "+user, work, env, bin, "imap-server", "--user", user,
			"--user-key", user+".sec", "--user-public-key", user+".pub", "--spool-key", "spool.pub",
			"--db", user+".db", "--port", fmt.Sprint(port), "--status-addr", "", "--spool-server", spoolURL)
		t.Cleanup(func() { d.stop(t, syscall.SIGTERM, 30*time.Second) })
		return port, daemonPassword(t, d.waitOutput(t, "state:", 30*time.Second))
	}
	alicePort, alicePassword := daemon("alice")
	nobodyPort, nobodyPassword := daemon("nobody")

	// deliver starts a Postfix with recipe (and its files, in the
	// /etc/postfix mounted for it), sends the message to each of rcpts
	// and waits for Postfix to have handed each on.
	deliver := func(name, recipe string, files map[string]string, rcpts ...string) {
		t.Helper()
		pfWork := postfixWorkDir(t)
		smtpPort := freePort(t)
		pf := startPostfixWith(t, postfix, pfWork, smtpPort, recipe, files, filepath.Join(pfWork, "etc-postfix"))
		for _, rcpt := range rcpts {
			out := strings.TrimSpace(runCmd(t, work, env, "", python, "-c", smtplibSend, "127.0.0.1", fmt.Sprint(smtpPort),
				"bob@example.org", rcpt, filepath.Join(work, "message.eml")))
			if out != "SENT" {
				t.Fatalf("%s: SMTP to %s: %q, want SENT", name, rcpt, out)
			}
		}
		for _, rcpt := range rcpts {
			pf.waitLog(t, "to=<"+rcpt+">", 60*time.Second)
		}
		pf.stop(t)
		b, _ := os.ReadFile(pf.maillog)
		if got := strings.Count(string(b), "status=sent"); got != len(rcpts) || strings.Contains(string(b), "status=bounced") ||
			strings.Contains(string(b), "status=deferred") {
			t.Fatalf("%s: Postfix handed on %d of %d messages, or bounced or deferred one:\n%s", name, got, len(rcpts), b)
		}
	}
	// What a local recipient needs of the instance besides the recipe:
	// a local domain, system accounts for recipients, no aliases file,
	// and local(8) (the test instance has none of them by default).
	localDomain := []string{"mydestination = localhost", "local_recipient_maps = proxy:unix:passwd.byname", "alias_maps =", "alias_database ="}
	localService := "local     unix  - n n - - local\n"

	// 1. mailbox_transport: nobody, a system account, through LMTP.
	deliver("mailbox_transport", strings.Join(append(localDomain, strings.Replace(local[0], docLMTP, "lmtp:inet:"+lmtpAddr, 1)), "\n"),
		map[string]string{"master.cf+": localService}, "nobody@localhost")
	// 2. transport_maps: example.org and alice@example.net to cspool,
	// the domains accepted as relay domains (the recipe's note).
	deliver("transport_maps", "relay_domains = example.org, example.net\n"+routing[0],
		map[string]string{"transport": strings.ReplaceAll(routing[1], docLMTP, "lmtp:inet:"+lmtpAddr)},
		"alice@example.org", "alice@example.net")
	// 3. mailbox_command: cspool deliver as nobody, into the spool
	// straight, beside the server.
	deliver("mailbox_command", strings.Join(append(localDomain, strings.NewReplacer(append([]string{docBin, bin + " "}, paths...)...).Replace(command)), "\n"),
		map[string]string{"master.cf+": localService}, "nobody@localhost")

	check := func(port int, user, password string, rcpts ...string) {
		t.Helper()
		msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(port), user, password, len(rcpts))
		for i, m := range msgs {
			if !bytes.HasSuffix(m, []byte(postfixMessage)) {
				t.Errorf("%s's message %d does not end with the message sent:\n%q", user, i+1, m)
			}
			if want := "Delivered-To: " + rcpts[i] + "\r\n"; !bytes.Contains(m, []byte(want)) {
				t.Errorf("%s's message %d lacks %q:\n%q", user, i+1, want, m)
			}
		}
	}
	check(alicePort, "alice", alicePassword, "alice@example.org", "alice@example.net")
	check(nobodyPort, "nobody", nobodyPassword, "nobody@localhost", "nobody@localhost")
	if out, err := exec.Command("ls", "-ln", filepath.Join(work, "spool")).CombinedOutput(); err == nil && t.Failed() {
		t.Logf("the spool's files:\n%s", out)
	}
	srv.stop(t, syscall.SIGTERM, 40*time.Second)
}
