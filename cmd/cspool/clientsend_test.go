package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/sendtest"
	"cspool/internal/submit"
	"cspool/internal/testproc"
)

// What the mail client tests send: a subject beyond ASCII, a body line
// that starts with a dot (dot-stuffed on the wire), an attachment, to bob
// with a blind copy to carol.
const (
	clientSubject    = "Grüße aus Köln ✓ Bericht"
	clientBody       = "Hallo Bob,\n\nanbei der Bericht.\n.versteckt: eine Zeile mit Punkt\n\nAlice\n"
	clientTo         = "bob@example.net"
	clientBcc        = "carol@example.net"
	clientAttachName = "bericht.bin"
)

// clientAttachment is the attachment's content: binary, so that it is
// base64 in the message.
var clientAttachment = func() []byte {
	b := make([]byte, 300)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// smtpRecorder is a TCP relay in front of the daemon's submission port
// that records what the client wrote.
type smtpRecorder struct {
	addr    string
	mu      sync.Mutex
	sent    bytes.Buffer
	replies bytes.Buffer // what the daemon answered, for a failure's message
}

func newSMTPRecorder(t *testing.T, target string) *smtpRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	rec := &smtpRecorder{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() {
				defer wg.Done()
				io.Copy(c, io.TeeReader(s, (*replyWriter)(rec)))
				c.Close()
			}()
			go func() {
				defer wg.Done()
				io.Copy(s, io.TeeReader(c, (*lockedWriter)(rec)))
				s.Close()
			}()
		}
	}()
	return rec
}

type lockedWriter smtpRecorder

type replyWriter smtpRecorder

func (w *replyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.replies.Write(p)
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent.Write(p)
}

// messages returns each message the client sent with DATA, its
// dot-stuffing undone.
func (r *smtpRecorder) messages() [][]byte {
	r.mu.Lock()
	wire := r.sent.String()
	r.mu.Unlock()
	var out [][]byte
	for {
		i := regexp.MustCompile(`(?im)^DATA\r\n`).FindStringIndex(wire)
		if i == nil {
			return out
		}
		wire = wire[i[1]:]
		end := strings.Index(wire, "\r\n.\r\n")
		if end < 0 {
			return out
		}
		var msg []byte
		for _, l := range strings.SplitAfter(wire[:end+2], "\r\n") {
			msg = append(msg, strings.TrimPrefix(l, ".")...)
		}
		out = append(out, msg)
		wire = wire[end+5:]
	}
}

// clientSendRig is a sendingRig whose daemon runs, with a recorder in
// front of its submission port, and a folder for the client.
type clientSendRig struct {
	*sendingRig
	rec    *smtpRecorder
	home   string
	attach string
	body   string
}

func newClientSendRig(t *testing.T) *clientSendRig {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary and a mail client")
	}
	r := &clientSendRig{sendingRig: newSendingRig(t, sendtest.SmarthostOptions{}), home: t.TempDir()}
	r.startDaemon()
	r.rec = newSMTPRecorder(t, fmt.Sprintf("127.0.0.1:%d", r.smtpPort))
	r.attach = filepath.Join(r.home, clientAttachName)
	r.body = filepath.Join(r.home, "body.txt")
	if err := os.WriteFile(r.attach, clientAttachment, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.body, []byte(clientBody), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// recPort is the port the client is to send to (the recorder's).
func (r *clientSendRig) recPort() string {
	_, p, _ := net.SplitHostPort(r.rec.addr)
	return p
}

// runClient runs a client in batch mode, with stdin from a file, for at
// most 60 s, and returns its output; a failure is the test's.
func (r *clientSendRig) runClient(stdin string, env []string, bin string, args ...string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.home
	cmd.Env = append(os.Environ(), append([]string{"HOME=" + r.home, "LC_ALL=C.UTF-8"}, env...)...)
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			r.t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.rec.mu.Lock()
		replies := r.rec.replies.String()
		r.rec.mu.Unlock()
		r.t.Fatalf("%s: %v (the client did not report success)\n%s\nthe daemon's replies:\n%s\nthe daemon's log:\n%s",
			filepath.Base(bin), err, out, replies, r.daemon.stderr.String())
	}
	return string(out)
}

