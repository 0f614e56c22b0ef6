package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// postfixMessage is sent into Postfix over SMTP: 8-bit UTF-8, MIME, CRLF, a
// leading dot. It has Date, Message-ID and From so that Postfix adds none.
const postfixMessage = "From: Bob Example <bob@example.org>\r\n" +
	"To: Alice <alice@example.org>\r\n" +
	"Subject: =?UTF-8?Q?Through_Postfix_=E2=9C=89?=\r\n" +
	"Date: Wed, 26 Nov 2025 10:00:00 +0100\r\n" +
	"Message-ID: <postfix-e2e-1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Gr\xc3\xbc\xc3\x9fe from Postfix, through LMTP, into the log.\r\n" +
	".a line that starts with a dot\r\n" +
	"\r\n" +
	"Bob\r\n"

// smtplibSend sends the file PATH from SENDER to RCPT and prints SENT, or
// REFUSED CODE TEXT when the recipient is refused; with a sixth argument
// "smtputf8", with SMTPUTF8 on MAIL FROM (a sender's address in UTF-8).
const smtplibSend = `
import smtplib, sys
host, port, sender, rcpt, path = sys.argv[1:6]
opts = ["SMTPUTF8"] if sys.argv[6:] == ["smtputf8"] else []
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.example.org")
try:
    s.sendmail(sender, [rcpt], open(path, "rb").read(), mail_options=opts)
    print("SENT")
except smtplib.SMTPRecipientsRefused as e:
    code, text = e.recipients[rcpt]
    print("REFUSED %d %s" % (code, text.decode(errors="replace")))
s.quit()
`

// eaiMessage is sent into Postfix with SMTPUTF8 (RFC 6531): its sender's
// address, its From and its Subject are UTF-8, unencoded (RFC 6532).
const eaiMessage = "From: J\xc3\xb6ran <j\xc3\xb6ran@example.org>\r\n" +
	"To: Alice <alice@example.org>\r\n" +
	"Subject: Gr\xc3\xbc\xc3\x9fe, unencoded\r\n" +
	"Date: Wed, 26 Nov 2025 11:00:00 +0100\r\n" +
	"Message-ID: <postfix-eai-1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"An address in UTF-8, through Postfix and LMTP.\r\n"

