package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/devicedb"
	"cspool/internal/devicetest"
	"cspool/internal/keys"
	"cspool/internal/sendtest"
)

// smtplibSubmit logs in to the device's submission port and sends each
// file given, printing the 250 reply of each.
const smtplibSubmit = `
import smtplib, sys
host, port, user, password, sender, rcpt = sys.argv[1:7]
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.example.org")
s.login(user, password)
for path in sys.argv[7:]:
    s.mail(sender)
    s.rcpt(rcpt)
    code, msg = s.data(open(path, "rb").read())
    print(code, msg.decode())
s.quit()
`

// sendingRig is a spool server, a device daemon of alice's relaying to an
// in-process smarthost, and what restarts them.
type sendingRig struct {
	t                *testing.T
	bin, dir, python string
	env              []string
	host             *sendtest.Smarthost
	spoolArgs        []string
	spoolURL         string
	smtpPort         int
	imapPort         int // the IMAP port of the daemon startDaemon starts
	spool, daemon    *proc
}

func newSendingRig(t *testing.T, opts sendtest.SmarthostOptions) *sendingRig {
	t.Helper()
	r := &sendingRig{t: t, bin: buildServerBinary(t), dir: t.TempDir(), python: needTool(t, "python3", "python3"), env: os.Environ()}
	alice, spoolK := mustKey(t), mustKey(t)
	for name, k := range map[string]*keys.SecretKey{"alice": alice, "spool": spoolK} {
		if err := keys.WriteFiles(k, filepath.Join(r.dir, name+".sec"), filepath.Join(r.dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, filepath.Join(r.dir, "users"), map[string]*keys.SecretKey{"alice": alice})
	ca := sendtest.NewCA(t, r.dir)
	r.host = sendtest.NewSmarthost(t, ca, opts)
	httpPort := freePort(t)
	r.spoolURL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	r.spoolArgs = []string{"server", "--port", fmt.Sprint(httpPort), "--spool-dir", "spool", "--users", "users", "--spool-key", "spool.sec"}
	r.smtpPort, r.imapPort = freePort(t), freePort(t)
	r.startSpool()
	return r
}

func (r *sendingRig) startSpool() {
	r.t.Helper()
	r.spool = startProc(r.t, "cspool server", r.dir, r.env, r.bin, r.spoolArgs...)
	waitHealthy(r.t, r.spoolURL, r.spool)
}

// startDaemon starts alice's daemon and waits for its settings.
func (r *sendingRig) startDaemon() {
	r.t.Helper()
	r.daemon = r.startDaemonPorts("alice.db", r.imapPort, r.smtpPort)
}

// startDaemonAt starts a daemon of alice's on database db, taking
// submissions on smtpPort, and waits for its settings.
func (r *sendingRig) startDaemonAt(db string, smtpPort int, extra ...string) *proc {
	r.t.Helper()
	return r.startDaemonPorts(db, freePort(r.t), smtpPort, extra...)
}

// startDaemonPorts is startDaemonAt with the IMAP port given.
func (r *sendingRig) startDaemonPorts(db string, imapPort, smtpPort int, extra ...string) *proc {
	r.t.Helper()
	p := startProc(r.t, "cspool imap-server "+db, r.dir, r.env, r.bin, append([]string{"imap-server", "--user", "alice",
		"--user-key", "alice.sec", "--user-public-key", "alice.pub", "--spool-key", "spool.pub", "--db", db,
		"--password", "pw", "--port", fmt.Sprint(imapPort), "--status-addr", "", "--spool-server", r.spoolURL,
		"--smtp-port", fmt.Sprint(smtpPort), "--relay", "smtp://" + r.host.Addr, "--relay-ca", r.host.CA.File,
		"--identity", "alice@example.org", "--relay-backoff", "100ms"}, extra...)...)
	p.waitOutput(r.t, "SMTP settings", 30*time.Second)
	return p
}

// kill ends the daemon with SIGKILL.
func (r *sendingRig) kill() {
	r.t.Helper()
	if err := r.daemon.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		r.t.Fatal(err)
	}
	<-r.daemon.done
	r.daemon.exited = true
}

// submit sends messages tagged with the given names; each gets its 250.
func (r *sendingRig) submit(names ...string) {
	r.t.Helper()
	r.submitAt(r.smtpPort, names...)
}

// submitAt submits as submit does, to the daemon taking submissions on
// port.
func (r *sendingRig) submitAt(port int, names ...string) {
	r.t.Helper()
	var files []string
	for _, n := range names {
		p := filepath.Join(r.dir, n+".eml")
		msg := fmt.Sprintf("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: %s\r\nMessage-ID: <%s@example.org>\r\n\r\nbody of %s\r\n", n, n, n)
		if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
			r.t.Fatal(err)
		}
		files = append(files, p)
	}
	out := runCmd(r.t, r.dir, r.env, "", r.python, append([]string{"-c", smtplibSubmit, "127.0.0.1", fmt.Sprint(port),
		"alice", "pw", "alice@example.org", "bob@example.net"}, files...)...)
	if n := strings.Count(out, "250 2.0.0 Queued as"); n != len(names) {
		r.t.Fatalf("submitted %d messages, %d queued:\n%s", len(names), n, out)
	}
}

