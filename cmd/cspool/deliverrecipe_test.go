package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeliverRecipe runs the three commands of docs/DELIVERY.md's
// "cspool deliver" as printed, where each belongs: the first in a folder
// with no ./spool (exit 73, EX_CANTCREAT, with a hint) and then beside
// the ./spool a test mode server made at its start; the second into the
// spool directory of a server with a users file (/etc/cspool/users and
// /var/lib/cspool being the test's); the third through that server (its
// URL the test's). A device of alice's then holds the three messages.
func TestDeliverRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	blocks := docShellBlocks(t, "docs/DELIVERY.md", "## `cspool deliver`")
	if len(blocks) != 1 {
		t.Fatalf("docs/DELIVERY.md, cspool deliver: %d sh blocks, want 1", len(blocks))
	}
	cmds := strings.Split(strings.ReplaceAll(blocks[0], "\\\n", ""), "\n")
	if len(cmds) != 3 || !strings.Contains(cmds[0], "< message") || !strings.Contains(cmds[1], "--spool-dir /var/lib/cspool") || !strings.Contains(cmds[2], "--spool-server http://127.0.0.1:3999") {
		t.Fatalf("docs/DELIVERY.md's commands %q: want the test mode spool's, the spool directory's and the server's", cmds)
	}

	// The test mode spool: none first, then the one its server made.
	testMode := t.TempDir()
	env := recipeEnv(bin, testMode)
	runCmd(t, testMode, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	runCmd(t, testMode, env, "", bin, "gen-keys", "alice.sec", "alice.pub")
	if err := os.WriteFile(filepath.Join(testMode, "message"), []byte("Subject: test mode\r\n\r\none\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runExit(t, testMode, env, "sh", "-c", cmds[0])
	if code != 73 || !strings.Contains(errOut, "cspool: hint: ") {
		t.Errorf("%s with no ./spool: exit %d, want 73 with a hint\n%s%s", cmds[0], code, out, errOut)
	}
	port := freePort(t)
	tm := startProc(t, "cspool server (test mode)", testMode, env, bin, "server", "--port", fmt.Sprint(port))
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d", port), tm)
	tm.stop(t, syscall.SIGTERM, 40*time.Second)
	if code, out, errOut := runExit(t, testMode, env, "sh", "-c", cmds[0]); code != 0 || !strings.Contains(out, "delivered ") {
		t.Errorf("%s beside a test mode server's ./spool: exit %d, want 0\n%s%s", cmds[0], code, out, errOut)
	}

	// A server with a users file: into its spool directory, then
	// through it.
	root := t.TempDir()
	etc, spoolDir := filepath.Join(root, "etc/cspool"), filepath.Join(root, "var/lib/cspool")
	for _, d := range []string{etc, spoolDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"spool.sec", "spool.pub", "alice.sec", "alice.pub"} {
		copyFile(t, filepath.Join(testMode, f), filepath.Join(root, f), 0o600)
	}
	pub, err := os.ReadFile(filepath.Join(root, "alice.pub"))
	if err != nil {
		t.Fatal(err)
	}
	key, _, _ := strings.Cut(string(pub[strings.Index(string(pub), "cspool-pub-1:"):]), "\n")
	if err := os.WriteFile(filepath.Join(etc, "users"), []byte("alice "+key+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	server := startProc(t, "cspool server", root, env, bin, "server", "--port", fmt.Sprint(port), "--users", filepath.Join(etc, "users"),
		"--spool-dir", spoolDir, "--spool-key", "spool.sec")
	waitHealthy(t, url, server)
	paths := strings.NewReplacer("/etc/cspool", etc, "/var/lib/cspool", spoolDir, "http://127.0.0.1:3999", url)
	for i, body := range []string{"into the spool directory", "through the server"} {
		if err := os.WriteFile(filepath.Join(root, "message"), []byte("Subject: "+body+"\r\n\r\n"+body+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		line := paths.Replace(cmds[i+1])
		if code, out, errOut := runExit(t, root, env, "sh", "-c", line); code != 0 || !strings.Contains(out, fmt.Sprintf("at log position %d", i+1)) {
			t.Errorf("%s: exit %d, want 0 and position %d\n%s%s", line, code, i+1, out, errOut)
		}
	}

	// What each log holds, as alice's device reads it: the test mode
	// server started again to serve its ./spool.
	tmPort := freePort(t)
	tm = startProc(t, "cspool server (test mode, again)", testMode, env, bin, "server", "--port", fmt.Sprint(tmPort))
	tmURL := fmt.Sprintf("http://127.0.0.1:%d", tmPort)
	waitHealthy(t, tmURL, tm)
	for _, c := range []struct {
		dir, url string
		want     int
	}{{testMode, tmURL, 1}, {root, url, 2}} {
		out := runCmd(t, c.dir, env, "", bin, "sync", "--user", "alice", "--user-key", "alice.sec", "--user-public-key", "alice.pub",
			"--spool-key", "spool.pub", "--db", "alice.db", "--spool-server", c.url)
		if want := fmt.Sprintf("%d applied, 0 rejected", c.want); !strings.Contains(out, want) {
			t.Errorf("alice's device on %s: %q, want %q", c.url, out, want)
		}
	}
	server.stop(t, syscall.SIGTERM, 40*time.Second)
	tm.stop(t, syscall.SIGTERM, 40*time.Second)
}