// check checks what a user would: the smarthost got the message once,
// from alice to bob and carol, with the bytes the client sent less the
// Bcc field; Sent over IMAP holds one copy, with the subject and the
// attachment, the client having saved its own too.
func (r *clientSendRig) check() {
	t := r.t
	t.Helper()
	r.host.Wait(t, 1, 60*time.Second)
	// The outbox files the Sent copy after the relay: wait for it (and
	// for a client's own copy, which the client saved before it exited).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		status := runCmd(t, r.dir, r.env, "", r.bin, "status", "--db", "alice.db")
		if regexp.MustCompile(`Outbox:\s+0 queued; 0 to file`).MatchString(status) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the outbox did not empty in 60 s:\n%s", status)
		}
	}
	sent := fetchIMAPBox(t, r.python, "127.0.0.1", fmt.Sprint(r.imapPort), "alice", "pw", "Sent", 1)
	got := r.host.Received()
	if len(got) != 1 {
		t.Fatalf("the smarthost got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.From != "alice@example.org" || strings.Join(m.To, ",") != clientTo+","+clientBcc {
		t.Errorf("the smarthost's envelope: from %q to %q, want alice@example.org to %s,%s", m.From, m.To, clientTo, clientBcc)
	}
	wire := r.rec.messages()
	if len(wire) != 1 {
		t.Fatalf("the client sent %d messages with DATA, want 1", len(wire))
	}
	want := submit.StripBcc(wire[0])
	if submit.MessageID(wire[0]) == "" {
		// The listener added one, at the top.
		if added := regexp.MustCompile(`^Message-ID: <[0-9a-f]+@[^>\r\n]+>\r\n`).Find(m.Data); added != nil {
			want = append(added, want...)
		}
	}
	if !bytes.Equal(m.Data, want) {
		t.Errorf("the smarthost got:\n%s\nwant what the client sent, less Bcc:\n%s", m.Data, want)
	}
	if bytes.Contains(m.Data, []byte(clientBcc)) || regexp.MustCompile(`(?im)^Bcc:`).Match(m.Data) {
		t.Errorf("the relayed message shows the blind copy:\n%s", m.Data)
	}
	if !bytes.Contains(m.Data, []byte("\r\n..versteckt")) && !bytes.Contains(m.Data, []byte("\r\n.versteckt")) {
		t.Errorf("the relayed message lost the body line starting with a dot:\n%s", m.Data)
	}
	if !bytes.Contains(m.Data, []byte(clientAttachName)) {
		t.Errorf("the relayed message has no attachment %s:\n%s", clientAttachName, m.Data)
	}
	if len(sent) != 1 {
		for i, s := range sent {
			t.Logf("Sent message %d:\n%s", i+1, s)
		}
		t.Fatalf("Sent holds %d messages, want one copy", len(sent))
	}
	// The client saved its own copy, and the daemon kept one of the two.
	if log := r.daemon.stderr.String(); !strings.Contains(log, "copy already in the mailbox; not filed again") &&
		!strings.Contains(log, "client's copy of a sent message not appended") &&
		!strings.Contains(log, "client's copy of a sent message not copied") {
		t.Errorf("the daemon's log shows no copy of the client's in Sent:\n%s", log)
	}
	if !bytes.Contains(sent[0], []byte(clientAttachName)) || !subjectIs(sent[0], clientSubject) {
		t.Errorf("Sent's copy has not the subject %q and the attachment:\n%s", clientSubject, sent[0])
	}
}

// subjectIs reports whether msg's Subject decodes to want.
func subjectIs(msg []byte, want string) bool {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	mm := regexp.MustCompile(`(?ims)^Subject:(.*?)\r\n([^ \t]|\z)`).FindSubmatch(append(hdr, "\r\n"...))
	if mm == nil {
		return false
	}
	got, err := new(mime.WordDecoder).DecodeHeader(strings.TrimSpace(strings.ReplaceAll(string(mm[1]), "\r\n", "")))
	return err == nil && got == want
}