// TestPostfix sends mail into a throwaway Postfix instance over SMTP, whose
// main.cf holds docs/POSTFIX.md's main.cf exactly as printed there; Postfix
// routes example.org to cspool's LMTP listener (transport_maps), and the
// message is read back through cspool imap-server with Python's imaplib. It
// also checks recipient validation (reject_unverified_recipient answered by
// the listener's 550 at RCPT) for a client in mynetworks, with no bounce,
// and that mail queued while the spool server is down arrives after it is
// back. A message whose sender's address is UTF-8 (SMTPUTF8, which the
// instance offers as Debian's Postfix does) is delivered, not bounced.
func TestPostfix(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	postfix := needPostfix(t)
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
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
	if err := os.WriteFile(filepath.Join(work, "message.eml"), []byte(postfixMessage), 0o600); err != nil {
		t.Fatal(err)
	}
	httpPort, imapPort, lmtpPort, smtpPort := freePort(t), freePort(t), freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", lmtpPort)
	// The server's command of docs/POSTFIX.md as printed, its files, its
	// LMTP address and its port this test's.
	serverCmd := postfixServerCommand(t)
	serverPaths := []string{"cspool server ", bin + fmt.Sprintf(" server --port %d ", httpPort), "/etc/cspool/users", "users",
		"/var/lib/cspool", "spool", "/etc/cspool/spool.sec", "spool.sec", "127.0.0.1:2424", lmtpAddr}
	server := startRecipe(t, "cspool server", serverCmd, work, env, serverPaths)
	waitHealthy(t, spoolURL, server)
	daemon := startProc(t, "cspool imap-server", work, env, bin, "imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub",
		"--db", "alice.db", "--port", fmt.Sprint(imapPort), "--spool-server", spoolURL)
	password := daemonPassword(t, daemon.waitOutput(t, "state:", 30*time.Second))

	// The recipe as printed: main.cf verbatim (its transport map is
	// /etc/postfix/transport, mounted for this instance alone); the
	// transport line with this test's LMTP port.
	mainCF, transport := postfixRecipe(t)
	const docLMTP = "lmtp:inet:127.0.0.1:2424"
	if !strings.Contains(transport, docLMTP) {
		t.Fatalf("docs/POSTFIX.md's transport line %q lacks %s", transport, docLMTP)
	}
	start := time.Now()
	pf := startPostfixWith(t, postfix, work, smtpPort, mainCF,
		map[string]string{"transport": strings.Replace(transport, docLMTP, "lmtp:inet:"+lmtpAddr, 1)}, filepath.Join(work, "etc-postfix"))
	t.Logf("Postfix started in %v", time.Since(start).Round(time.Millisecond))
	send := func(rcpt string) string {
		t.Helper()
		out := runCmd(t, work, env, "", python, "-c", smtplibSend, "127.0.0.1", fmt.Sprint(smtpPort),
			"bob@example.org", rcpt, filepath.Join(work, "message.eml"))
		return strings.TrimSpace(out)
	}

	// 1. A message for alice arrives, byte for byte after Postfix's header.
	start = time.Now()
	if got := send("alice@example.org"); got != "SENT" {
		t.Fatalf("SMTP to alice@example.org: %q, want SENT", got)
	}
	msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 1)
	t.Logf("SMTP to IMAP (with address verification) in %v", time.Since(start).Round(time.Millisecond))
	added := checkPostfixCopy(t, msgs[0])
	t.Logf("Postfix added %q before the original message", added)

	// 2. An unknown user is refused during the SMTP dialogue, although the
	// client (127.0.0.1) is in mynetworks: Postfix's address verification
	// asks the LMTP listener, which answers 550 5.1.1. Nothing is bounced.
	start = time.Now()
	if got := send("bob@example.org"); !strings.HasPrefix(got, "REFUSED 550 ") {
		t.Errorf("SMTP from a local client to bob@example.org: %q, want REFUSED 550 (accepting it would bounce it later)", got)
	}

	// 3. While the spool server is down the message waits in Postfix's
	// queue (a temporary failure); it is delivered once the server is back
	// and the queue flushed.
	t.Logf("unknown recipient refused in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	server.stop(t, syscall.SIGTERM, 40*time.Second)
	if got := send("alice@example.org"); got != "SENT" {
		t.Fatalf("SMTP to alice@example.org with the spool server down: %q, want SENT (queued)", got)
	}
	pf.waitLog(t, "status=deferred", 60*time.Second)
	t.Logf("server stopped and message deferred in %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	server = startRecipe(t, "cspool server (restarted)", serverCmd, work, env, serverPaths)
	waitHealthy(t, spoolURL, server)
	pf.run(t, "flush")
	msgs = fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 2)
	if len(msgs) != 2 {
		t.Fatalf("after the flush: %d messages, want 2", len(msgs))
	}
	t.Logf("spool server restart and queue flush to IMAP in %v", time.Since(start).Round(time.Millisecond))
	checkPostfixCopy(t, msgs[1])

	// 4. Internationalized mail: Postfix passes a message that needs
	// SMTPUTF8 on only to a next hop that offers it, and returns it to
	// its sender otherwise.
	if err := os.WriteFile(filepath.Join(work, "eai.eml"), []byte(eaiMessage), 0o600); err != nil {
		t.Fatal(err)
	}
	const eaiSender = "j\xc3\xb6ran@example.org"
	if got := strings.TrimSpace(runCmd(t, work, env, "", python, "-c", smtplibSend, "127.0.0.1", fmt.Sprint(smtpPort),
		eaiSender, "alice@example.org", filepath.Join(work, "eai.eml"), "smtputf8")); got != "SENT" {
		t.Fatalf("SMTPUTF8 to alice@example.org: %q, want SENT", got)
	}
	msgs = fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 3)
	if len(msgs) != 3 || !bytes.HasSuffix(msgs[2], []byte(eaiMessage)) {
		b, _ := os.ReadFile(pf.maillog)
		t.Fatalf("the SMTPUTF8 message did not arrive whole (%d messages); Postfix's log:\n%s", len(msgs), b)
	}
	if want := "Return-Path: <" + eaiSender + ">\r\nDelivered-To: alice@example.org\r\n"; !bytes.HasPrefix(msgs[2], []byte(want)) {
		t.Errorf("the SMTPUTF8 message starts %q, want %q", msgs[2][:min(len(msgs[2]), 80)], want)
	}

	// 5. An address extension (alice+lists@) reaches alice: the server's
	// --lmtp-recipient-delimiter is "+" unless set otherwise, as
	// docs/DELIVERY.md promises. Without it, Postfix's probe got 550 and
	// the message was refused.
	if got := send("alice+lists@example.org"); got != "SENT" {
		t.Fatalf("SMTP to alice+lists@example.org: %q, want SENT", got)
	}
	msgs = fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 4)
	if len(msgs) != 4 || !bytes.Contains(msgs[3], []byte("Delivered-To: alice+lists@example.org\r\n")) {
		t.Errorf("the message to alice+lists@example.org: %d messages, want 4 with its Delivered-To", len(msgs))
	}

	start = time.Now()
	pf.stop(t)
	t.Logf("Postfix stopped in %v", time.Since(start).Round(time.Millisecond))
	if b, _ := os.ReadFile(pf.maillog); bytes.Contains(b, []byte("status=bounced")) {
		t.Errorf("Postfix bounced a message; the recipe refuses unknown users at RCPT:\n%s", b)
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 40*time.Second)
	if log := server.stderr.String(); strings.Contains(log, "Postfix") || strings.Contains(log, "bob@example.org") {
		t.Error("the server log holds message contents or a sender address")
	}
}

