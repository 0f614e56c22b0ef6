package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// docShellBlocks returns the ```sh blocks of a doc (a path relative to
// the repository's root) in order, each without its indentation; with a
// heading, only those of its section (up to the next heading of its level
// or above).
func docShellBlocks(t *testing.T, doc, heading string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", doc))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if heading != "" {
		level := strings.Index(heading, " ")
		start := -1
		for i, l := range lines {
			if l == heading {
				start = i + 1
				break
			}
		}
		if start < 0 {
			t.Fatalf("%s has no %q", doc, heading)
		}
		end := len(lines)
		for i := start; i < len(lines); i++ {
			if n := strings.Index(lines[i], " "); n > 0 && n <= level && strings.Trim(lines[i][:n], "#") == "" {
				end = i
				break
			}
		}
		lines = lines[start:end]
	}
	var blocks []string
	for k := 0; k < len(lines); k++ {
		if strings.TrimSpace(lines[k]) != "```sh" {
			continue
		}
		indent := lines[k][:strings.Index(lines[k], "```")]
		var bl []string
		for k++; k < len(lines) && strings.TrimSpace(lines[k]) != "```"; k++ {
			bl = append(bl, strings.TrimPrefix(lines[k], indent))
		}
		blocks = append(blocks, strings.Join(bl, "\n"))
	}
	return blocks
}

// startRecipe starts a documented block that runs a daemon (one command,
// its lines continued with backslashes, perhaps after variables set for
// it) with sh, after the replacements given, as a process of the test:
// sh execs env with the block's words, which sets the variables and execs
// the command, so that the process is the daemon itself.
func startRecipe(t *testing.T, name, block, dir string, env []string, replace []string) *proc {
	t.Helper()
	block = strings.NewReplacer(replace...).Replace(block)
	return startProc(t, name, dir, env, "sh", "-e", "-c", "exec env "+block)
}

// recipeEnv is the environment a documented recipe runs in: the built
// binary first on PATH as "cspool", home as HOME.
func recipeEnv(bin, home string) []string {
	env := []string{"HOME=" + home, "PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"), "USER=" + loginName()}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "HOME=") && !strings.HasPrefix(e, "PATH=") && !strings.HasPrefix(e, "USER=") &&
			!strings.HasPrefix(e, "SSL_CERT_") {
			env = append(env, e)
		}
	}
	return env
}