// TestNeomuttSends: neomutt, in tmux as a person uses it (started with
// -s, -a, -b and -i, the message sent from its compose screen with y),
// sends through the daemon's submission port (smtp_url) and saves its
// own copy in Sent over IMAP ($record; neomutt does not save to an IMAP
// folder in batch mode).
func TestNeomuttSends(t *testing.T) {
	t.Parallel()
	neomutt := needTool(t, "neomutt", "neomutt")
	r := newClientSendRig(t)
	rc := filepath.Join(r.home, "muttrc")
	conf := fmt.Sprintf(`set from="Alice <alice@example.org>"
set use_from=yes
set smtp_url="smtp://alice@127.0.0.1:%s/"
set smtp_pass="pw"
set ssl_starttls=no
set ssl_force_tls=no
set folder="imap://alice@127.0.0.1:%d/"
set imap_pass="pw"
set record="=Sent"
set copy=yes
set send_charset="utf-8"
set header_cache=""
set message_cachedir=""
set editor="true"
set confirm_append=no
set confirm_create=no
set wait_key=no
`, r.recPort(), r.imapPort)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(r.home, "neomutt.log")
	tm := startClientTmux(t, []string{"TERM=xterm", "HOME=" + r.home, "LC_ALL=C.UTF-8"},
		shellLine(neomutt, "-n", "-F", rc, "-d", "2", "-l", log, "-s", clientSubject, "-b", clientBcc, "-a", r.attach,
			"-i", r.body, "--", clientTo))
	// neomutt asks for To and Subject, filled in from its command line:
	// Enter takes each.
	for i := 0; tm.waitFor("y:Send", "To: ", "Subject: ") != "y:Send"; i++ {
		if i == 5 {
			t.Fatalf("neomutt did not get to its compose screen; the screen:\n%s", tm.screen())
		}
		tm.keys("Enter")
		time.Sleep(300 * time.Millisecond)
	}
	tm.keys("y")
	if tm.waitFor("exit status 0", "exit status 1", "exit status 2") != "exit status 0" {
		t.Fatalf("neomutt did not report success; the screen:\n%s", tm.screen())
	}
	r.check()
	// It saved its own copy too.
	if l := testproc.ReadRotated(t, log); !strings.Contains(l, `APPEND "Sent"`) {
		t.Errorf("neomutt's log shows no APPEND into Sent:\n%s", l)
	}
}

// TestSNailSends: s-nail, in batch mode, sends through the daemon's
// submission port (mta=smtp://) and saves its own copy in Sent over
// IMAP (record=).
func TestSNailSends(t *testing.T) {
	t.Parallel()
	snail := needTool(t, "s-nail", "s-nail")
	r := newClientSendRig(t)
	folder := fmt.Sprintf("imap://alice@127.0.0.1:%d", r.imapPort)
	r.runClient(r.body, []string{"MAILRC=/dev/null"}, snail, "-#", "-n", "-Sv15-compat", "-Sttycharset=utf-8",
		"-Sfrom=Alice <alice@example.org>", "-Smta=smtp://alice@127.0.0.1:"+r.recPort(), "-Ssmtp-auth=plain",
		"-Spassword=pw", "-Sfolder="+folder, "-Srecord=+Sent", "-Ssendcharsets=utf-8",
		"-s", clientSubject, "-a", r.attach, "-b", clientBcc, clientTo)
	r.check()
}

// clientTmux is a terminal client running in a tmux server of its own.
type clientTmux struct {
	t          *testing.T
	tmux, sock string
}

// startClientTmux runs command (a shell command line) in tmux; once it
// exits, the pane shows "exit status N" (for at most 2 minutes).
func startClientTmux(t *testing.T, env []string, command string) *clientTmux {
	t.Helper()
	s := &clientTmux{t: t, tmux: needTool(t, "tmux", "tmux"), sock: filepath.Join(t.TempDir(), "tmux")}
	start := exec.Command(s.tmux, "-S", s.sock, "new-session", "-d", "-s", "client", "-x", "160", "-y", "40",
		command+`; echo "exit status $?"; sleep 120`)
	start.Env = append(os.Environ(), env...)
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("starting %q in tmux: %v: %s", command, err, out)
	}
	t.Cleanup(func() { exec.Command(s.tmux, "-S", s.sock, "kill-server").Run() })
	return s
}

// screen returns what the client shows.
func (s *clientTmux) screen() string {
	out, _ := exec.Command(s.tmux, "-S", s.sock, "capture-pane", "-p", "-t", "client").Output()
	return string(out)
}

// keys types k (tmux send-keys names: "Enter", "C-u").
func (s *clientTmux) keys(k ...string) {
	s.t.Helper()
	if out, err := exec.Command(s.tmux, append([]string{"-S", s.sock, "send-keys", "-t", "client"}, k...)...).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys %q: %v %s", k, err, out)
	}
}

// literal types text as it is.
func (s *clientTmux) literal(text string) {
	s.t.Helper()
	if out, err := exec.Command(s.tmux, "-S", s.sock, "send-keys", "-t", "client", "-l", text).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys -l %q: %v %s", text, err, out)
	}
}

