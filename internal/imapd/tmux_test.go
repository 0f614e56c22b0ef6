package imapd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tmuxSession is a terminal client running in a tmux server of the test's
// own, whose socket is in the test's temporary folder. On a shared server
// (tmux's default socket) a new session runs with the server's
// environment, not the one given to the tmux command that asks for it, so
// a client started while another test's server was up read the real HOME:
// aerc then showed its setup wizard instead of the test's account.
type tmuxSession struct {
	t    *testing.T
	tmux string
	sock string
}

// startTmux starts command (a shell command line) in a new tmux server and
// session 160 columns wide and 40 lines high, with env added to the
// process's environment; the server is killed when the test ends.
func startTmux(t *testing.T, env []string, command string) *tmuxSession {
	t.Helper()
	s := &tmuxSession{t: t, tmux: needTool(t, "tmux"), sock: filepath.Join(t.TempDir(), "tmux")}
	start := exec.Command(s.tmux, "-S", s.sock, "new-session", "-d", "-s", "client", "-x", "160", "-y", "40", command)
	start.Env = append(os.Environ(), env...)
	if out, err := start.CombinedOutput(); err != nil {
		t.Fatalf("starting %q in tmux: %v: %s", command, err, out)
	}
	t.Cleanup(func() { exec.Command(s.tmux, "-S", s.sock, "kill-server").Run() })
	return s
}

// screen returns what the client shows.
func (s *tmuxSession) screen() string {
	out, _ := exec.Command(s.tmux, "-S", s.sock, "capture-pane", "-p", "-t", "client").Output()
	return string(out)
}

// keys types k (tmux send-keys names: "Enter", "C-u").
func (s *tmuxSession) keys(k ...string) {
	s.t.Helper()
	if out, err := exec.Command(s.tmux, append([]string{"-S", s.sock, "send-keys", "-t", "client"}, k...)...).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys %q: %v %s", k, err, out)
	}
}

// waitFor waits up to 20 s for the screen to show one of what, and returns
// the one it shows.
func (s *tmuxSession) waitFor(what ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		screen := s.screen()
		for _, w := range what {
			if strings.Contains(screen, w) {
				return w
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("the client never showed %q; the screen:\n%s", what, s.screen())
	return ""
}

// terminalRig is what the terminal-client tests start from: a device whose
// INBOX holds messages["plain"] and nestedMessage, synced, and a logged-in
// session on it.
func terminalRig(t *testing.T) (*device, *wire) {
	t.Helper()
	r := newRig(t)
	d := r.device("a")
	r.Deliver([]byte(messages["plain"]))
	d.synced(r.Deliver([]byte(nestedMessage)))
	return d, loginWire(t, d.addr)
}

// answeredOK waits for the first client command after line mark matching
// sent, then for the server's OK to it; what names it in a failure.
func (p *imapProxy) answeredOK(t *testing.T, what string, mark int, sent *regexp.Regexp) {
	t.Helper()
	i := p.waitFor(mark, 'C', sent, 20*time.Second)
	if i < 0 {
		t.Fatalf("%s: no command matching %v", what, sent)
	}
	tag := strings.Fields(p.lines()[i].text)[0]
	if p.waitFor(i, 'S', regexp.MustCompile("^"+regexp.QuoteMeta(tag)+" OK"), 20*time.Second) < 0 {
		t.Fatalf("%s: %q was not answered OK", what, p.lines()[i].text)
	}
}
