package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/statuspage"
)

// TestConfigRecipe runs docs/CONFIG.md's commands as printed, where an
// operator and a user meet them: after the device's steps of
// docs/systemd/README.md (alice's keys, spool.pub and alice.conf, the
// block run as printed) and the operator's line for alice in the users
// file, with the server started from docs/CONFIG.md's server.conf. Only
// the paths (/etc/cspool and /var/lib/cspool into the test's folder), the
// ports and the URL differ; the user unit's start is the daemon its
// ExecStart runs. The first sync must work before the daemon ever
// started (it stopped at the missing folder of db), status must reach
// the daemon, the export must hold the mail synced, and deliver must take
// the users file from server.conf.
func TestConfigRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	doc, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	var serverConf string
	for _, b := range codeBlocks(string(doc)) {
		if strings.HasPrefix(b, "# /etc/cspool/server.conf\n") {
			serverConf = b
		}
	}
	if serverConf == "" {
		t.Fatal(`docs/CONFIG.md has no block starting "# /etc/cspool/server.conf"`)
	}
	blocks := docShellBlocks(t, "docs/CONFIG.md", "# Configuration files")
	if len(blocks) != 1 || !strings.Contains(blocks[0], "cspool sync --config ") {
		t.Fatalf("docs/CONFIG.md: sh blocks %q, want one, the commands reading the daemon's and the server's files", blocks)
	}
	var device, operator string
	for _, s := range systemdRecipe(t) {
		switch {
		case strings.Contains(s.script, "alice.conf <<CONF"):
			device = s.script
		case strings.Contains(s.script, ">> /etc/cspool/users"):
			operator = s.script
		}
	}
	if device == "" || operator == "" {
		t.Fatal("docs/systemd/README.md: no device step writing alice.conf, or no operator step adding alice to the users file")
	}

	root := t.TempDir()
	etc, spoolDir, home := filepath.Join(root, "etc/cspool"), filepath.Join(root, "var/lib/cspool"), filepath.Join(root, "home/alice")
	unitDir := filepath.Join(root, "docs/systemd")
	for _, d := range []string{etc, spoolDir, home, unitDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := recipeEnv(bin, home)
	port, lmtpPort, metricsPort := freePort(t), freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	paths := []string{"/etc/cspool", etc, "/var/lib/cspool", spoolDir, "https://spool.example.org:3999", url,
		"127.0.0.1:2424", fmt.Sprintf("127.0.0.1:%d", lmtpPort), "127.0.0.1:9399", fmt.Sprintf("127.0.0.1:%d", metricsPort)}
	noSystemctl := func(l string) { t.Fatalf("unexpected %q", l) }

	// The operator's spool key and server.conf; alice's device, as the
	// systemd recipe makes it (run in a folder holding spool.pub and the
	// unit it copies); her line in the users file.
	runCmd(t, etc, env, "", bin, "gen-keys", "--comment", "spool key", "spool.sec", "spool.pub")
	conf := strings.NewReplacer(paths...).Replace(serverConf)
	if err := os.WriteFile(filepath.Join(etc, "server.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(etc, "spool.pub"), filepath.Join(root, "spool.pub"), 0o600)
	copyFile(t, "../../docs/systemd/cspool-imap@.service", filepath.Join(unitDir, "cspool-imap@.service"), 0o600)
	runRecipe(t, device, root, env, paths, noSystemctl)
	copyFile(t, filepath.Join(home, ".config/cspool/alice.pub"), filepath.Join(root, "alice.pub"), 0o600)
	runRecipe(t, operator, root, env, paths, func(l string) {
		if l != "systemctl reload cspool-server" {
			t.Fatalf("unexpected %q in the operator's step", l)
		}
		// The server starts below, reading the users file as it is now.
	})
	server := startProc(t, "cspool server", root, env, bin, "server", "--config", filepath.Join(etc, "server.conf"), "--port", fmt.Sprint(port))
	waitHealthy(t, url, server)

	// One message in the log before the first sync, and the one the
	// recipe delivers.
	msg := "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: config recipe\r\nMessage-ID: <config-recipe-1@example.org>\r\n\r\nHello.\r\n"
	if err := os.WriteFile(filepath.Join(root, "first.eml"), []byte(msg), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd(t, root, env, "first.eml", bin, "deliver", "--users", filepath.Join(etc, "users"), "--user", "alice",
		"--spool-key", filepath.Join(etc, "spool.sec"), "--spool-server", url)
	if err := os.WriteFile(filepath.Join(root, "message.eml"), []byte(strings.Replace(msg, "-1@", "-2@", 1)), 0o600); err != nil {
		t.Fatal(err)
	}

	db := filepath.Join(home, ".local/state/cspool/alice/mail.db")
	var daemon *proc
	out := runRecipe(t, blocks[0], root, env, paths, func(l string) {
		if l != "systemctl --user start cspool-imap@alice" && !strings.HasPrefix(l, "systemctl --user start cspool-imap@alice ") {
			t.Fatalf("unexpected %q in docs/CONFIG.md's commands", l)
		}
		// The unit's ExecStart, on free ports.
		daemon = startProc(t, "cspool imap-server", home, env, bin, "imap-server", "--config", filepath.Join(home, ".config/cspool/alice.conf"),
			"--port", fmt.Sprint(freePort(t)), "--status-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		daemon.waitOutput(t, "state:", 30*time.Second)
		waitReport(t, db, "an answer", func(*statuspage.Report) bool { return true })
	})
	for _, want := range []string{"synced to position 1 (head 1)", "cspool daemon for alice", "exported 1 messages to " + filepath.Join(home, "mail-export"),
		"to alice at log position 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("docs/CONFIG.md's commands printed\n%s\nwant %q in it", out, want)
		}
	}
	inbox, err := filepath.Glob(filepath.Join(home, "mail-export/INBOX/*/*"))
	if err != nil || len(inbox) != 1 {
		t.Errorf("the export's INBOX holds %q (%v), want the one message synced", inbox, err)
	}
	waitReport(t, db, "position 2", func(r *statuspage.Report) bool { return r.Sync.Position == 2 })
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 40*time.Second)
}

// waitReport waits (at most 60 s) until the daemon of the database db
// answers on its control socket with a report that satisfies ok.
func waitReport(t *testing.T, db, what string, ok func(*statuspage.Report) bool) *statuspage.Report {
	t.Helper()
	var last *statuspage.Report
	var err error
	for range 600 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		last, err = statuspage.FetchSocket(ctx, controlSocketPath(db))
		cancel()
		if err == nil && ok(last) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the daemon of %s never reported %s; last %+v, err %v", db, what, last, err)
	return nil
}

// TestSyncMissingFolder: a sync whose --db names a file in a folder that
// does not exist (docs/CONFIG.md's first sync, before the systemd unit
// made the folder) said "opening lock file: ... no such file or
// directory". It names the folder and the command that makes it, and
// makes nothing.
func TestSyncMissingFolder(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := recipeEnv(bin, dir)
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "alice.sec", "alice.pub")
	missing := filepath.Join(dir, ".local/state/cspool/alice")
	code, out, errOut := runExit(t, dir, env, bin, "sync", "--user", "alice", "--user-key", "alice.sec", "--user-public-key", "alice.pub",
		"--spool-key", "spool.pub", "--db", filepath.Join(missing, "mail.db"), "--spool-server", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	if code != 78 || !strings.Contains(errOut, "cspool: error: the folder "+missing+" of --db does not exist") ||
		!strings.Contains(errOut, "cspool: hint: make it: mkdir -p -m 0700 "+missing+" ") {
		t.Errorf("sync into a missing folder: exit %d\n%s%s\nwant 78, the folder named and the mkdir that makes it", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, ".local")); !os.IsNotExist(err) {
		t.Errorf("the sync made a folder: %v", err)
	}
}
