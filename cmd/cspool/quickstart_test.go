package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

// TestQuickstart runs cspool quickstart twice on one state folder: the first
// run delivers the welcome message, takes one more delivery through the
// printed deliver line, and stops on SIGINT; the second run has the same
// password and both messages, and no second welcome.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	sh := needTool(t, "sh", "dash")
	bin := buildServerBinary(t)
	work := t.TempDir()
	state := filepath.Join(work, "state")
	ports := []string{fmt.Sprint(freePort(t)), fmt.Sprint(freePort(t)), fmt.Sprint(freePort(t))}
	args := []string{"quickstart", "--dir", state, "--user", "alice",
		"--http-port", ports[0], "--imap-port", ports[1], "--lmtp-port", ports[2]}
	extra := "From: carol@example.org\r\nTo: alice@localhost\r\nSubject: second\r\n\r\nanother one\r\n"
	if err := os.WriteFile(filepath.Join(work, "message.eml"), []byte(extra), 0o600); err != nil {
		t.Fatal(err)
	}

	// First run.
	qs := startProc(t, "cspool quickstart", work, os.Environ(), bin, args...)
	out := qs.waitOutput(t, "Spool server HTTP API:", 60*time.Second)
	host, port := settingValue(t, out, "server"), settingValue(t, out, "port")
	user, password := settingValue(t, out, "user"), settingValue(t, out, "password")
	if host != "127.0.0.1" || port != ports[1] || user != "alice" || len(password) < 16 {
		t.Fatalf("printed server %q port %q user %q password %q; want 127.0.0.1, %s, alice and a password", host, port, user, password, ports[1])
	}
	if !strings.Contains(out, "swaks --protocol LMTP --server 127.0.0.1:"+ports[2]) {
		t.Errorf("output lacks the swaks line for LMTP port %s", ports[2])
	}
	// A client set up from the settings at once finds the welcome message
	// at its first SELECT (before, INBOX was empty for up to a second).
	sel := runCmd(t, work, os.Environ(), "", python, "-c",
		"import imaplib,sys; M=imaplib.IMAP4(sys.argv[1],int(sys.argv[2])); M.login(sys.argv[3],sys.argv[4]); print('EXISTS', M.select('INBOX')[1][0].decode()); M.logout()",
		host, port, user, password)
	if !strings.Contains(sel, "EXISTS 1") {
		t.Errorf("the first SELECT right after the settings printed %q, want EXISTS 1 (the welcome message)", sel)
	}
	msgs := fetchIMAP(t, python, host, port, user, password, 1)
	if len(msgs) != 1 || !bytes.Contains(msgs[0], []byte("Subject: Welcome to cspool\r\n")) {
		t.Fatalf("first run: %d messages, want the welcome message; first:\n%s", len(msgs), msgs[0])
	}
	// The printed deliver line, pasted into a shell as it is.
	line := deliverLine(t, out)
	if !strings.HasPrefix(line, bin+" deliver ") {
		t.Errorf("deliver line %q does not start with the binary's path", line)
	}
	dout := runCmd(t, work, os.Environ(), "", sh, "-c", line)
	if !strings.Contains(dout, "delivered") {
		t.Errorf("deliver line printed %q", dout)
	}
	msgs = fetchIMAP(t, python, host, port, user, password, 2)
	if len(msgs) != 2 || !bytes.Equal(msgs[1], []byte(extra)) {
		t.Fatalf("after delivering: %d messages, want the welcome and %q", len(msgs), extra)
	}
	qs.stop(t, syscall.SIGINT, 30*time.Second)
	if log := qs.stderr.String(); !strings.Contains(log, "stopped") || strings.Contains(log, password) || strings.Contains(log, "another one") {
		t.Errorf("first run's log: want \"stopped\", no password, no message contents:\n%s", log)
	}
	checkStateFolder(t, state, strings.Contains(out, "Sending (SMTP"))

	// A second quickstart for another user on the same folder is refused.
	cmd := exec.Command(bin, "quickstart", "--dir", state, "--user", "bob", "--http-port", "0", "--imap-port", "0", "--lmtp-port", "0")
	if b, err := cmd.CombinedOutput(); exitCode(t, err) != 1 || !strings.Contains(string(b), `belongs to user "alice"`) {
		t.Errorf("quickstart --user bob on alice's folder: %v\n%s\nwant exit 1 naming alice", err, b)
	}

	// Second run: same password, both messages, no second welcome.
	qs2 := startProc(t, "cspool quickstart (again)", work, os.Environ(), bin, args...)
	out2 := qs2.waitOutput(t, "Spool server HTTP API:", 60*time.Second)
	if pw := settingValue(t, out2, "password"); pw != password {
		t.Errorf("second run's password %q, want the first run's %q", pw, password)
	}
	msgs = fetchIMAP(t, python, host, port, user, password, 2)
	if len(msgs) != 2 || !bytes.Contains(msgs[0], []byte("Welcome to cspool")) || !bytes.Equal(msgs[1], []byte(extra)) {
		t.Errorf("second run: %d messages, want the welcome and the delivered one", len(msgs))
	}
	// While it runs, a third one cannot take its ports.
	cmd = exec.Command(bin, args...)
	if b, err := cmd.CombinedOutput(); exitCode(t, err) != 75 || !strings.Contains(string(b), "already running") {
		t.Errorf("a second quickstart on the same ports: %v\n%s\nwant exit 75 (temporary) and a hint", err, b)
	}
	qs2.stop(t, syscall.SIGTERM, 30*time.Second)

	// The log holds exactly the two deliveries.
	st, err := sqlitestore.Open(filepath.Join(state, "spool"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if head, err := st.Head(ctx, "alice"); err != nil || head != 2 {
		t.Errorf("alice's log head %d (%v), want 2: one welcome, one delivery", head, err)
	}
}

// checkStateFolder holds the state folder of a quickstart that ran and
// stopped to docs/QUICKSTART.md's list ("The state folder"): each name
// listed is there, as a folder when it ends in "/", with the mode its
// line gives ("(0600)", "(secret: 0600)" for its first name, "(0700)"),
// and nothing else is, but the outbox when sending was off; in spool/,
// the files its line names in parentheses. The list left out mail.db.lock
// and mail.db.outbox.
func checkStateFolder(t *testing.T, state string, sending bool) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/QUICKSTART.md")
	if err != nil {
		t.Fatal(err)
	}
	var listing string
	for _, b := range codeBlocks(string(doc)) {
		if strings.HasPrefix(b, "cspool-quickstart/\n") {
			listing = b
		}
	}
	lines := strings.Split(strings.TrimSpace(listing), "\n")
	if len(lines) < 2 {
		t.Fatalf("docs/QUICKSTART.md: no block starting \"cspool-quickstart/\"")
	}
	if info, err := os.Stat(state); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("state folder: %v, %v; want mode 0700", info, err)
	}
	listed := map[string]bool{}
	for _, l := range lines[1:] {
		names, what, _ := strings.Cut(strings.TrimSpace(l), "   ")
		for i, name := range strings.Fields(names) {
			listed[strings.TrimSuffix(name, "/")] = true
			info, err := os.Stat(filepath.Join(state, name))
			if err != nil && name == "mail.db.outbox" && !sending {
				continue
			}
			if err != nil || info.IsDir() != strings.HasSuffix(name, "/") {
				t.Errorf("docs/QUICKSTART.md lists %s in the state folder: %v", name, err)
				continue
			}
			for _, mode := range []string{"0600", "0700"} {
				if (strings.Contains(what, "("+mode+")") || i == 0 && strings.Contains(what, "(secret: "+mode+")")) && fmt.Sprintf("%04o", info.Mode().Perm()) != mode {
					t.Errorf("%s has mode %04o; docs/QUICKSTART.md says %s", name, info.Mode().Perm(), mode)
				}
			}
			if name == "spool/" {
				_, inside, _ := strings.Cut(what, "(")
				for _, f := range strings.Split(strings.TrimSuffix(strings.TrimSpace(inside), ")"), ", ") {
					if f != "WAL" {
						if _, err := os.Stat(filepath.Join(state, name, f)); err != nil {
							t.Errorf("docs/QUICKSTART.md lists %s in spool/: %v", f, err)
						}
					}
				}
			}
		}
	}
	entries, err := os.ReadDir(state)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !listed[e.Name()] {
			t.Errorf("the state folder holds %s, which docs/QUICKSTART.md does not list", e.Name())
		}
	}
}

