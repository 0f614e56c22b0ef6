package imapd

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
