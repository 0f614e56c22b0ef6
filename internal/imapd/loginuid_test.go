package imapd

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/testproc"
)

// TestOtherUsersGuessesLeaveOwnerIn: another local user's program (here a
// shell run as nobody) holds 4 wrong logins waiting out their delay. Every
// loopback address was one source, so the daemon's own user's mail client
// got NO [UNAVAILABLE] for as long as the other user kept 4 guesses
// waiting, and could be kept out for good. The kernel tells whose program
// each loopback connection is; now each local user is a source of its
// own, and the owner's correct login is answered OK at once.
func TestOtherUsersGuessesLeaveOwnerIn(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, to run a program as another user")
		}
		t.Skip("needs root, to run a program as another user")
	}
	t.Parallel()
	r := newRig(t)
	w := &waits{block: true, release: make(chan struct{})}
	defer close(w.release)
	d := r.deviceWith("a", Config{Login: LoginLimits{Wait: w.wait}})
	_, port, _ := strings.Cut(d.addr, ":")
	// Four connections, a wrong login on each, held open.
	script := "for i in 1 2 3 4; do exec {fd}<>/dev/tcp/127.0.0.1/" + port +
		"; printf 'g%s LOGIN alice wrong\\r\\n' $i >&$fd; done; sleep 60"
	guesser := exec.Command("/bin/bash", "-c", script)
	guesser.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	guesser.Stderr = &logBuffer{}
	if err := guesser.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { guesser.Process.Kill(); guesser.Wait() }()
	deadline := time.Now().Add(testproc.HangLimit)
	for len(w.list()) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the other user's 4 wrong logins never waited (%d did); its shell said %q", len(w.list()), guesser.Stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rc := dialRaw(t, d.addr)
	rc.cmd(`o1 LOGIN alice "` + testPassword + `"`)
	if got := rc.until("o1 "); !strings.Contains(got, "o1 OK") {
		t.Fatalf("the owner's login while another user's 4 guesses wait: %q, want OK", got)
	}
	if f, _, _ := d.srv.guard.State(rc.c.LocalAddr()); f != 0 {
		t.Errorf("the owner's source has %d failures, want 0: the guesses were another user's", f)
	}
}