// TestCopiedDeviceSendsOnce: a device's database copied, with its outbox,
// while a message waits in the queue (a backup restored on a second
// machine, or the files copied beside the original), and both daemons
// run: the original relays the message, the copy holds it and says so in
// cspool status, and relays what is submitted to it. Before, both relayed
// the queue: the message went out twice.
func TestCopiedDeviceSendsOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	var down atomic.Bool
	down.Store(true)
	r := newSendingRig(t, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		if stage == "MAIL" && down.Load() {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "down for now"}
		}
		return nil
	}})
	r.startDaemon()
	r.submit("queued")
	r.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	for _, suffix := range []string{"", "-wal", ".outbox", ".outbox-wal"} {
		b, err := os.ReadFile(filepath.Join(r.dir, "alice.db"+suffix))
		if errors.Is(err, os.ErrNotExist) && suffix != "" && suffix != ".outbox" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r.dir, "copy.db"+suffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	down.Store(false)
	copyPort := freePort(t)
	copied := r.startDaemonAt("copy.db", copyPort)
	r.startDaemon()
	r.submitAt(copyPort, "after")
	r.host.Wait(t, 2, 30*time.Second)
	if got := r.relayedCounts(); got["queued"] != 1 || got["after"] != 1 {
		t.Errorf("relayed %v, want the queued message and the one submitted to the copy once each", got)
	}
	status := runCmd(t, r.dir, r.env, "", r.bin, "status", "--db", "copy.db")
	if !strings.Contains(status, "Outbox held:") || !strings.Contains(status, "1 queued messages not relayed") {
		t.Errorf("cspool status of the copy does not show the held message:\n%s", status)
	}
	copied.stop(t, syscall.SIGTERM, 30*time.Second)
	if got := r.relayedCounts(); got["queued"] != 1 {
		t.Errorf("relayed %v once the copy stopped, want the queued message once", got)
	}
}

// relayedCounts counts the copies the smarthost got of each message.
func (r *sendingRig) relayedCounts() map[string]int {
	got := map[string]int{}
	for _, m := range r.host.Received() {
		for _, l := range strings.Split(string(m.Data), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				got[s]++
			}
		}
	}
	return got
}

// sentCounts stops the daemon (SIGTERM) and counts, in its database, the
// copies in Sent of each message.
func (r *sendingRig) sentCounts() map[string]int {
	r.t.Helper()
	r.daemon.stop(r.t, syscall.SIGTERM, 30*time.Second)
	ms, err := openDeviceDB(filepath.Join(r.dir, "alice.db"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer ms.Close()
	got := map[string]int{}
	for _, m := range devicetest.Messages(r.t, ms, "Sent") {
		got[m.Envelope.Subject]++
	}
	return got
}

// waitSent waits until the daemon's database shows n messages in Sent
// (read while it runs).
func (r *sendingRig) waitSent(n int) {
	r.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ms, err := openDeviceDB(filepath.Join(r.dir, "alice.db"))
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			mb, err := ms.MailboxByName(ctx, "Sent")
			cancel()
			ms.Close()
			if err == nil && int(mb.Messages) >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("Sent did not reach %d messages in 60 s", n)
		}
	}
}

func checkCounts(t *testing.T, what string, got map[string]int, names []string, want func(string) (lo, hi int)) {
	t.Helper()
	for _, n := range names {
		lo, hi := want(n)
		if got[n] < lo || got[n] > hi {
			t.Errorf("%s: %s has %d copies, want %d to %d", what, n, got[n], lo, hi)
		}
	}
	if len(got) > len(names) {
		t.Errorf("%s: unexpected messages %v", what, got)
	}
}

