package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/statuspage"
	"cspool/internal/syncer"
)

// statusSetup is a spool server and, once started, a device daemon, run
// from the built binary in a fresh folder.
type statusSetup struct {
	bin, dir, user string
	env            []string
	spoolURL       string
	server         *proc
	daemon         *proc
	imapPort       int
	statusAddr     string
	password       string
	db             string // the daemon's --db, relative to dir
}

// newStatusSetup makes keys and starts `cspool server` (test mode, with the
// spool key so that `cspool deliver` may append).
func newStatusSetup(t *testing.T, bin string) *statusSetup {
	t.Helper()
	s := &statusSetup{bin: bin, dir: t.TempDir(), user: "alice"}
	s.env = append(os.Environ(), "USER="+s.user)
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, s.dir, s.env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	port := freePort(t)
	s.spoolURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	s.server = startProc(t, "cspool server", s.dir, s.env, bin, "server", "--port", fmt.Sprint(port), "--spool-key", "spool.sec")
	waitHealthy(t, s.spoolURL, s.server)
	return s
}

// keyFlags are the flags imap-server and sync share.
func (s *statusSetup) keyFlags(db string) []string {
	return []string{"--user", s.user, "--user-key=user.sec", "--spool-key=spool.pub", "--user-public-key=user.pub",
		"--db", db, "--spool-server", s.spoolURL}
}

// startDaemon runs `cspool imap-server` on free ports with database db.
func (s *statusSetup) startDaemon(t *testing.T, db string) {
	t.Helper()
	s.statusAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	out := s.startDaemonWith(t, db, "--status-addr", s.statusAddr)
	if want := "http://" + s.statusAddr + "/"; !strings.HasPrefix(settingValue(t, out, "status"), want) {
		t.Fatalf("daemon printed status %q, want %s", settingValue(t, out, "status"), want)
	}
}

// startDaemonWith runs `cspool imap-server` on a free IMAP port with
// database db and extra flags, and returns the settings it printed.
func (s *statusSetup) startDaemonWith(t *testing.T, db string, extra ...string) string {
	t.Helper()
	s.imapPort, s.db = freePort(t), db
	args := append(append([]string{"imap-server", "--port", fmt.Sprint(s.imapPort)}, extra...), s.keyFlags(db)...)
	s.daemon = startProc(t, "cspool imap-server", s.dir, s.env, s.bin, args...)
	out := s.daemon.waitOutput(t, "state:", 30*time.Second)
	s.password = daemonPassword(t, out)
	return out
}

// socket is the daemon's control socket.
func (s *statusSetup) socket() string {
	return controlSocketPath(filepath.Join(s.dir, s.db))
}

// deliver appends n messages with `cspool deliver`.
func (s *statusSetup) deliver(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("msg%d", i)
		msg := fmt.Sprintf("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: status test %d\r\n\r\nBody %d.\r\n", i, i)
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		runCmd(t, s.dir, s.env, name, s.bin, "deliver", "--user", s.user, "--user-key=user.pub", "--spool-key=spool.sec",
			"--spool-server", s.spoolURL)
	}
}

