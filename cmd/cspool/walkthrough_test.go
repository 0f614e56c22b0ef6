package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// walkthroughMessage has the shapes mail really has: MIME, 8-bit UTF-8,
// CRLF line endings, a dot at the start of a line.
const walkthroughMessage = "From: Bob Example <bob@example.org>\r\n" +
	"To: Alice <alice@example.net>\r\n" +
	"Subject: =?UTF-8?Q?Caf=C3=A9_on_Friday?=\r\n" +
	"Date: Wed, 26 Nov 2025 09:30:00 +0100\r\n" +
	"Message-ID: <walkthrough-1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Shall we meet at the caf\xc3\xa9 at noon?\r\n" +
	".\r\n" +
	"Bob\r\n"

// TestWalkthrough runs README's walkthrough command for command with the
// built binary, in a fresh folder, then reads the message with Python's
// imaplib. Only the ports differ from the README (the defaults may be taken
// on a test machine).
func TestWalkthrough(t *testing.T) {
	t.Parallel()
	holdDefaultAddrs(t)
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	// The commands below are README's, one by one: a change to them there
	// is a change here.
	want := []string{"cspool gen-keys user.sec user.pub\n" +
		"cspool gen-keys spool.sec spool.pub\n" +
		"cspool server &\n" +
		"cspool imap-server --user-key=user.sec --spool-key=spool.pub --user-public-key=user.pub &\n" +
		"cspool deliver --user=$USER --user-key=user.pub --spool-key=spool.sec < message"}
	if got := docShellBlocks(t, "README.md", "## The walkthrough"); !slices.Equal(got, want) {
		t.Fatalf("README.md's walkthrough is %q, and this test runs %q: make them one again", got, want)
	}
	python := needTool(t, "python3", "python3")
	bin := buildServerBinary(t)
	t.Run("generated password", func(t *testing.T) { testWalkthrough(t, bin, python, nil) })
	t.Run("empty password", func(t *testing.T) { testWalkthrough(t, bin, python, []string{"--password", ""}) })
}

func testWalkthrough(t *testing.T, bin, python string, extra []string) {
	dir := t.TempDir()
	user := loginName()
	env := append(os.Environ(), "USER="+user)
	if err := os.WriteFile(filepath.Join(dir, "message"), []byte(walkthroughMessage), 0o600); err != nil {
		t.Fatal(err)
	}
	httpPort, imapPort := freePort(t), freePort(t)
	spoolURL := fmt.Sprintf("http://127.0.0.1:%d", httpPort)

	// cspool gen-keys user.sec user.pub
	runCmd(t, dir, env, "", bin, "gen-keys", "user.sec", "user.pub")
	// cspool gen-keys spool.sec spool.pub
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	// cspool server &
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(httpPort))
	waitHealthy(t, spoolURL, server)
	// cspool imap-server --user-key=user.sec --spool-key=spool.pub --user-public-key=user.pub &
	args := append([]string{"imap-server", "--user-key=user.sec", "--spool-key=spool.pub", "--user-public-key=user.pub",
		"--port", fmt.Sprint(imapPort), "--spool-server", spoolURL}, extra...)
	daemon := startProc(t, "cspool imap-server", dir, env, bin, args...)
	settings := daemon.waitOutput(t, "password:", 30*time.Second)
	password := daemonPassword(t, settings)
	if len(extra) > 0 {
		if password != "(empty)" {
			t.Fatalf("daemon printed password %q, want (empty)", password)
		}
		password = ""
	} else if len(password) < 16 {
		t.Fatalf("daemon printed password %q, want a generated one", password)
	}
	if got := settingValue(t, settings, "user"); got != user {
		t.Errorf("daemon's user %q, want $USER %q", got, user)
	}
	// cspool deliver --user=$USER --user-key=user.pub --spool-key=spool.sec < message
	runCmd(t, dir, env, "message", bin, "deliver", "--user="+user, "--user-key=user.pub", "--spool-key=spool.sec")

	msgs := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), user, password, 1)
	if len(msgs) != 1 || !bytes.Equal(msgs[0], []byte(walkthroughMessage)) {
		t.Fatalf("imaplib read %d messages, first %q; want exactly %q", len(msgs), msgs[0], walkthroughMessage)
	}
	// A wrong password is refused.
	wrong := runPythonLogin(t, python, imapPort, user, password+"x")
	if !strings.Contains(wrong, "REFUSED") {
		t.Errorf("login with a wrong password: %q, want REFUSED", wrong)
	}

	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	server.stop(t, syscall.SIGTERM, 40*time.Second)
	log := daemon.stderr.String()
	if len(extra) > 0 && !strings.Contains(log, "empty password") {
		t.Errorf("daemon did not warn about the empty password; log:\n%s", log)
	}
	if password != "" && strings.Contains(log+server.stderr.String(), password) {
		t.Error("the password appears in a log")
	}
	// Standard output is the journal under systemd: the generated password
	// is named by its file there, never printed.
	if password != "" && strings.Contains(daemon.stdout.String(), password) {
		t.Errorf("the daemon printed the generated password:\n%s", daemon.stdout.String())
	}
	if strings.Contains(log+server.stderr.String(), "Friday") {
		t.Error("message contents appear in a log")
	}
}

// runPythonLogin tries one imaplib login and prints OK or REFUSED.
func runPythonLogin(t *testing.T, python string, port int, user, password string) string {
	t.Helper()
	script := `
import imaplib, sys
M = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
try:
    M.login(sys.argv[2], sys.argv[3])
    print("OK")
except imaplib.IMAP4.error:
    print("REFUSED")
`
	return runCmd(t, t.TempDir(), nil, "", python, "-c", script, fmt.Sprint(port), user, password)
}