// TestSendingSurvivesKill kills `cspool imap-server` with SIGKILL in each
// state of docs/SENDING.md's table and restarts it: after the 250 but
// before the relay (the smarthost refusing for now), after the relay but
// before the Sent copy is filed (the spool server down), and inside the
// one duplicate window (the smarthost has the message but the daemon is
// killed before its 250 arrives). Every message reaches the smarthost once,
// the one in the window at most twice, and Sent has one copy of each.
func TestSendingSurvivesKill(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	var mu sync.Mutex
	down := true
	var blockData chan struct{} // set: DATA replies wait for it
	r := newSendingRig(t, sendtest.SmarthostOptions{
		Reply: func(stage, _ string) error {
			mu.Lock()
			defer mu.Unlock()
			if stage == "MAIL" && down {
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "down for now"}
			}
			return nil
		},
		AfterData: func() {
			mu.Lock()
			ch := blockData
			mu.Unlock()
			if ch != nil {
				<-ch
			}
		},
	})
	setDown := func(v bool) {
		mu.Lock()
		down = v
		mu.Unlock()
	}
	r.startDaemon()

	// 1. Acknowledged, not relayed: the smarthost defers; kill; it comes
	// back; each message goes once.
	first := []string{"a1", "a2", "a3"}
	r.submit(first...)
	// cspool status shows the queue waiting, and why, once each message
	// has been tried (on a loaded machine the third try may come seconds
	// after the submission).
	var status string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		status = runCmd(t, r.dir, r.env, "", r.bin, "status", "--db", "alice.db")
		if strings.Contains(status, "3 queued (3 deferred)") || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(status, "Outbox:") || !strings.Contains(status, "3 queued (3 deferred)") ||
		!strings.Contains(status, "451 4.3.0 down for now") {
		t.Errorf("cspool status does not show the 3 deferred messages and the smarthost's reply:\n%s", status)
	}
	r.kill()
	if n := len(r.host.Received()); n != 0 {
		t.Fatalf("the smarthost accepted %d messages while refusing", n)
	}
	setDown(false)
	r.startDaemon()
	r.waitSent(3)

	// 2. Relayed, not in Sent: the spool server is down, so the copies
	// cannot be filed; kill; restart both: nothing is relayed again and
	// each copy is filed once.
	r.spool.stop(t, syscall.SIGTERM, 40*time.Second)
	second := []string{"b1", "b2", "b3"}
	r.submit(second...)
	r.host.Wait(t, 6, 30*time.Second)
	time.Sleep(200 * time.Millisecond) // the filing attempts fail meanwhile
	r.kill()
	r.startSpool()
	r.startDaemon()
	r.waitSent(6)

	// 3. The duplicate window: the smarthost has the message, and the
	// daemon dies before the 250 arrives. After the restart it is sent
	// again: at most twice, and one copy in Sent.
	mu.Lock()
	blockData = make(chan struct{})
	mu.Unlock()
	r.submit("c1")
	r.host.Wait(t, 7, 30*time.Second)
	r.kill()
	mu.Lock()
	close(blockData)
	blockData = nil
	mu.Unlock()
	r.startDaemon()
	r.waitSent(7)

	all := append(append(first, second...), "c1")
	relayed := r.relayedCounts()
	checkCounts(t, "smarthost", relayed, all, func(n string) (int, int) {
		if n == "c1" {
			return 1, 2
		}
		return 1, 1
	})
	t.Logf("the message killed inside the window was relayed %d times", relayed["c1"])
	checkCounts(t, "Sent", r.sentCounts(), all, func(string) (int, int) { return 1, 1 })
}