// postfixServerCommand returns the command of docs/POSTFIX.md's "The
// spool server", as printed.
func postfixServerCommand(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/POSTFIX.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## The spool server\n")
	if !ok {
		t.Fatal(`docs/POSTFIX.md has no "## The spool server" section`)
	}
	blocks := codeBlocks(section)
	if len(blocks) == 0 || !strings.HasPrefix(blocks[0], "cspool server ") || !strings.Contains(blocks[0], "--lmtp 127.0.0.1:2424") {
		t.Fatalf("docs/POSTFIX.md, The spool server: want the server's command with --lmtp 127.0.0.1:2424 first; got %q", blocks)
	}
	return strings.TrimSpace(blocks[0])
}

// postfixRecipe returns the main.cf block of docs/POSTFIX.md (the first
// code block under "## main.cf") and the transport block after it, as
// printed.
func postfixRecipe(t *testing.T) (mainCF, transport string) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/POSTFIX.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## main.cf\n")
	if !ok {
		t.Fatal(`docs/POSTFIX.md has no "## main.cf" section`)
	}
	blocks := codeBlocks(section)
	if len(blocks) < 2 || !strings.Contains(blocks[0], "smtpd_recipient_restrictions") || !strings.Contains(blocks[1], "lmtp:inet:") {
		t.Fatalf("docs/POSTFIX.md's main.cf section: want the main.cf block, then the transport block; got %q", blocks)
	}
	return blocks[0], blocks[1]
}

// codeBlocks returns the fenced code blocks of a Markdown text, in order,
// each without its fences.
func codeBlocks(md string) []string {
	var out []string
	for {
		_, rest, ok := strings.Cut(md, "```")
		if !ok {
			return out
		}
		_, rest, _ = strings.Cut(rest, "\n") // the info string
		block, after, ok := strings.Cut(rest, "```")
		if !ok {
			return out
		}
		out = append(out, block)
		md = after
	}
}

// checkPostfixCopy requires got to be the header fields added on the way
// followed by postfixMessage exactly, and returns the added part: the
// listener's Return-Path (the envelope sender Postfix passed on) and
// Delivered-To, then Postfix's one Received field.
func checkPostfixCopy(t *testing.T, got []byte) string {
	t.Helper()
	if !bytes.HasSuffix(got, []byte(postfixMessage)) {
		t.Fatalf("message read back does not end with the message sent:\n%q\nwant suffix\n%q", got, postfixMessage)
	}
	added := string(got[:len(got)-len(postfixMessage)])
	var names []string
	for _, l := range strings.SplitAfter(added, "\r\n") {
		switch {
		case l == "":
		case !strings.HasSuffix(l, "\r\n"):
			t.Errorf("added header line %q does not end in CRLF", l)
		case l[0] == ' ' || l[0] == '\t':
		default:
			name, _, ok := strings.Cut(l, ":")
			if !ok {
				t.Errorf("added line %q is not a header field", l)
			}
			names = append(names, name)
		}
	}
	if strings.Join(names, ",") != "Return-Path,Delivered-To,Received" {
		t.Errorf("added fields %v, want Return-Path, Delivered-To and one Received", names)
	}
	if want := "Return-Path: <bob@example.org>\r\nDelivered-To: alice@example.org\r\nReceived: "; !strings.HasPrefix(added, want) {
		t.Errorf("added fields %q, want them to start %q", added, want)
	}
	return added
}

