package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/sendtest"
)

// TestIMAPTLSRecipe runs docs/IMAP.md's "TLS" command as printed, on the
// config file docs/systemd/README.md's device step writes: the daemon reads
// alice.conf and takes the TLS flags beside it, and Python's imaplib logs
// in over IMAPS and over STARTTLS with the certificate's CA. Replaced: the
// spool's URL and the ports (the recipe's 1993 too, and the file's IMAP
// port and status page, added to it), 0.0.0.0 by 127.0.0.1 (tests listen
// on loopback only), the certificate's path (/etc/ssl); the key is where
// the recipe says, in the test's home.
func TestIMAPTLSRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	blocks := docShellBlocks(t, "docs/IMAP.md", "## TLS")
	if len(blocks) != 1 || !strings.HasPrefix(blocks[0], "cspool imap-server --config ~/.config/cspool/alice.conf ") ||
		!strings.Contains(blocks[0], "~/.config/cspool/laptop.key") || !strings.Contains(blocks[0], "--imaps-port 1993") {
		t.Fatalf("docs/IMAP.md, TLS: sh blocks %q, want one: the daemon on alice.conf with --tls-cert, --tls-key ~/.config/cspool/laptop.key and --imaps-port 1993", blocks)
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

	bin := buildServerBinary(t)
	root := t.TempDir()
	etc, home := filepath.Join(root, "etc/cspool"), filepath.Join(root, "home/alice")
	for _, d := range []string{etc, home, filepath.Join(root, "docs/systemd")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := recipeEnv(bin, home)
	port, imapPort, imapsPort := freePort(t), freePort(t), freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	paths := []string{"/etc/cspool", etc, "https://spool.example.org:3999", url}
	noSystemctl := func(l string) {
		if l != "systemctl reload cspool-server" {
			t.Fatalf("unexpected %q", l)
		}
	}
	runCmd(t, etc, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	copyFile(t, filepath.Join(etc, "spool.pub"), filepath.Join(root, "spool.pub"), 0o600)
	copyFile(t, "../../docs/systemd/cspool-imap@.service", filepath.Join(root, "docs/systemd/cspool-imap@.service"), 0o600)
	if err := os.WriteFile(filepath.Join(etc, "users"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	runRecipe(t, device, root, env, paths, noSystemctl)
	copyFile(t, filepath.Join(home, ".config/cspool/alice.pub"), filepath.Join(root, "alice.pub"), 0o600)
	runRecipe(t, operator, root, env, paths, noSystemctl)
	conf := filepath.Join(home, ".config/cspool/alice.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "port = %d\nstatus-addr =\n", imapPort)
	f.Close()
	if err := os.MkdirAll(filepath.Join(home, ".local/state/cspool/alice"), 0o700); err != nil {
		t.Fatal(err)
	}
	ca := sendtest.NewCA(t, root)
	_, certFile, keyFile := ca.Leaf(t, root)
	copyFile(t, keyFile, filepath.Join(home, ".config/cspool/laptop.key"), 0o600)

	server := startProc(t, "cspool server", root, env, bin, "server", "--users", filepath.Join(etc, "users"),
		"--spool-dir", filepath.Join(root, "spool"), "--spool-key", filepath.Join(etc, "spool.sec"), "--port", fmt.Sprint(port))
	waitHealthy(t, url, server)
	daemon := startRecipe(t, "cspool imap-server", blocks[0], home, env, []string{"--addr 0.0.0.0", "--addr 127.0.0.1",
		"/etc/ssl/laptop.pem", certFile, "--imaps-port 1993", fmt.Sprintf("--imaps-port %d", imapsPort)})
	out := daemon.waitOutput(t, "state:", 30*time.Second)
	password := daemonPassword(t, out)
	for _, want := range []string{fmt.Sprintf("port:     %d", imapPort), "security: STARTTLS", fmt.Sprintf("imaps:    port %d, security SSL/TLS", imapsPort)} {
		if !strings.Contains(out, want) {
			t.Errorf("the daemon started as docs/IMAP.md says printed no %q:\n%s", want, out)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "message"), []byte("Subject: tls recipe\r\n\r\nhello\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCmd(t, root, env, "message", bin, "deliver", "--users", filepath.Join(etc, "users"), "--user", "alice",
		"--spool-key", filepath.Join(etc, "spool.sec"), "--spool-server", url)
	fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", password, 1)
	got := runCmd(t, root, nil, "", python, "-c", imaplibTLS, "127.0.0.1", fmt.Sprint(imapPort), fmt.Sprint(imapsPort),
		"alice", password, ca.File)
	for _, want := range []string{"imaps select: OK 1", "starttls select: OK 1", "untrusted: refused"} {
		if !strings.Contains(got, want) {
			t.Errorf("imaplib against the daemon of docs/IMAP.md's recipe printed no %q:\n%s", want, got)
		}
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 30*time.Second)
}
