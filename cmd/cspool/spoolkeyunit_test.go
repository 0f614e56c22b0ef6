package main

import (
	"bytes"
	"context"
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

// serverUnit is what docs/systemd/cspool-server.service gives the server:
// the arguments of its ExecStart after the binary (continuation lines
// joined) and its LoadCredential= lines, ID to file.
func serverUnit(t *testing.T) (args []string, creds map[string]string) {
	t.Helper()
	unit, err := os.ReadFile("../../docs/systemd/cspool-server.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "\\\n", " ")
	creds = map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, "LoadCredential="); ok {
			id, file, _ := strings.Cut(v, ":")
			creds[id] = file
		}
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			args = strings.Fields(v)[1:]
		}
	}
	if len(args) == 0 || args[0] != "server" || creds["spool.sec"] != "/etc/cspool/spool.sec" {
		t.Fatalf("docs/systemd/cspool-server.service: ExecStart arguments %q, credentials %q; want cspool server, and spool.sec from /etc/cspool/spool.sec", args, creds)
	}
	return args, creds
}

// TestReplaceSpoolKeySystemdUnit follows docs/OPERATING.md, "Replacing the
// spool key", on a server run as docs/systemd/cspool-server.service runs
// it: the unit's ExecStart arguments as printed (but for the TLS flags,
// left out as behind a reverse proxy, and /etc/cspool, this test's
// folder), with ${CREDENTIALS_DIRECTORY} a folder that gets, at each
// start, a copy of every LoadCredential= file, as systemd makes it. The
// doc's server.conf lines do not replace the key there: the unit's
// --spool-key wins, and the server refuses to start with "nothing to
// replace", as the doc says, after a notice naming the line of server.conf
// not used (there was none: the line was passed over without a word). The doc's block for the unit does: the
// restarted server logs the replacement, takes mail, and the log keeps
// what it held. Run a second time, the block stops at its first line and
// changes no file, and the server runs on.
func TestReplaceSpoolKeySystemdUnit(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	unitArgs, creds := serverUnit(t)
	genKeys, confLines := spoolKeyRecipe(t)
	steps := recipe(t, "### Replacing the spool key")
	if len(steps) != 1 || !strings.Contains(steps[0], "systemctl restart cspool-server") {
		t.Fatalf("docs/OPERATING.md, Replacing the spool key: sh blocks %q, want the one for the systemd unit", steps)
	}
	root := t.TempDir()
	etc, credDir, spoolDir := filepath.Join(root, "etc"), filepath.Join(root, "credentials"), filepath.Join(root, "spool")
	for _, d := range []string{etc, spoolDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	local := strings.NewReplacer("/etc/cspool/", etc+"/", "/etc/cspool", etc)
	path := func(name string) string { return filepath.Join(etc, name) }
	env := append(os.Environ(), "USER=root")

	// The install of docs/systemd/README.md: the spool key pair, the
	// users file, server.conf.
	runCmd(t, etc, env, "", bin, "gen-keys", "--comment", "spool key", path("spool.sec"), path("spool.pub"))
	alice := mustKey(t)
	writeUsersFile(t, path("users"), map[string]*keys.SecretKey{"alice": alice})
	lmtp := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := fmt.Sprintf("addr = 127.0.0.1\nspool-dir = %s\nusers = %s\nlmtp = %s\n", spoolDir, path("users"), lmtp)
	if err := os.WriteFile(path("server.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	// args: the unit's command line, credentials copied as at a start.
	args := func() []string {
		t.Helper()
		if err := os.RemoveAll(credDir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(credDir, 0o700); err != nil {
			t.Fatal(err)
		}
		for id, file := range creds {
			if strings.HasPrefix(id, "tls.") {
				continue
			}
			copyFile(t, local.Replace(file), filepath.Join(credDir, id), 0o400)
		}
		var a []string
		for i := 1; i < len(unitArgs); i++ {
			if unitArgs[i] == "--tls-cert" || unitArgs[i] == "--tls-key" {
				i++
				continue
			}
			a = append(a, local.Replace(strings.ReplaceAll(unitArgs[i], "${CREDENTIALS_DIRECTORY}", credDir)))
		}
		return a
	}
	sent := 0
	send := func(tok string) {
		t.Helper()
		lc := dialLMTP(t, lmtp)
		defer lc.Close()
		if ok, code, err := lmtpSend(lc, []string{"alice"}, "Subject: k\r\n\r\ntoken="+tok+"\r\n"); len(ok) != 1 {
			t.Fatalf("LMTP %s: %d %v, want 250", tok, code, err)
		}
		sent++
	}
	server := startServer(t, bin, args()...)
	send("old-1")

	// Step 1, as printed.
	if out := runCmd(t, etc, env, "", bin, strings.Fields(local.Replace(genKeys))[1:]...); !strings.Contains(out, "public key:") {
		t.Fatalf("%s: %s", genKeys, out)
	}
	newSK, err := keys.LoadSecret(path("spool-new.sec"))
	if err != nil {
		t.Fatal(err)
	}
	oldPub, err := os.ReadFile(path("spool.pub"))
	if err != nil {
		t.Fatal(err)
	}
	idNew := fmt.Sprintf("%x", newSK.Public().KeyID())
	server.stop(t)

	// The server.conf lines under the unit: its --spool-key wins, and the
	// server refuses to start, as the doc says.
	if err := os.WriteFile(path("server.conf"), []byte(conf+local.Replace(confLines)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"server", "--port", fmt.Sprint(freePort(t))}, args()...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(stderr.String(), "nothing to replace") {
			t.Errorf("the server.conf lines under the unit's command line: %v, want a refusal saying \"nothing to replace\":\n%s", err, &stderr)
		}
		// The file's line the command line overrode is named.
		if want := "spool-key = " + path("spool-new.sec") + " is not used: --spool-key " + filepath.Join(credDir, "spool.sec") + " on the command line wins"; !strings.Contains(stderr.String(), want) {
			t.Errorf("the server.conf lines under the unit's command line: no %q:\n%s", want, &stderr)
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Signal(syscall.SIGTERM)
		<-done
		t.Fatalf("the server.conf lines under the unit's command line: the server runs, want it refused:\n%s", &stderr)
	}
	if err := os.WriteFile(path("server.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	server = startServer(t, bin, args()...)
	send("old-2")

	// The unit's block, as printed but for /etc/cspool, the server
	// running: it is restarted by the block's last line.
	block := local.Replace(steps[0])
	runRecipe(t, block, root, env, nil, func(l string) {
		if l != "systemctl restart cspool-server" {
			t.Fatalf("unexpected %q in the unit's block", l)
		}
		server.stop(t)
		server = startServer(t, bin, args()...)
	})
	log := server.stderr.String()
	for _, want := range []string{"the spool key was replaced", "spool_key_id=" + idNew} {
		if !strings.Contains(log, want) {
			t.Errorf("the server restarted by the block did not log %q:\n%s", want, log)
		}
	}
	if got, err := os.ReadFile(path("spool-old.pub")); err != nil || !bytes.Equal(got, oldPub) {
		t.Errorf("spool-old.pub after the block: %v, want the old spool.pub", err)
	}
	send("new-1")

	// A second run changes nothing: ln refuses, before any file moves.
	before := map[string][]byte{}
	names := []string{"spool.sec", "spool.pub", "spool-old.pub", "server.conf"}
	for _, n := range names {
		if before[n], err = os.ReadFile(path(n)); err != nil {
			t.Fatal(err)
		}
	}
	script := strings.Split(block, "\nsystemctl ")[0]
	again := exec.Command("sh", "-e", "-c", script)
	again.Dir, again.Env = root, env
	if out, err := again.CombinedOutput(); err == nil {
		t.Errorf("the unit's block run a second time succeeded, want it stopped at ln:\n%s", out)
	}
	for _, n := range names {
		if got, err := os.ReadFile(path(n)); err != nil || !bytes.Equal(got, before[n]) {
			t.Errorf("%s changed by the block run a second time (%v)", n, err)
		}
	}
	for _, n := range []string{"spool-new.sec", "spool-new.pub"} {
		if _, err := os.Stat(path(n)); !os.IsNotExist(err) {
			t.Errorf("%s after the block: %v, want it moved", n, err)
		}
	}
	send("new-2")
	server.stop(t)

	// A restart with the line left in starts as usual.
	server = startServer(t, bin, args()...)
	send("new-3")
	if strings.Contains(server.stderr.String(), "the spool key was replaced") {
		t.Errorf("a restart replaced the key again:\n%s", server.stderr)
	}
	server.stop(t)
	st, err := openSpoolDir(spoolDir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	es, err := st.Read(ctx, "alice", 0, 100, 1<<30)
	if err != nil || len(es) != sent {
		t.Errorf("alice's log: %d entries (%v), want the %d sent", len(es), err, sent)
	}
}