// needPostfix returns the postfix command (Debian package postfix), skipping
// or, under CI=true, failing when it is missing or the test is not root.
func needPostfix(t *testing.T) string {
	t.Helper()
	const path = "/usr/sbin/postfix"
	problem := ""
	if _, err := os.Stat(path); err != nil {
		problem = fmt.Sprintf("%s not installed (apt-get install postfix): %v", path, err)
	} else if os.Geteuid() != 0 {
		problem = "a Postfix instance needs root"
	}
	if problem != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("required in CI: %s", problem)
		}
		t.Skipf("%s; skipping", problem)
	}
	return path
}

// postfixWorkDir is a temporary folder that Postfix's unprivileged daemons
// can traverse.
func postfixWorkDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// postfixInstance is a throwaway Postfix with its own configuration, queue
// and data directories under one folder.
type postfixInstance struct {
	bin, conf, queue, maillog string
	// etc, when set, is mounted on /etc/postfix for every postfix command
	// and daemon of the instance, in a mount namespace of their own: the
	// documented main.cf names /etc/postfix/transport, and the machine's
	// own /etc/postfix stays untouched.
	etc string
}

// startPostfix starts an instance relaying example.test to lmtpAddr, with
// recipient validation. extra lines are added to main.cf (they win over
// the defaults above them).
func startPostfix(t *testing.T, bin, work string, smtpPort int, lmtpAddr string, extra ...string) *postfixInstance {
	t.Helper()
	conf := filepath.Join(work, "postfix", "conf")
	recipe := strings.Join([]string{
		"relay_domains = example.test",
		"transport_maps = texthash:" + filepath.Join(conf, "transport"),
		"smtpd_recipient_restrictions = reject_unauth_destination, reject_unverified_recipient",
		"unverified_recipient_reject_code = 550",
	}, "\n") + "\n" + strings.Join(append(extra, ""), "\n")
	return startPostfixWith(t, bin, work, smtpPort, recipe, map[string]string{"transport": "example.test lmtp:inet:" + lmtpAddr + "\n"}, "")
}