// TestSendingKilledMidRelay kills `cspool imap-server` with SIGKILL in
// the state of docs/SENDING.md's table that TestSendingSurvivesKill does
// not reach: during the relay, before the final dot (the smarthost holds
// its reply to RCPT). The smarthost drops the unfinished transaction, and
// after the restart the message is relayed once and filed in Sent once.
func TestSendingKilledMidRelay(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	var mu sync.Mutex
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	r := newSendingRig(t, sendtest.SmarthostOptions{Reply: func(stage, _ string) error {
		mu.Lock()
		ch := hold
		mu.Unlock()
		if stage == "RCPT" && ch != nil {
			select {
			case held <- struct{}{}:
			default:
			}
			select {
			case <-ch:
			case <-time.After(time.Minute):
			}
		}
		return nil
	}})
	r.startDaemon()
	r.submit("mid")
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not reach RCPT in 30 s")
	}
	r.kill()
	mu.Lock()
	close(hold)
	hold = nil
	mu.Unlock()
	if n := len(r.host.Received()); n != 0 {
		t.Fatalf("the smarthost has %d messages from a transaction cut before DATA", n)
	}
	r.startDaemon()
	r.host.Wait(t, 1, 30*time.Second)
	r.waitSent(1)
	checkCounts(t, "smarthost", r.relayedCounts(), []string{"mid"}, func(string) (int, int) { return 1, 1 })
	checkCounts(t, "Sent", r.sentCounts(), []string{"mid"}, func(string) (int, int) { return 1, 1 })
}

// sendingMessage is what alice sends bob through Postfix: 8-bit UTF-8, a
// blind copy, a leading dot.
const sendingMessage = "From: Alice <alice@example.test>\r\n" +
	"To: Bob <bob@example.test>\r\n" +
	"Bcc: alice-archive@example.test\r\n" +
	"Subject: =?UTF-8?Q?Sent_through_Postfix_=E2=9C=89?=\r\n" +
	"Date: Mon, 30 Nov 2026 10:00:00 +0100\r\n" +
	"Message-ID: <sending-e2e-1@example.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Gr\xc3\xbc\xc3\x9fe from alice's device, through Postfix, into bob's log.\r\n" +
	".a line that starts with a dot\r\n"

// postfixPeers is a spool server for alice and bob with an LMTP listener,
// a Postfix on loopback that routes example.test to it and offers STARTTLS
// with a test CA's certificate, and a device daemon per user (two for
// alice) with alice's relaying through Postfix.
type postfixPeers struct {
	work, bin, python              string
	env                            []string
	pf                             *postfixInstance
	spoolURL, lmtpAddr             string
	spoolArgs                      []string
	spool                          *proc
	alice, alice2, bob             *proc
	aliceIMAP, alice2IMAP, bobIMAP int
	smtpPort, postfixPort          int
}