// waitFor waits up to 30 s for the screen to show one of what, and
// returns the one it shows.
func (s *clientTmux) waitFor(what ...string) string {
	s.t.Helper()
	w := s.waitForWithin(30*time.Second, what...)
	if w == "" {
		s.t.Fatalf("the screen did not show %q in 30 s:\n%s", what, s.screen())
	}
	return w
}

// waitForWithin waits up to d for the screen to show one of what, and
// returns the one it shows, or "".
func (s *clientTmux) waitForWithin(d time.Duration, what ...string) string {
	deadline := time.Now().Add(d)
	for {
		scr := s.screen()
		for _, w := range what {
			if strings.Contains(scr, w) {
				return w
			}
		}
		if time.Now().After(deadline) {
			return ""
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shellLine makes a shell command line of args.
func shellLine(args ...string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestAercSends: aerc, in tmux as a person uses it (:compose with the
// headers given and the body from a template, the attachment added with :attach on its review screen, sent with
// y), sends through the daemon's submission port (outgoing =
// smtp://, unencrypted on loopback) and copies the message to Sent itself (copy-to, its
// default).
func TestAercSends(t *testing.T) {
	t.Parallel()
	aerc := needTool(t, "aerc", "aerc")
	r := newClientSendRig(t)
	conf := filepath.Join(r.home, ".config", "aerc")
	if err := os.MkdirAll(conf, 0o700); err != nil {
		t.Fatal(err)
	}
	source := url.URL{Scheme: "imap+insecure", User: url.UserPassword("alice", "pw"), Host: fmt.Sprintf("127.0.0.1:%d", r.imapPort)}
	outgoing := url.URL{Scheme: "smtp", User: url.UserPassword("alice", "pw"), Host: r.rec.addr}
	accounts := fmt.Sprintf("[cspool]\nsource = %s\noutgoing = %s\ndefault = INBOX\nfrom = Alice <alice@example.org>\ncopy-to = Sent\n",
		source.String(), outgoing.String())
	if err := os.WriteFile(filepath.Join(conf, "accounts.conf"), []byte(accounts), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "aerc.conf"), []byte("[compose]\neditor = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(conf, "templates"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "templates", "body"), []byte("To: "+clientTo+"\nSubject: "+clientSubject+"\nBcc: "+clientBcc+"\n\n"+clientBody), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"TERM=xterm", "HOME=" + r.home, "XDG_CONFIG_HOME=" + filepath.Join(r.home, ".config"),
		"XDG_RUNTIME_DIR=" + r.home, "LC_ALL=C.UTF-8"}
	tm := startClientTmux(t, env, shellLine(aerc))
	tm.waitFor("Connected")
	// The message from a template: its header, then its body.
	tm.literal(":compose -T body")
	tm.keys("Enter")
	tm.waitFor("Send this email?")
	tm.keys(":attach "+r.attach, "Enter")
	tm.waitFor(clientAttachName)
	tm.keys("y")
	// aerc says "Message sent" for a few seconds and closes the composer;
	// it shows an error, and keeps the composer, when sending fails.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		scr := tm.screen()
		if strings.Contains(scr, "Message sent") ||
			(!strings.Contains(scr, "Send this email?") && len(r.host.Received()) > 0 && !strings.Contains(scr, "send:")) {
			break
		}
		if strings.Contains(scr, "send:") || time.Now().After(deadline) {
			t.Fatalf("aerc did not report the message sent; the screen:\n%s", scr)
		}
	}
	r.check()
	tm.keys(":quit", "Enter")
}

// TestMailutilsSends: GNU Mailutils' mail, in batch mode, sends through
// the daemon's submission port (sendmail=smtp://) and saves its own copy
// in Sent over IMAP (record=imap://), before it submits the message. It
// writes no Message-ID (the listener adds one to what it queues), nor a
// From field (-a adds one), and its envelope sender is the local user
// unless -r names it; its copy is what it sends and the Bcc field. Before,
// its copy, without a Message-ID, was not told for the message sent, and
// Sent held two copies of it.
func TestMailutilsSends(t *testing.T) {
	t.Parallel()
	mailBin := needTool(t, "mail", "mailutils")
	r := newClientSendRig(t)
	rc := filepath.Join(r.home, "mailrc")
	conf := fmt.Sprintf("set sendmail=\"smtp://alice:pw@127.0.0.1:%s\"\nset record=\"imap://alice:pw@127.0.0.1:%d/Sent\"\n",
		r.recPort(), r.imapPort)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.runClient(r.body, []string{"MAILRC=" + rc}, mailBin, "-n", "--no-config", "-r", "alice@example.org",
		"-a", "From: Alice <alice@example.org>", "-a", "Bcc: "+clientBcc, "-s", clientSubject, "-A", r.attach, clientTo)
	r.check()
}

// clawsSendAccount is Claws Mail's accountrc for sending: IMAP on the
// daemon, SMTP through the recorder with AUTH, the sent copy saved in
// the IMAP Sent folder. The passwords are given in the clear, which
// Claws Mail takes into its password store at start.
const clawsSendAccount = `[Account: 1]
account_name=cspool
is_default=1
name=Alice
address=alice@example.org
protocol=3
receive_server=127.0.0.1
set_imapport=1
imap_port=%d
user_id=alice
password=pw
imap_auth_method=0
ssl_imap=0
imap_subsonly=0
smtp_server=127.0.0.1
set_smtpport=1
smtp_port=%s
use_smtp_auth=1
smtp_auth_method=0
smtp_user_id=alice
smtp_password=pw
ssl_smtp=0
save_message=1
set_sent_folder=1
sent_folder=#imap/cspool/Sent
account_id=1
`

// TestClawsMailSends: Claws Mail (Debian's, under Xvfb) composes the
// message from its command line (--compose with a mailto: URL, --attach)
// and sends it with Ctrl+Return from its compose window, through the
// daemon's submission port, saving its copy in the IMAP Sent folder.
func TestClawsMailSends(t *testing.T) {
	t.Parallel()
	claws := needTool(t, "claws-mail", "claws-mail")
	needTool(t, "Xvfb", "xvfb")
	needTool(t, "xdotool", "xdotool")
	r := newClientSendRig(t)
	cfg, home, mail := filepath.Join(r.home, "cfg"), filepath.Join(r.home, "home"), filepath.Join(r.home, "Mail")
	for _, p := range []string{cfg, home, mail} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for name, text := range map[string]string{
		"accountrc": fmt.Sprintf(clawsSendAccount, r.imapPort, r.recPort()),
		"folderlist.xml": fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<folderlist>
	<folder type="mh" name="Mailbox" path="%s" collapsed="0">
	</folder>
</folderlist>
`, mail),
		"clawsrc": "[Common]\nenable_aspell=0\ncheck_while_typing=0\nconfirm_on_exit=0\nclean_trash_on_exit=0\nwarn_queued_on_exit=0\nwork_offline=0\nautochk_newmail=0\n",
	} {
		if err := os.WriteFile(filepath.Join(cfg, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	disp := testproc.XServer(t)
	env := append(os.Environ(), "DISPLAY="+disp, "HOME="+home, "NO_AT_BRIDGE=1", "LC_ALL=C.UTF-8")
	cm := exec.Command(claws, "--alternate-config-dir", cfg)
	cm.Env = env
	testproc.StartGroup(t, cm, filepath.Join(r.home, "claws.log"), "Claws Mail")
	remote := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, claws, append([]string{"--alternate-config-dir", cfg}, args...)...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("claws-mail %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// Claws Mail ignores SIGTERM while it runs: it is asked to quit
	// first (cleanups run last registered first).
	t.Cleanup(func() {
		c := exec.Command(claws, "--alternate-config-dir", cfg, "--exit")
		c.Env = env
		c.Run()
	})
	window := func(name string) string {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if out, err := testproc.Xdotool(disp, "search", "--onlyvisible", "--name", name); err == nil && out != "" {
				id := strings.Fields(out)[0]
				if _, err := testproc.Xdotool(disp, "windowfocus", "--sync", id); err != nil {
					t.Fatalf("focusing %q: %v", name, err)
				}
				return id
			}
			if time.Now().After(deadline) {
				t.Fatalf("no window named %q", name)
			}
		}
	}
	window("Claws Mail")
	// A mailto: URL's query is percent-encoded; Claws Mail takes a +
	// for itself, not for a blank.
	escape := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	mailto := "mailto:" + clientTo + "?subject=" + escape(clientSubject) + "&bcc=" + clientBcc + "&body=" + escape(clientBody)
	remote("--compose", mailto, "--attach", r.attach)
	window("Compose message")
	time.Sleep(time.Second)
	if _, err := testproc.Xdotool(disp, "key", "ctrl+Return"); err != nil {
		t.Fatal(err)
	}
	r.host.Wait(t, 1, 60*time.Second)
	r.check()
}
