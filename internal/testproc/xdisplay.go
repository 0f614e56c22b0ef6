package testproc

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// XServer starts Xvfb on a free display for a graphical mail client and
// returns the display's name; it is stopped when the test ends. Xvfb
// picks the display itself (-displayfd) and says which once it listens:
// a display picked here, by its lock file, could be taken by another
// Xvfb started at the same moment (by other tests on the machine), whose
// display the client then opened, or failed to once that one ended.
func XServer(t testing.TB) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", "1280x900x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatalf("starting Xvfb: %v", err)
	}
	// SIGTERM, so that Xvfb removes its lock file: killed, it leaves
	// /tmp/.XN-lock behind.
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(r, 64))
		got <- strings.TrimSpace(string(b))
	}()
	select {
	case n := <-got:
		if n == "" {
			t.Fatal("Xvfb did not start: it named no display")
		}
		return ":" + n
	case <-time.After(30 * time.Second):
		t.Fatal("Xvfb named no display in 30 s")
		return ""
	}
}

// Xdotool runs xdotool on the display and returns its output.
func Xdotool(disp string, args ...string) (string, error) {
	cmd := exec.Command("xdotool", args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+disp)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// StartGroup starts cmd in a process group of its own, its output in the
// file logPath, and ends the group when the test ends (SIGTERM, SIGKILL
// after 10 s), logging the end of that output if the test failed; name
// is the program's, for the log.
func StartGroup(t testing.TB, cmd *exec.Cmd, logPath, name string) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		StopGroup(cmd)
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s's output (last 4000 bytes):\n%s", name, b[max(0, len(b)-4000):])
		}
	})
}

// StopGroup ends the process group cmd leads: SIGTERM, then SIGKILL
// after 10 s.
func StopGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