// deliverLine finds the printed deliver command and points it at
// message.eml.
func deliverLine(t *testing.T, out string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.Contains(l, " deliver --user=") {
			if !strings.HasSuffix(l, "< message.eml") {
				t.Fatalf("deliver line %q does not read message.eml", l)
			}
			return l
		}
	}
	t.Fatalf("no deliver line in output:\n%s", out)
	return ""
}

func TestQuickstartUsage(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	for _, args := range [][]string{
		{"quickstart", "--imap-port", "70000"},
		{"quickstart", "--user", "../x"},
		{"quickstart", "extra"},
	} {
		errb.Reset()
		if code := run(e, args); code != 2 {
			t.Errorf("cspool %v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
	// A taken port fails with a hint naming the flag.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errb.Reset()
	taken := fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
	code := run(e, []string{"quickstart", "--dir", t.TempDir(), "--http-port", "0", "--lmtp-port", "0", "--imap-port", taken})
	if code != 75 || !strings.Contains(errb.String(), "--imap-port") {
		t.Errorf("taken IMAP port: exit %d, stderr %q; want 75 (temporary) and a hint naming --imap-port", code, errb.String())
	}
	out.Reset()
	if code := run(e, []string{"quickstart", "-h"}); code != 0 || !strings.Contains(out.String(), "Example:") {
		t.Errorf("quickstart -h: exit %d, output %q", code, out.String())
	}
}

// TestQuickstartStatusAddr: the quickstart serves its status page where
// --status-addr says, refuses to start when that address is taken, and
// when another program holds the default address it prints no URL there
// (whatever answers is not this quickstart) and sends it nothing. The
// banner's cspool status line, run as printed, reaches this quickstart.
func TestQuickstartStatusAddr(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	sh := needTool(t, "sh", "dash")
	bin := buildServerBinary(t)
	work := t.TempDir()
	args := func(state string, extra ...string) []string {
		return append([]string{"quickstart", "--dir", filepath.Join(work, state), "--user", "alice", "--http-port", "0",
			"--imap-port", "0", "--lmtp-port", "0", "--smtp-port", "0"}, extra...)
	}

	// An explicit address that is taken: no start, a hint naming the flag.
	taken := squat(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	code, _, errOut := runExit(t, work, os.Environ(), bin, args("a", "--status-addr", taken.addr)...)
	if code != 75 || !strings.Contains(errOut, "--status-addr") {
		t.Errorf("quickstart with a taken --status-addr: exit %d, stderr %q; want 75 (temporary) and a hint naming --status-addr", code, errOut)
	}

	// Port 0: a page of its own, which shows this quickstart. Started as
	// docs/QUICKSTART.md prints "two quickstarts side by side", the
	// binary for go run and the folder the test's.
	side := docShellBlocks(t, "docs/QUICKSTART.md", "## What it prints")
	if len(side) != 1 || !strings.HasPrefix(side[0], "go run ./cmd/cspool quickstart ") || !strings.Contains(side[0], "--status-addr 127.0.0.1:0") {
		t.Fatalf("docs/QUICKSTART.md, What it prints: sh blocks %q, want the second quickstart's command, with --status-addr 127.0.0.1:0", side)
	}
	qs := startRecipe(t, "cspool quickstart", side[0], work, os.Environ(), []string{"go run ./cmd/cspool", bin, "/tmp/qs2", filepath.Join(work, "qs2")})
	qs.waitOutput(t, "See this quickstart's state with:", 60*time.Second)
	out := qs.waitOutput(t, "IMAP).", 10*time.Second)
	port, password, user := settingValue(t, out, "port"), settingValue(t, out, "password"), settingValue(t, out, "user")
	m := regexp.MustCompile(`or in a browser at (http://127\.0\.0\.1:(\d+)/) `).FindStringSubmatch(out)
	if m == nil || m[2] == "0" {
		t.Fatalf("banner names no status page of its own:\n%s", out)
	}
	page := (&statusSetup{user: user, password: password, statusAddr: strings.TrimSuffix(strings.TrimPrefix(m[1], "http://"), "/")}).page(t)
	if !strings.Contains(page, `<td id="imap-port" class="mono">`+port+`</td>`) {
		t.Errorf("the page at %s is not this quickstart's (IMAP port %s):\n%s", m[1], port, page)
	}
	// The status line of the banner, pasted into a shell as it is.
	line := ""
	for _, l := range strings.Split(out, "\n") {
		if _, cmd, ok := strings.Cut(l, "See this quickstart's state with: "); ok {
			line = cmd
		}
	}
	status := runCmd(t, work, os.Environ(), "", sh, "-c", line)
	if !strings.Contains(status, "127.0.0.1 port "+port+", user "+user) || !strings.Contains(status, "Status page:   "+m[1]) {
		t.Errorf("%s printed:\n%s\nwant this quickstart's IMAP port %s and page %s", line, status, port, m[1])
	}
	// The search index and the outbox, as the daemon shows them.
	if !strings.Contains(status, "Search index:") || !strings.Contains(status, "Outbox:") {
		t.Errorf("%s shows no search index or outbox:\n%s", line, status)
	}
	for _, id := range []string{`id="search-index"`, `id="outbox"`} {
		if !strings.Contains(page, id) {
			t.Errorf("the status page at %s lacks %s:\n%s", m[1], id, page)
		}
	}
	qs.stop(t, syscall.SIGINT, 30*time.Second)

	// The default address held by another program: no URL printed. That
	// program is this test, or, when the address is taken already, whoever
	// holds it (another quickstart, say): the case is the same.
	var sq *squatter
	if ln, err := net.Listen("tcp", qsStatusAddr); err == nil {
		ln.Close()
		sq = squat(t, qsStatusAddr)
	}
	qs = startProc(t, "cspool quickstart (default page taken)", work, os.Environ(), bin, args("b")...)
	out = qs.waitOutput(t, "choose a free address with --status-addr.", 60*time.Second)
	if strings.Contains(out, "http://"+qsStatusAddr) || !strings.Contains(out, "The status page is NOT SERVED: "+qsStatusAddr+" was in use") {
		t.Errorf("with the default page address taken the banner says:\n%s", out)
	}
	qs.stop(t, syscall.SIGINT, 30*time.Second)
	if sq == nil {
		return
	}
	if n, data := sq.received(); n != 0 {
		t.Errorf("the program holding %s got %d connections: %q", qsStatusAddr, n, data)
	}
}

// TestQuickstartFolderOfOthers: a state folder that another user made
// first (its help's example is --dir /tmp/demo), or one others may write
// to, was taken as it was: its owner could then remove and replace the
// keys, the password file and the databases in it (docs/SECURITY.md
// section 10, the planted password). Now the quickstart refuses it before
// making anything there.
func TestQuickstartFolderOfOthers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	cases := []struct {
		name, want string
		setup      func(dir string) error
		needRoot   bool
	}{
		{"mode 0777", "may be written to by other users (mode 0777)", func(d string) error { return os.Chmod(d, 0o777) }, false},
		{"mode 0775", "may be written to by other users (mode 0775)", func(d string) error { return os.Chmod(d, 0o775) }, false},
		{"owned by nobody", "is owned by", func(d string) error { return os.Chown(d, 65534, 65534) }, true},
	}
	for _, c := range cases {
		if c.needRoot && os.Geteuid() != 0 {
			t.Logf("%s: needs root to give a folder to another user; skipped", c.name)
			continue
		}
		dir := filepath.Join(t.TempDir(), "demo")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := c.setup(dir); err != nil {
			t.Fatal(err)
		}
		code, _, errOut := runExit(t, t.TempDir(), nil, bin, "quickstart", "--dir", dir, "--http-port", "0", "--lmtp-port", "0",
			"--imap-port", "0", "--smtp-port", "0", "--status-addr", "")
		if code != 77 || !strings.Contains(errOut, c.want) || !strings.Contains(errOut, "hint: pick a folder of your own") {
			t.Errorf("state folder %s: exit %d, stderr %q; want 77, %q and a hint", c.name, code, errOut, c.want)
		}
		if names, _ := os.ReadDir(dir); len(names) != 0 {
			t.Errorf("state folder %s: the refused quickstart made %d files there", c.name, len(names))
		}
	}
}

// TestQuickstartKeyHints: a state folder whose key was made open to others
// (chmod 644) or replaced by another pair gets a hint to set the mode back
// or put the folder's own key back, and the folder is left as it was.
// Every such refusal said "remove the state folder to start afresh",
// which, followed, lost the mail kept in it.
func TestQuickstartKeyHints(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := &quickstart{dir: dir}
	if err := q.prepare("alice", true); err != nil {
		t.Fatalf("first prepare: %v", err)
	}
	hintOf := func(err error) string {
		var h *hintError
		if !errors.As(err, &h) {
			t.Fatalf("no hint with %v", err)
		}
		return h.hint
	}
	sec := q.path(qsUserSec)
	if err := os.Chmod(sec, 0o644); err != nil {
		t.Fatal(err)
	}
	err := (&quickstart{dir: dir}).prepare("alice", true)
	if h := hintOf(err); !errors.Is(err, keys.ErrTooOpen) || !strings.HasPrefix(h, "run: chmod 600 "+sec) {
		t.Errorf("user.sec open to others: %v, hint %q; want the chmod", err, h)
	}
	if err := os.Chmod(sec, 0o600); err != nil {
		t.Fatal(err)
	}
	// Another pair in place of the folder's own.
	for _, name := range []string{qsUserSec, qsUserPub} {
		if err := os.Rename(q.path(name), q.path(name+".own")); err != nil {
			t.Fatal(err)
		}
	}
	other, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(other, sec, q.path(qsUserPub), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = (&quickstart{dir: dir}).prepare("alice", true)
	h := hintOf(err)
	if !strings.Contains(err.Error(), "does not hold the key in") || !strings.Contains(h, "not the key pair this folder was made with") ||
		!strings.Contains(h, "put it back") || strings.HasPrefix(h, "remove the state folder") {
		t.Errorf("another key pair: %v, hint %q; want the pair to be put back first", err, h)
	}
	// Put back, the folder opens as before.
	for _, name := range []string{qsUserSec, qsUserPub} {
		if err := os.Rename(q.path(name+".own"), q.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := (&quickstart{dir: dir}).prepare("alice", true); err != nil {
		t.Errorf("the folder's own keys put back: %v", err)
	}
}