// TestTLSRecipe runs docs/TLS.md's shell blocks as printed: the
// self-signed certificate made with openssl into /etc/cspool/tls, the
// server started with it, the certificate copied to a device, and the
// device's daemon started with SSL_CERT_FILE naming it. Only the paths
// (/etc/cspool and /var/lib/cspool into the test's folder), the ports, the
// address (127.0.0.1, also in the certificate for 192.0.2.10 and in the
// URL for spool.internal) and the copy (cp for scp) differ. The daemon
// must then sync a message delivered over HTTPS: a certificate that does
// not name the address, files the server does not read, or a CA file
// where the daemon does not look leave it at position 0.
func TestTLSRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	needTool(t, "openssl", "openssl")
	bin := buildServerBinary(t)
	blocks := docShellBlocks(t, "docs/TLS.md", "")
	starts := []string{"cspool server ", "SSL_CERT_FILE=", "mkdir -p /etc/cspool/tls\n", "mkdir -p -m 0700 ~/.config/cspool "}
	if len(blocks) != len(starts) {
		t.Fatalf("docs/TLS.md: %d sh blocks, want %d (the server, the daemon, the certificate, its copy)", len(blocks), len(starts))
	}
	for i, s := range starts {
		if !strings.HasPrefix(blocks[i], s) {
			t.Fatalf("docs/TLS.md: sh block %d starts %q, want %q", i+1, blocks[i], s)
		}
	}
	server, daemon, cert, cp := blocks[0], blocks[1], blocks[2], blocks[3]
	checkRunningIt(t, server)
	checkUnitCA(t, daemon)

	root := t.TempDir()
	etc, spoolDir, home := filepath.Join(root, "etc/cspool"), filepath.Join(root, "var/lib/cspool"), filepath.Join(root, "home/alice")
	for _, d := range []string{etc, spoolDir, home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := recipeEnv(bin, home)
	port, imapPort := freePort(t), freePort(t)
	paths := []string{"/etc/cspool", etc, "/var/lib/cspool", spoolDir}

	// The operator's spool key and users file, alice's keys on her device
	// (docs/OPERATING.md, docs/systemd/README.md).
	runCmd(t, etc, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	cfg := filepath.Join(home, ".config/cspool")
	if err := os.MkdirAll(cfg, 0o700); err != nil {
		t.Fatal(err)
	}
	out := runCmd(t, cfg, env, "", bin, "gen-keys", "alice.sec", "alice.pub")
	_, pub, ok := strings.Cut(out, "public key: ")
	if !ok {
		t.Fatalf("gen-keys printed no public key:\n%s", out)
	}
	if err := os.WriteFile(filepath.Join(etc, "users"), []byte("alice "+strings.TrimSpace(pub)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(etc, "spool.pub"), filepath.Join(cfg, "spool.pub"), 0o644)

	runRecipe(t, cert, root, env, append(paths, "IP:192.0.2.10", "IP:127.0.0.1"),
		func(l string) { t.Fatalf("unexpected %q in the certificate's recipe", l) })
	url := fmt.Sprintf("https://127.0.0.1:%d", port)
	srv := startRecipe(t, "cspool server", server, root, env, append(paths, "--addr 0.0.0.0", "--addr 127.0.0.1", "--port 3999", fmt.Sprintf("--port %d", port)))
	runRecipe(t, cp, home, env, append(paths, "scp root@spool.internal:", "cp "),
		func(l string) { t.Fatalf("unexpected %q in the copy's recipe", l) })
	db := filepath.Join(home, ".local/state/cspool/alice/mail.db")
	dmn := startRecipe(t, "cspool imap-server", daemon, home, env, append(paths,
		"https://spool.internal:3999", url,
		"cspool imap-server ", fmt.Sprintf("cspool imap-server --port %d --status-addr '' ", imapPort)))

	msg := filepath.Join(root, "message")
	if err := os.WriteFile(msg, []byte("Subject: over the recipe's TLS\r\n\r\nhello\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	trusting := append(env, "SSL_CERT_FILE="+filepath.Join(etc, "tls/fullchain.pem"))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, "deliver", "--users", filepath.Join(etc, "users"), "--user", "alice",
			"--spool-key", filepath.Join(etc, "spool.sec"), "--spool-server", url, "--quiet")
		cmd.Env = trusting
		f, err := os.Open(msg)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = f
		out, err := cmd.CombinedOutput()
		f.Close()
		cancel()
		if err == nil {
			break
		}
		// 75: the server is not up yet, or the request was signed
		// before it started; anything else is the recipe's.
		if exitCode(t, err) != 75 || srv.exitedNow() || time.Now().After(deadline) {
			t.Fatalf("cspool deliver over HTTPS to the recipe's server: %v\n%s", err, out)
		}
	}

	var st struct {
		Sync struct {
			Position int64 `json:"position"`
		} `json:"sync"`
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		cmd := exec.CommandContext(ctx, bin, "status", "--db", db, "--json")
		cmd.Env = env
		out, err := cmd.Output()
		cancel()
		if err == nil && json.Unmarshal(out, &st) == nil && st.Sync.Position >= 1 {
			break
		}
		if dmn.exitedNow() || time.Now().After(deadline) {
			t.Fatalf("the daemon started as docs/TLS.md says did not sync the delivery within 60 s: %v\n%s", err, out)
		}
	}
	dmn.stop(t, syscall.SIGTERM, 30*time.Second)
	srv.stop(t, syscall.SIGTERM, 40*time.Second)
	if log := srv.stderr.String(); !strings.Contains(log, "http="+url) {
		t.Errorf("the server's start line lacks http=%s:\n%s", url, log)
	}
}

// checkUnitCA requires docs/TLS.md's line for the daemon's systemd unit
// to be the unit's own (docs/systemd/cspool-imap@.service), commented out
// there as docs/systemd/README.md says ("uncomment"), and to name the CA
// file of the daemon's command of docs/TLS.md, which TestTLSRecipe runs,
// %E being ~/.config in a user manager. docs/TLS.md printed a line of %h
// the unit does not hold.
func checkUnitCA(t *testing.T, daemon string) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/TLS.md")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, b := range codeBlocks(string(doc)) {
		if strings.HasPrefix(b, "Environment=SSL_CERT_FILE=") {
			line = strings.TrimSpace(b)
		}
	}
	unit, err := os.ReadFile("../../docs/systemd/cspool-imap@.service")
	if err != nil {
		t.Fatal(err)
	}
	if line == "" || !slices.Contains(strings.Split(string(unit), "\n"), "#"+line) {
		t.Errorf("docs/TLS.md gives the unit the line %q; docs/systemd/cspool-imap@.service does not hold it commented out", line)
	}
	file, _ := strings.CutPrefix(line, "Environment=SSL_CERT_FILE=")
	if want := strings.Fields(daemon)[0]; "SSL_CERT_FILE="+strings.Replace(file, "%E/", "$HOME/.config/", 1) != want {
		t.Errorf("docs/TLS.md: the unit's CA file %s is not the daemon's command's %s", file, want)
	}
}

// checkRunningIt requires docs/OPERATING.md's "Running it" to be the
// server's command of docs/TLS.md, which TestTLSRecipe runs, with the
// LMTP listener's flags added: each flag of one with the same value in the
// other, and no other difference.
func checkRunningIt(t *testing.T, tlsServer string) {
	t.Helper()
	doc, err := os.ReadFile("../../docs/OPERATING.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### Running it\n")
	if !ok {
		t.Fatal(`docs/OPERATING.md has no "### Running it"`)
	}
	blocks := codeBlocks(section)
	if len(blocks) == 0 || !strings.HasPrefix(blocks[0], "cspool server ") {
		t.Fatalf("docs/OPERATING.md, Running it: want the server's command first, got %q", blocks)
	}
	flags := func(cmd string) map[string]string {
		words := strings.Fields(strings.ReplaceAll(cmd, "\\\n", " "))
		m := map[string]string{}
		for i := 2; i+1 < len(words); i += 2 {
			m[words[i]] = words[i+1]
		}
		return m
	}
	running, tlsFlags := flags(blocks[0]), flags(tlsServer)
	for _, f := range []string{"--lmtp", "--lmtp-domains"} {
		if running[f] == "" {
			t.Errorf("docs/OPERATING.md, Running it: no %s", f)
		}
		delete(running, f)
	}
	if !maps.Equal(running, tlsFlags) {
		t.Errorf("docs/OPERATING.md, Running it, gives the server %v and docs/TLS.md %v: they differ beyond the LMTP flags", running, tlsFlags)
	}
}
