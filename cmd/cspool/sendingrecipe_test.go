package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/sendtest"
)

// TestSendingRecipe runs docs/SENDING.md's "Setting it up" as printed:
// the relay password typed into its file, then the daemon's command, which
// must be docs/OPERATING.md's "The per-user daemon" with the smarthost's
// flags added. Only the spool's URL, the smarthost's (an smtps one in the
// test, its CA in SSL_CERT_FILE, the system's store for a real provider)
// and the daemon's ports differ. The daemon must print the SMTP settings
// the doc shows, and relay a message submitted with them, logged in at
// the smarthost with the password typed.
func TestSendingRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	blocks := docShellBlocks(t, "docs/SENDING.md", "## Setting it up")
	if len(blocks) != 1 {
		t.Fatalf("docs/SENDING.md, Setting it up: %d sh blocks, want 1", len(blocks))
	}
	typePassword, command, ok := strings.Cut(blocks[0], "\n")
	if !ok || !strings.HasPrefix(typePassword, "(umask 077; cat > ") || !strings.HasPrefix(command, "cspool imap-server ") {
		t.Fatalf("docs/SENDING.md's block %q: want the password typed into its file, then the daemon's command", blocks[0])
	}
	perUser := daemonCommand(t)
	if words := strings.Fields(strings.ReplaceAll(command, "\\\n", " ")); !slices.Equal(words[:min(len(words), len(perUser))], perUser) {
		t.Errorf("docs/SENDING.md's command\n%s\ndoes not start with docs/OPERATING.md's per-user daemon %q", command, perUser)
	}
	doc, err := os.ReadFile("../../docs/SENDING.md")
	if err != nil {
		t.Fatal(err)
	}
	var settings string
	for _, b := range codeBlocks(string(doc)) {
		if strings.HasPrefix(b, "SMTP settings for your mail client") {
			settings = b
		}
	}
	if settings == "" {
		t.Fatal("docs/SENDING.md shows no SMTP settings")
	}

	const relayPassword = "relay secret"
	dir := t.TempDir()
	home := filepath.Join(dir, "home/alice")
	cfg := filepath.Join(home, ".config/cspool")
	for _, d := range []string{cfg, filepath.Join(home, ".local/state/cspool/alice")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ca := sendtest.NewCA(t, dir)
	host := sendtest.NewSmarthost(t, ca, sendtest.SmarthostOptions{ImplicitTLS: true, User: "alice@example.org", Password: relayPassword})
	env := append(recipeEnv(bin, home), "SSL_CERT_FILE="+ca.File)
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	runCmd(t, cfg, env, "", bin, "gen-keys", "alice.sec", "alice.pub")
	copyFile(t, filepath.Join(dir, "spool.pub"), filepath.Join(cfg, "spool.pub"), 0o644)
	pub, err := os.ReadFile(filepath.Join(cfg, "alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := strings.Cut(string(pub[strings.Index(string(pub), "cspool-pub-1:"):]), "\n")
	if err := os.WriteFile(filepath.Join(dir, "users"), []byte("alice "+key+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(port), "--spool-dir", "spool",
		"--users", "users", "--spool-key", "spool.sec")
	waitHealthy(t, url, server)

	// The password, typed.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-c", typePassword)
	cmd.Dir, cmd.Env, cmd.Stdin = home, env, strings.NewReader(relayPassword+"\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", typePassword, err, out)
	}
	if st, err := os.Stat(filepath.Join(cfg, "relay.password")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the password typed: %v, %v; want a file of mode 0600", st, err)
	}

	smtpPort := freePort(t)
	relay := "smtps://" + host.Addr
	daemon := startRecipe(t, "cspool imap-server", command, home, env, []string{
		"https://spool.example.org:3999", url, "smtps://mail.example.org:465", relay,
		"cspool imap-server ", fmt.Sprintf("cspool imap-server --port %d --smtp-port %d --status-addr 127.0.0.1:%d ", freePort(t), smtpPort, freePort(t)),
	})
	out := daemon.waitOutput(t, "relaying through", 30*time.Second)
	want := strings.NewReplacer("port:     1025", fmt.Sprintf("port:     %d", smtpPort), "smtps://mail.example.org:465", relay).Replace(settings)
	if !strings.Contains(out, want) {
		t.Errorf("the daemon printed\n%s\nwant docs/SENDING.md's settings\n%s", out, want)
	}

	msg := filepath.Join(dir, "sent.eml")
	if err := os.WriteFile(msg, []byte("From: alice@example.org\r\nTo: bob@example.net\r\nSubject: sending recipe\r\n\r\nHello Bob.\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reply := runCmd(t, dir, env, "", python, "-c", smtplibSubmit, "127.0.0.1", fmt.Sprint(smtpPort),
		"alice", daemonPassword(t, out), "alice@example.org", "bob@example.net", msg)
	if !strings.HasPrefix(reply, "250 ") {
		t.Fatalf("submitting with the printed settings: %q, want 250", reply)
	}
	got := host.Wait(t, 1, 60*time.Second)
	if got[0].User != "alice@example.org" || !slices.Equal(got[0].To, []string{"bob@example.net"}) || !strings.Contains(string(got[0].Data), "Hello Bob.") {
		t.Errorf("the smarthost got %+v, want the message to bob@example.net from the login alice@example.org", got[0])
	}
	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 40*time.Second)
}

// daemonCommand returns the words of docs/OPERATING.md's daemon command
// with flags ("The per-user daemon": the block that starts "cspool
// imap-server --user").
func daemonCommand(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/OPERATING.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## The per-user daemon\n")
	if !ok {
		t.Fatal(`docs/OPERATING.md has no "## The per-user daemon"`)
	}
	for _, b := range codeBlocks(section) {
		if strings.HasPrefix(b, "cspool imap-server --user ") {
			return strings.Fields(strings.ReplaceAll(b, "\\\n", " "))
		}
	}
	t.Fatal(`docs/OPERATING.md, The per-user daemon: no block "cspool imap-server --user ..."`)
	return nil
}