// waitReport polls the daemon's report on its control socket (at most
// 30 s) until ok accepts it, and returns it.
func (s *statusSetup) waitReport(t *testing.T, what string, ok func(*statuspage.Report) bool) *statuspage.Report {
	t.Helper()
	var last *statuspage.Report
	var err error
	for range 300 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, err = statuspage.FetchSocket(ctx, s.socket())
		cancel()
		if err == nil && ok(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("daemon's status never showed %s; last %+v, err %v", what, last, err)
	return nil
}

func inboxCount(r *statuspage.Report) int {
	for _, mb := range r.Mailboxes {
		if mb.Name == "INBOX" {
			return int(mb.Messages)
		}
	}
	return -1
}

// runExit runs the binary (bounded) and returns its exit status, stdout and
// stderr.
func runExit(t *testing.T, dir string, env []string, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return exitCode(t, err), stdout.String(), stderr.String()
}

func TestStatusCommand(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	s.startDaemon(t, "mail.db")
	s.deliver(t, 2)
	s.waitReport(t, "position 2, INBOX 2 and the search index complete", func(r *statuspage.Report) bool {
		return r.Sync.Position == 2 && inboxCount(r) == 2 && r.Search != nil && r.Search.Unindexed == 0
	})

	status := []string{"status", "--db", "mail.db"}
	code, out, errOut := runExit(t, s.dir, s.env, bin, status...)
	if code != 0 {
		t.Fatalf("cspool status: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"cspool daemon for alice", fmt.Sprintf("port %d", s.imapPort), "connected to the spool",
		"2 of 2 (up to date)", "mail.db.password", "Status page:   http://" + s.statusAddr + "/", "Search index:  complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("cspool status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, s.password) || strings.Contains(out, "status test") {
		t.Errorf("cspool status shows the password or message contents:\n%s", out)
	}
	if !strings.Contains(strings.Join(strings.Fields(out), " "), "INBOX 2 2") {
		t.Errorf("cspool status does not show INBOX with 2 messages, 2 unseen:\n%s", out)
	}

	// --json is the report itself, and the same from another directory
	// with an absolute --db.
	code, out, errOut = runExit(t, t.TempDir(), s.env, bin, "status", "--db", filepath.Join(s.dir, "mail.db"), "--json")
	var rep statuspage.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Sync.Head != 2 || rep.IMAP.Port != s.imapPort ||
		rep.Page.URL != "http://"+s.statusAddr+"/" {
		t.Errorf("cspool status --json: exit %d, report %+v, stderr %q", code, rep, errOut)
	}

	cases := []struct {
		name      string
		args      []string
		code      int
		wantError string
		wantHint  string
	}{
		{"no daemon", []string{"status", "--db", "nowhere.db"}, 1, "no cspool daemon answering for nowhere.db", "cspool imap-server --db nowhere.db"},
		{"no password sent", append(status, "--password", s.password), 2, "--password is gone", ""},
		{"no status address", append(status, "--status-addr", s.statusAddr), 2, "--status-addr is gone", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runExit(t, s.dir, s.env, bin, c.args...)
			if code != c.code || !strings.Contains(errOut, c.wantError) || !strings.Contains(errOut, c.wantHint) {
				t.Errorf("exit %d, stderr %q; want %d with %q and %q", code, errOut, c.code, c.wantError, c.wantHint)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
	s.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	if _, err := os.Lstat(s.socket()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the control socket outlived its daemon: %v", err)
	}
	code, _, errOut = runExit(t, s.dir, s.env, bin, status...)
	if code != 1 || !strings.Contains(errOut, "no cspool daemon answering for mail.db") {
		t.Errorf("status after the daemon stopped: exit %d, stderr %q; want 1, no daemon answering", code, errOut)
	}

	// A killed daemon leaves its socket; nothing answers there, and the
	// next daemon replaces it.
	s.startDaemon(t, "mail.db")
	s.waitReport(t, "position 2", func(r *statuspage.Report) bool { return r.Sync.Position == 2 })
	s.daemon.cmd.Process.Kill()
	s.daemon.exited, s.daemon.err = true, <-s.daemon.done
	if _, err := os.Lstat(s.socket()); err != nil {
		t.Fatalf("a killed daemon's socket is gone (%v); the stale case is not tested", err)
	}
	code, _, errOut = runExit(t, s.dir, s.env, bin, status...)
	if code != 1 || !strings.Contains(errOut, "no cspool daemon answering") || !strings.Contains(errOut, "connection refused") {
		t.Errorf("status after the daemon was killed: exit %d, stderr %q; want 1, connection refused", code, errOut)
	}
	s.startDaemon(t, "mail.db")
	s.waitReport(t, "position 2 after the restart", func(r *statuspage.Report) bool { return r.Sync.Position == 2 })
	s.daemon.stop(t, syscall.SIGTERM, 30*time.Second)

	// A socket directory other users could reach: both sides refuse.
	runDir := filepath.Dir(s.socket())
	if err := os.Chmod(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runExit(t, s.dir, s.env, bin, status...)
	if code != 1 || !strings.Contains(errOut, "mode 0755 lets other users in") || !strings.Contains(errOut, "chmod 700") || out != "" {
		t.Errorf("status with a 0755 socket directory: exit %d, stdout %q, stderr %q; want 1, the mode named, a chmod hint", code, out, errOut)
	}
	args := append([]string{"imap-server", "--port", fmt.Sprint(freePort(t)), "--status-addr", ""}, s.keyFlags("mail.db")...)
	code, _, errOut = runExit(t, s.dir, s.env, bin, args...)
	if code != 1 || !strings.Contains(errOut, "mode 0755 lets other users in") || !strings.Contains(errOut, "chmod 700") {
		t.Errorf("daemon with a 0755 socket directory: exit %d, stderr %q; want 1, the mode named, a chmod hint", code, errOut)
	}
}

// TestStatusWithSquatter: another local user holds the status page's
// default port before the daemon starts. The daemon says so and runs on;
// cspool status gets the right data through the control socket and sends
// the squatter nothing, least of all the password.
func TestStatusWithSquatter(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	squatter := squat(t, defaultStatusAddr)
	s := newStatusSetup(t, bin)
	out := s.startDaemonWith(t, "mail.db") // the default --status-addr
	if !strings.Contains(out, "status:   NOT SERVED: "+defaultStatusAddr+" was in use by another program") ||
		settingValue(t, out, "state") != "cspool status --db mail.db" {
		t.Errorf("the daemon did not say that %s is taken:\n%s", defaultStatusAddr, out)
	}
	s.deliver(t, 2)
	s.waitReport(t, "position 2 and INBOX 2", func(r *statuspage.Report) bool {
		return r.Sync.Position == 2 && inboxCount(r) == 2
	})
	code, out, errOut := runExit(t, s.dir, s.env, bin, "status", "--db", "mail.db")
	if code != 0 {
		t.Fatalf("cspool status: exit %d, stderr %q", code, errOut)
	}
	flat := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{fmt.Sprintf("port %d", s.imapPort), "2 of 2 (up to date)", "INBOX 2 2",
		"Status page: NOT SERVED: " + defaultStatusAddr + " was in use by another program"} {
		if !strings.Contains(flat, want) {
			t.Errorf("cspool status lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(s.daemon.stderr.String(), "NO STATUS PAGE") {
		t.Errorf("the daemon's log does not say the page is missing:\n%s", s.daemon.stderr.String())
	}
	s.daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	conns, got := squatter.received()
	if conns != 0 || strings.Contains(got, s.password) || strings.Contains(strings.ToLower(got), "authorization") {
		t.Errorf("the squatter on %s got %d connections and %q; want none", defaultStatusAddr, conns, got)
	}
}

// squatter is a listener on a port the daemon wants, recording what
// arrives.
type squatter struct {
	addr  string
	mu    sync.Mutex
	conns int
	data  bytes.Buffer
}

// squat listens on addr (waiting up to 2 min while another test's daemon
// holds it) and records every connection until the test ends.
func squat(t *testing.T, addr string) *squatter {
	t.Helper()
	var ln net.Listener
	var err error
	for range 1200 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("cannot hold %s for the test: %v", addr, err)
	}
	sq := &squatter{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			sq.mu.Lock()
			sq.conns++
			sq.mu.Unlock()
			go func() {
				defer c.Close()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				sq.mu.Lock()
				sq.data.Write(buf[:n])
				sq.mu.Unlock()
			}()
		}
	}()
	return sq
}

func (sq *squatter) received() (int, string) {
	sq.mu.Lock()
	defer sq.mu.Unlock()
	return sq.conns, sq.data.String()
}

func TestSyncCommand(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	s := newStatusSetup(t, bin)
	const n = 5
	s.deliver(t, n)

	sync := append([]string{"sync", "--once"}, s.keyFlags("mail.db")...)
	code, out, errOut := runExit(t, s.dir, s.env, bin, sync...)
	if code != 0 {
		t.Fatalf("cspool sync: exit %d, stderr %q", code, errOut)
	}
	last := lastLine(out)
	if !strings.HasPrefix(last, fmt.Sprintf("synced to position %d (head %d): read %d entries (", n, n, n)) ||
		!strings.Contains(last, fmt.Sprintf("%d applied, 0 rejected", n)) {
		t.Errorf("cspool sync ended with %q, want position %d of %d, %d read and applied", last, n, n, n)
	}
	if strings.Contains(out, "\r") {
		t.Errorf("cspool sync wrote \\r to a pipe: %q", out)
	}
	if got := storeInbox(t, filepath.Join(s.dir, "mail.db")); got != n {
		t.Errorf("INBOX has %d messages after sync, want %d", got, n)
	}

	// Nothing new: a second sync reads nothing.
	code, out, errOut = runExit(t, s.dir, s.env, bin, sync...)
	if code != 0 || !strings.HasPrefix(lastLine(out), fmt.Sprintf("synced to position %d (head %d): read 0 entries", n, n)) {
		t.Errorf("second sync: exit %d, last line %q, stderr %q", code, lastLine(out), errOut)
	}

	// --once=false follows the log until stopped.
	follow := startProc(t, "cspool sync --once=false", s.dir, s.env, bin,
		append([]string{"sync", "--once=false", "--progress", "100ms"}, s.keyFlags("mail.db")...)...)
	s.deliver(t, 1)
	follow.waitOutput(t, fmt.Sprintf("position %d of %d, 0 remaining; read 1 entries", n+1, n+1), 30*time.Second)
	follow.stop(t, syscall.SIGTERM, 30*time.Second)
	if last := lastLine(follow.stdout.String()); !strings.HasPrefix(last, fmt.Sprintf("synced to position %d", n+1)) {
		t.Errorf("following sync ended with %q, want the summary at position %d", last, n+1)
	}

	// The daemon holds the database: sync refuses, and says why.
	s.startDaemon(t, "mail.db")
	code, _, errOut = runExit(t, s.dir, s.env, bin, sync...)
	if code != 75 || !strings.Contains(errOut, "database in use by another cspool process") || !strings.Contains(errOut, "cspool status") {
		t.Errorf("sync beside the daemon: exit %d, stderr %q; want 75 (temporary), database in use, hint cspool status", code, errOut)
	}
	// A second daemon on the same database is refused too.
	args := append([]string{"imap-server", "--port", fmt.Sprint(freePort(t)), "--status-addr", ""}, s.keyFlags("mail.db")...)
	code, _, errOut = runExit(t, s.dir, s.env, bin, args...)
	if code != 75 || !strings.Contains(errOut, "database in use") {
		t.Errorf("second daemon: exit %d, stderr %q; want 75 (temporary), database in use", code, errOut)
	}
	// Nor through another name for the same file: a symlink (it took a
	// lock of its own, DB.lock by its name, and ran beside the first), or
	// a hard link (refused even alone: SQLite names the WAL after it).
	for _, tc := range []struct {
		db, want string
		code     int
		link     func(old, new string) error
	}{
		{"other.db", "database in use", 75, os.Symlink},
		{"linked.db", "database has other names", 1, os.Link},
	} {
		db, want := tc.db, tc.want
		if err := tc.link(filepath.Join(s.dir, "mail.db"), filepath.Join(s.dir, db)); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"imap-server", "--port", fmt.Sprint(freePort(t)), "--status-addr", ""}, s.keyFlags(db)...)
		code, _, errOut = runExit(t, s.dir, s.env, bin, args...)
		if code != tc.code || !strings.Contains(errOut, want) {
			t.Errorf("second daemon on %s, another name of mail.db: exit %d, stderr %q; want %d, %s", db, code, errOut, tc.code, want)
		}
	}
	if err := os.Remove(filepath.Join(s.dir, "linked.db")); err != nil {
		t.Fatal(err)
	}
	s.daemon.stop(t, syscall.SIGTERM, 30*time.Second)

	// No spool: exit 75 (temporary) with a hint, the database untouched.
	s.server.stop(t, syscall.SIGTERM, 30*time.Second)
	code, out, errOut = runExit(t, s.dir, s.env, bin, sync...)
	if code != 75 || !strings.Contains(errOut, "syncing with "+s.spoolURL) || !strings.Contains(errOut, "cspool: hint:") {
		t.Errorf("sync without a spool: exit %d, stderr %q; want 75 naming %s, with a hint", code, errOut, s.spoolURL)
	}
	if want := fmt.Sprintf("stopped at position %d (head ?)", n+1); !strings.HasPrefix(lastLine(out), want) {
		t.Errorf("sync without a spool ended with %q, want %q", lastLine(out), want)
	}
	if got := storeInbox(t, filepath.Join(s.dir, "mail.db")); got != n+1 {
		t.Errorf("INBOX has %d messages after the failed sync, want %d", got, n+1)
	}
}

func lastLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[len(lines)-1]
}

// storeInbox opens the database (real SQLite) and counts INBOX.
func storeInbox(t *testing.T, path string) int {
	t.Helper()
	st, err := openDeviceDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mb, err := st.MailboxByName(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	return int(mb.Messages)
}

// fakeProgress feeds the progress printer.
type fakeProgress struct {
	st             syncer.Status
	entries, bytes int64
}

func (f *fakeProgress) Status() syncer.Status { return f.st }
func (f *fakeProgress) counts() (int64, int64) {
	return f.entries, f.bytes
}
func (f *fakeProgress) ReadLog(context.Context, uint64, int, int64, time.Duration) (spool.LogRead, error) {
	return spool.LogRead{}, nil
}
func (f *fakeProgress) Append(context.Context, string, [][]byte) (uint64, error) { return 0, nil }

func TestProgressLine(t *testing.T) {
	t.Parallel()
	for _, tty := range []bool{true, false} {
		t.Run(fmt.Sprint("tty=", tty), func(t *testing.T) {
			var b bytes.Buffer
			f := &fakeProgress{}
			p := newProgress(&b, tty, f, f)
			p.show() // before any contact: head unknown
			f.st = syncer.Status{Position: 1000, Head: 5000, SpoolHead: 5000, Connected: true, LastContact: time.Now()}
			f.entries, f.bytes = 1000, 3<<20
			p.show()
			p.show() // unchanged
			f.st.Position, f.st.Applied, f.st.Rejected = 5000, 4999, 1
			f.entries = 5000
			p.finish(false)
			out := b.String()
			for _, want := range []string{"position 0 of ?, ? remaining", "position 1000 of 5000, 4000 remaining; read 1000 entries (3.0 MiB)",
				"synced to position 5000 (head 5000): read 5000 entries", "4999 applied, 1 rejected"} {
				if !strings.Contains(out, want) {
					t.Errorf("progress lacks %q:\n%q", want, out)
				}
			}
			lines := strings.Count(out, "\n")
			if tty && (lines != 1 || strings.Count(out, "\r") != 4) {
				t.Errorf("terminal output has %d newlines and %d \\r, want 1 and 4: %q", lines, strings.Count(out, "\r"), out)
			}
			if !tty && (lines != 3 || strings.Contains(out, "\r")) {
				t.Errorf("plain output has %d lines, want 3 (an unchanged state prints nothing), no \\r: %q", lines, out)
			}
		})
	}
}