// extra lines go to Postfix's main.cf.
func startPostfixPeers(t *testing.T, postfix string, extra ...string) *postfixPeers {
	t.Helper()
	p := &postfixPeers{bin: buildServerBinary(t), python: needTool(t, "python3", "python3"), work: postfixWorkDir(t), env: os.Environ()}
	users := map[string]*keys.SecretKey{"alice": mustKey(t), "bob": mustKey(t)}
	for name, k := range map[string]*keys.SecretKey{"alice": users["alice"], "bob": users["bob"], "spool": mustKey(t)} {
		if err := keys.WriteFiles(k, filepath.Join(p.work, name+".sec"), filepath.Join(p.work, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, filepath.Join(p.work, "users"), users)
	ca := sendtest.NewCA(t, p.work)
	_, certFile, keyFile := ca.Leaf(t, p.work)
	httpPort, lmtpPort := freePort(t), freePort(t)
	p.postfixPort, p.smtpPort = freePort(t), freePort(t)
	p.aliceIMAP, p.alice2IMAP, p.bobIMAP = freePort(t), freePort(t), freePort(t)
	p.spoolURL = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	p.lmtpAddr = fmt.Sprintf("127.0.0.1:%d", lmtpPort)
	p.spoolArgs = []string{"server", "--port", fmt.Sprint(httpPort), "--spool-dir", "spool", "--users", "users",
		"--spool-key", "spool.sec", "--lmtp", p.lmtpAddr, "--lmtp-domains", "example.test"}
	p.startSpool(t)
	daemon := func(name, user, db string, imapPort int, extra ...string) *proc {
		args := append([]string{"imap-server", "--user", user, "--user-key", user + ".sec", "--user-public-key", user + ".pub",
			"--spool-key", "spool.pub", "--db", db, "--password", "pw", "--port", fmt.Sprint(imapPort), "--status-addr", "",
			"--spool-server", p.spoolURL}, extra...)
		d := startProc(t, name, p.work, p.env, p.bin, args...)
		d.waitOutput(t, "IMAP settings", 30*time.Second)
		return d
	}
	p.pf = startPostfix(t, postfix, p.work, p.postfixPort, p.lmtpAddr, append([]string{
		"smtpd_tls_cert_file = " + certFile, "smtpd_tls_key_file = " + keyFile, "smtpd_tls_security_level = may"}, extra...)...)
	p.alice = daemon("alice's daemon", "alice", "alice.db", p.aliceIMAP, "--smtp-port", fmt.Sprint(p.smtpPort),
		"--relay", fmt.Sprintf("smtp://127.0.0.1:%d", p.postfixPort), "--relay-ca", ca.File,
		"--identity", "alice@example.test", "--relay-backoff", "100ms")
	p.alice.waitOutput(t, "SMTP settings", 10*time.Second)
	p.alice2 = daemon("alice's second device", "alice", "alice2.db", p.alice2IMAP, "--smtp-addr", "")
	p.bob = daemon("bob's daemon", "bob", "bob.db", p.bobIMAP)
	return p
}

func (p *postfixPeers) startSpool(t *testing.T) {
	t.Helper()
	p.spool = startProc(t, "cspool server", p.work, p.env, p.bin, p.spoolArgs...)
	waitHealthy(t, p.spoolURL, p.spool)
}

// TestSendingThroughPostfix: Python's smtplib submits to alice's device; a
// real Postfix on loopback is the smarthost (STARTTLS, verified against a
// test CA) and delivers over LMTP into cspool for bob, whose daemon shows
// the message in INBOX without the Bcc field; alice's Sent, on both of her
// devices, has the whole message, Bcc included.
func TestSendingThroughPostfix(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	postfix := needPostfix(t)
	p := startPostfixPeers(t, postfix)
	path := filepath.Join(p.work, "message.eml")
	if err := os.WriteFile(path, []byte(sendingMessage), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := runCmd(t, p.work, p.env, "", p.python, "-c", smtplibSubmit, "127.0.0.1", fmt.Sprint(p.smtpPort),
		"alice", "pw", "alice@example.test", "bob@example.test", path)
	if !strings.HasPrefix(out, "250 2.0.0 Queued as") {
		t.Fatalf("submission: %q", out)
	}
	inbox := fetchIMAP(t, p.python, "127.0.0.1", fmt.Sprint(p.bobIMAP), "bob", "pw", 1)
	t.Logf("submission to bob's INBOX through Postfix in %v", time.Since(start).Round(time.Millisecond))
	got := inbox[0]
	if want := submitStripBcc(sendingMessage); !strings.HasSuffix(string(got), want) {
		t.Errorf("bob got:\n%q\nwant it to end with:\n%q", got, want)
	}
	if strings.Contains(string(got), "Bcc") || strings.Contains(string(got), "alice-archive") {
		t.Errorf("bob's copy shows the blind copy:\n%s", got)
	}
	if !strings.Contains(string(got), "ESMTPS") {
		t.Errorf("Postfix's Received field does not show TLS (ESMTPS):\n%s", got)
	}
	for _, d := range []struct {
		name string
		port int
	}{{"alice", p.aliceIMAP}, {"alice's second device", p.alice2IMAP}} {
		sent := fetchIMAPBox(t, p.python, "127.0.0.1", fmt.Sprint(d.port), "alice", "pw", "Sent", 1)
		if len(sent) != 1 || string(sent[0]) != sendingMessage {
			t.Errorf("%s's Sent: %d messages, first %q; want the message as submitted", d.name, len(sent), sent[0])
		}
	}
	if inbox := fetchIMAPBox(t, p.python, "127.0.0.1", fmt.Sprint(p.aliceIMAP), "alice", "pw", "INBOX", 0); len(inbox) != 0 {
		t.Errorf("alice has %d messages in INBOX (a bounce?)", len(inbox))
	}
	// The subject's words and the blind copy's address (the test's
	// folder, which the log names, holds "Postfix" too).
	if log := p.spool.stderr.String(); strings.Contains(log, "Sent_through_Postfix") || strings.Contains(log, "Sent through Postfix") || strings.Contains(log, "alice-archive") {
		t.Error("the spool server's log holds message contents")
	}
}

// smtplibSubmitUTF8 submits a file as smtplibSubmit does, asking for
// SMTPUTF8 in MAIL, as a client may whatever the message.
const smtplibSubmitUTF8 = `
import smtplib, sys
host, port, user, password, sender, rcpt, path = sys.argv[1:8]
s = smtplib.SMTP(host, int(port), timeout=60)
s.ehlo("client.example.org")
s.login(user, password)
s.mail(sender, ["SMTPUTF8"])
s.rcpt(rcpt)
code, msg = s.data(open(path, "rb").read())
print(code, msg.decode())
s.quit()
`

// TestSendingSMTPUTF8ThroughPostfixWithout: a message in ASCII submitted
// with SMTPUTF8 (smtplib) reaches bob through a Postfix that does not
// offer SMTPUTF8 (smtputf8_enable = no), and alice gets no bounce: it
// needs none (RFC 6531 section 3.2). Before, the outbox asked the
// smarthost for SMTPUTF8 whenever the client had, and bounced the message
// at once, "the smarthost does not accept SMTPUTF8, which this message
// needs", after the client's 250.
func TestSendingSMTPUTF8ThroughPostfixWithout(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs Postfix")
	}
	p := startPostfixPeers(t, needPostfix(t), "smtputf8_enable = no")
	msg := "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: ASCII with SMTPUTF8\r\n" +
		"Date: Mon, 30 Nov 2026 10:00:00 +0100\r\nMessage-ID: <ascii-smtputf8@example.test>\r\n\r\nhello\r\n"
	path := filepath.Join(p.work, "message.eml")
	if err := os.WriteFile(path, []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runCmd(t, p.work, p.env, "", p.python, "-c", smtplibSubmitUTF8, "127.0.0.1", fmt.Sprint(p.smtpPort),
		"alice", "pw", "alice@example.test", "bob@example.test", path)
	if !strings.HasPrefix(out, "250 2.0.0 Queued as") {
		t.Fatalf("submission: %q", out)
	}
	inbox := fetchIMAP(t, p.python, "127.0.0.1", fmt.Sprint(p.bobIMAP), "bob", "pw", 1)
	if !strings.HasSuffix(string(inbox[0]), msg) {
		t.Errorf("bob got:\n%q\nwant it to end with:\n%q", inbox[0], msg)
	}
	fetchIMAPBox(t, p.python, "127.0.0.1", fmt.Sprint(p.aliceIMAP), "alice", "pw", "Sent", 1)
	if got := fetchIMAPBox(t, p.python, "127.0.0.1", fmt.Sprint(p.aliceIMAP), "alice", "pw", "INBOX", 0); len(got) != 0 {
		t.Errorf("alice has %d messages in INBOX, want none; the first:\n%.600s", len(got), got[0])
	}
}

// submitStripBcc is the message as relayed: without its Bcc line.
func submitStripBcc(msg string) string {
	var out []string
	for _, l := range strings.SplitAfter(msg, "\r\n") {
		if !strings.HasPrefix(l, "Bcc:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestRelayPasswordRules: the smarthost password follows the IMAP
// password's rules: a password file or a config file holding it that
// others can read is refused, one on the command line is warned about, and
// sending needs an identity. The cases that pass stop at a taken SMTP port,
// after the password was read.
func TestRelayPasswordRules(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, k := range map[string]*keys.SecretKey{"user": mustKey(t), "spool": mustKey(t)} {
		if err := keys.WriteFiles(k, filepath.Join(dir, name+".sec"), filepath.Join(dir, name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, takenPort, _ := net.SplitHostPort(taken.Addr().String())
	file := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := func(db string) []string {
		return []string{"imap-server", "--user", "alice", "--user-key", filepath.Join(dir, "user.sec"),
			"--user-public-key", filepath.Join(dir, "user.pub"), "--spool-key", filepath.Join(dir, "spool.pub"),
			"--db", filepath.Join(dir, db), "--password", "pw", "--port", "0", "--status-addr", "",
			"--smtp-port", takenPort, "--relay", "smtps://smtp.example.org"}
	}
	cases := []struct {
		name  string
		args  []string
		env   string
		wants []string
	}{
		{"password file readable by others", []string{"--identity", "a@example.org", "--relay-user", "a",
			"--relay-password-file", file("open.pw", "secret\n", 0o644)}, "", []string{"relay password file", "readable by its group or others", "chmod 600"}},
		{"private password file", []string{"--identity", "a@example.org", "--relay-user", "a",
			"--relay-password-file", file("private.pw", "secret\n", 0o600)}, "", []string{"listening for SMTP"}},
		{"config file readable by others", []string{"--config", file("open.conf", "identity = a@example.org, b@example.org\nrelay-user = a\nrelay-password = secret\n", 0o644)},
			"", []string{"config file", "readable by its group or others", "chmod 600"}},
		{"private config file", []string{"--config", file("private.conf", "identity = a@example.org\nrelay-user = a\nrelay-password = secret\n", 0o600)},
			"", []string{"listening for SMTP"}},
		{"environment", []string{"--identity", "a@example.org", "--relay-user", "a"}, "secret", []string{"listening for SMTP"}},
		{"on the command line", []string{"--identity", "a@example.org", "--relay-user", "a", "--relay-password", "secret"},
			"", []string{"--relay-password on the command line can be read by other users", "listening for SMTP"}},
		{"no password", []string{"--identity", "a@example.org", "--relay-user", "a"}, "", []string{"has no password"}},
		{"no identity", nil, "", []string{"--relay needs at least one --identity"}},
		// Releasing a copied outbox's queue is a decision for once, not a
		// setting: in a config file it would release every later copy.
		{"release-outbox in a config file", []string{"--config", file("release.conf", "identity = a@example.org\nrelease-outbox = true\n", 0o600)},
			"", []string{"release-outbox is for the command line only"}},
		{"release-outbox=NAME in a config file", []string{"--config", file("release-name.conf", "identity = a@example.org\nrelease-outbox = 3f9a61c2e07b\n", 0o600)},
			"", []string{"release-outbox is for the command line only"}},
		{"release-outbox on the command line", []string{"--identity", "a@example.org", "--release-outbox"}, "", []string{"listening for SMTP"}},
		{"release-outbox=NAME on the command line", []string{"--identity", "a@example.org", "--release-outbox=3f9a61c2e07b"}, "", []string{"listening for SMTP"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdout: &stdout, stderr: &stderr, getenv: func(k string) string {
				if k == relayPasswordEnv {
					return tc.env
				}
				return ""
			}}
			code := run(e, append(base(fmt.Sprintf("d%d.db", i)), tc.args...))
			if code == 0 {
				t.Fatalf("exit 0, want a failure")
			}
			for _, w := range tc.wants {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "secret") {
				t.Errorf("the password is in the output:\n%s", stderr.String())
			}
		})
	}
}

// TestQuickstartSends: the quickstart prints SMTP settings; a message to
// USER@localhost, submitted with smtplib, comes back into INBOX through
// the quickstart's LMTP listener, and its copy is in Sent; a message to an
// unknown user bounces into INBOX, and has no copy in Sent. The outbox,
// which holds each message relayed for a day, is encrypted at rest with
// the user key's outbox key, as the daemon's is.
func TestQuickstartSends(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	work := t.TempDir()
	smtpPort := fmt.Sprint(freePort(t))
	qs := startProc(t, "cspool quickstart", work, os.Environ(), bin, "quickstart", "--dir", filepath.Join(work, "state"), "--user", "alice",
		"--http-port", fmt.Sprint(freePort(t)), "--imap-port", fmt.Sprint(freePort(t)), "--lmtp-port", fmt.Sprint(freePort(t)),
		"--smtp-port", smtpPort)
	out := qs.waitOutput(t, "Spool server HTTP API:", 60*time.Second)
	if !strings.Contains(out, "Sending (SMTP") || !strings.Contains(out, "port:     "+smtpPort) {
		t.Fatalf("no SMTP settings printed:\n%s", out)
	}
	host, port, password := settingValue(t, out, "server"), settingValue(t, out, "port"), settingValue(t, out, "password")
	for _, m := range []struct{ name, to string }{{"self", "alice@localhost"}, {"nobody", "nobody@localhost"}} {
		p := filepath.Join(work, m.name+".eml")
		msg := fmt.Sprintf("From: alice@localhost\r\nTo: %s\r\nSubject: to %s\r\n\r\nhello\r\n", m.to, m.name)
		if err := os.WriteFile(p, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		if got := runCmd(t, work, os.Environ(), "", python, "-c", smtplibSubmit, "127.0.0.1", smtpPort, "alice", password,
			"alice@localhost", m.to, p); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("submitting to %s: %q", m.to, got)
		}
	}
	// The welcome message, the message to self, the bounce.
	inbox := fetchIMAP(t, python, host, port, "alice", password, 3)
	var subjects []string
	for _, m := range inbox {
		for _, l := range strings.Split(string(m), "\r\n") {
			if s, ok := strings.CutPrefix(l, "Subject: "); ok {
				subjects = append(subjects, s)
				break
			}
		}
	}
	if want := []string{"Welcome to cspool", "to self", "Undelivered Mail Returned to Sender"}; !slices.Equal(subjects, want) {
		t.Errorf("INBOX subjects %q, want %q", subjects, want)
	}
	// Only the message that was delivered has a copy in Sent: the other
	// comes back whole inside its bounce.
	if sent := fetchIMAPBox(t, python, host, port, "alice", password, "Sent", 1); len(sent) != 1 || !strings.Contains(string(sent[0]), "Subject: to self") {
		t.Errorf("Sent has %d messages, want the one to self", len(sent))
	}
	qs.stop(t, syscall.SIGTERM, 30*time.Second)
	outboxDB := filepath.Join(work, "state", "mail.db.outbox")
	if st, err := devicedb.Inspect(outboxDB, nil); st != devicedb.Encrypted || err != nil {
		t.Errorf("the quickstart's outbox: %v %v, want encrypted", st, err)
	}
	userKey, err := keys.LoadSecret(filepath.Join(work, "state", "user.sec"))
	if err != nil {
		t.Fatal(err)
	}
	k := devicedb.Key(userKey.DatabaseKey("outbox"))
	if _, err := devicedb.Inspect(outboxDB, &k); err != nil {
		t.Errorf("the quickstart's outbox does not open with the user key's outbox key: %v", err)
	}
}

// imaplibAppend appends the files given to a mailbox over IMAP, as a
// client saving its copy of what it sends does.
const imaplibAppend = `
import imaplib, sys, time
host, port, user, password, box = sys.argv[1:6]
m = imaplib.IMAP4(host, int(port), timeout=60)
m.login(user, password)
for path in sys.argv[6:]:
    typ, data = m.append(box, r"(\Seen)", imaplib.Time2Internaldate(time.time()), open(path, "rb").read())
    print(typ, data)
    if typ != "OK":
        sys.exit(1)
m.logout()
`

// TestClientCopyKeptAcrossRestart: a client that saves its copy in Sent
// before it submits the message (s-nail, GNU Mailutils' mail), with the
// daemon restarted in between (one with a Message-ID, one without, told
// by its content), ends with one copy of each in Sent: the outbox keeps
// the client's copies of the last DuplicateWindow in its database.
// Before, it kept them in memory, and after the restart the outbox filed
// a second copy of each.
func TestClientCopyKeptAcrossRestart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r := newSendingRig(t, sendtest.SmarthostOptions{})
	r.startDaemon()
	msgs := map[string]string{
		"with-id":    "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: with-id\r\nMessage-ID: <with-id@example.org>\r\n\r\nbody of with-id\r\n",
		"without-id": "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: without-id\r\nDate: Sun, 6 Dec 2026 16:00:00 +0000\r\n\r\nbody of without-id\r\n",
	}
	var files []string
	for _, name := range []string{"with-id", "without-id"} {
		p := filepath.Join(r.dir, name+".eml")
		if err := os.WriteFile(p, []byte(msgs[name]), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	runCmd(t, r.dir, r.env, "", r.python, append([]string{"-c", imaplibAppend, "127.0.0.1", fmt.Sprint(r.imapPort), "alice", "pw", "Sent"}, files...)...)
	r.waitSent(2)
	r.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	r.startDaemon()
	out := runCmd(t, r.dir, r.env, "", r.python, append([]string{"-c", smtplibSubmit, "127.0.0.1", fmt.Sprint(r.smtpPort),
		"alice", "pw", "alice@example.org", "bob@example.net"}, files...)...)
	if n := strings.Count(out, "250 2.0.0 Queued as"); n != 2 {
		t.Fatalf("submitted 2 messages, %d queued:\n%s", n, out)
	}
	r.host.Wait(t, 2, 60*time.Second)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		status := runCmd(t, r.dir, r.env, "", r.bin, "status", "--db", "alice.db")
		if regexp.MustCompile(`Outbox:\s+0 queued; 0 to file`).MatchString(status) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox did not empty in 60 s:\n%s", status)
		}
	}
	checkCounts(t, "Sent", r.sentCounts(), []string{"with-id", "without-id"}, func(string) (int, int) { return 1, 1 })
	checkCounts(t, "the smarthost", r.relayedCounts(), []string{"with-id", "without-id"}, func(string) (int, int) { return 1, 1 })
}