// startPostfixWith starts an instance whose main.cf is the test instance's
// own settings (its folders, loopback only, nothing leaves) followed by
// recipe; files are written into its configuration folder, and into etc
// when that is set (mounted on /etc/postfix, see postfixInstance.etc);
// "master.cf+" is added to master.cf.
func startPostfixWith(t *testing.T, bin, work string, smtpPort int, recipe string, files map[string]string, etc string) *postfixInstance {
	t.Helper()
	root := filepath.Join(work, "postfix")
	p := &postfixInstance{bin: bin, conf: filepath.Join(root, "conf"), queue: filepath.Join(root, "queue"),
		maillog: filepath.Join(root, "maillog"), etc: etc}
	for _, d := range []string{p.conf, p.queue} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defaults := []string{
		"compatibility_level = 3.6",
		"queue_directory = " + p.queue,
		"data_directory = " + filepath.Join(root, "data"),
		"maillog_file = " + p.maillog,
		"maillog_file_prefixes = " + root,
		"myhostname = mx.cspool-test.invalid",
		"mydomain = cspool-test.invalid",
		"inet_interfaces = loopback-only",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"mydestination =",
		"local_recipient_maps =",
		// Nothing leaves this instance: bounces to other domains fail at once.
		"default_transport = error:this test instance sends no outside mail",
		"address_verify_map =",
		"address_verify_poll_delay = 1s",
		"biff = no",
	}
	// A setting the recipe makes is left out of the instance's: a
	// parameter given twice makes every Postfix process log a warning
	// at its start, and postlogd, which logs its own through the
	// instance's log socket, can fill that socket and wait on itself
	// for good (it outlived a test run so, with smtpd and a
	// `master -t` blocked behind it).
	set := map[string]bool{}
	for _, l := range strings.Split(recipe, "\n") {
		if name, _, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(strings.TrimSpace(l), "#") && l != "" && l[0] != ' ' && l[0] != '\t' {
			set[strings.TrimSpace(name)] = true
		}
	}
	defaults = slices.DeleteFunc(defaults, func(l string) bool {
		name, _, _ := strings.Cut(l, "=")
		return set[strings.TrimSpace(name)]
	})
	mainCF := strings.Join(defaults, "\n") + "\n" + recipe
	// No chroot, so no copies of /etc inside the queue; smtpd on the test
	// port only.
	masterCF := fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
lmtp      unix  - - n -  - lmtp
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix  - - n 1000? 1 tlsmgr
`, smtpPort)
	// "master.cf+": services the recipe needs besides the instance's.
	masterCF += files["master.cf+"]
	delete(files, "master.cf+")
	files["main.cf"], files["master.cf"] = mainCF, masterCF
	dir := p.conf
	if etc != "" {
		dir = etc
		if err := os.MkdirAll(etc, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range files {
		d := dir
		if name == "main.cf" || name == "master.cf" {
			d = p.conf
		}
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p.run(t, "start")
	t.Cleanup(func() {
		if p.masterPID() != 0 {
			p.stop(t)
		}
		if t.Failed() {
			b, _ := os.ReadFile(p.maillog)
			t.Logf("Postfix maillog:\n%s", b)
		}
	})
	// Wait for smtpd's port.
	addr := fmt.Sprintf("127.0.0.1:%d", smtpPort)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix not listening on %s after 30 s: %v", addr, err)
		}
	}
}

// run runs `postfix -c CONF VERB`, bounded.
func (p *postfixInstance) run(t *testing.T, verb string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := p.command(ctx, verb).CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(p.maillog)
		t.Fatalf("postfix %s: %v\n%s\nmaillog:\n%s", verb, err, out, b)
	}
}

// command is `postfix -c CONF VERB`, in a mount namespace with etc on
// /etc/postfix when the instance has one. The package's list of its own
// files (postfix-files, which postfix start checks) is copied there first.
func (p *postfixInstance) command(ctx context.Context, verb string) *exec.Cmd {
	if p.etc == "" {
		return exec.CommandContext(ctx, p.bin, "-c", p.conf, verb)
	}
	const script = `for f in /etc/postfix/postfix-files /etc/postfix/postfix-files.d; do
	[ -e "$f" ] && [ ! -e "$1/${f##*/}" ] && cp -a "$f" "$1/"
done
mount --bind "$1" /etc/postfix && exec "$2" -c "$3" "$4"`
	return exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", p.etc, p.bin, p.conf, verb)
}

// masterPID is the running master's process id, or 0.
func (p *postfixInstance) masterPID() int {
	b, err := os.ReadFile(filepath.Join(p.queue, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !alive(pid) {
		return 0
	}
	return pid
}

// alive tells whether a process exists and is not a zombie (the master is
// not the test's child, so nothing here reaps it).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	_, rest, _ := bytes.Cut(b, []byte(") "))
	return len(rest) > 0 && rest[0] != 'Z'
}

// stop stops the instance and waits (bounded) for its master to exit,
// killing it by its PID as a last resort.
func (p *postfixInstance) stop(t *testing.T) {
	t.Helper()
	pid := p.masterPID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := p.command(ctx, "stop").CombinedOutput(); err != nil {
		t.Errorf("postfix stop: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(20 * time.Second); pid != 0 && alive(pid); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("Postfix master %d still running 20 s after stop; killing it", pid)
			syscall.Kill(pid, syscall.SIGKILL)
			break
		}
	}
}

// waitLog waits until Postfix's log contains want.
func (p *postfixInstance) waitLog(t *testing.T, want string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		if b, _ := os.ReadFile(p.maillog); bytes.Contains(b, []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix's log lacks %q after %v", want, d)
		}
	}
}
