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
	ownerInBesideGuesser(t, "another user's 4 guesses", func(port string) *exec.Cmd {
		// Four connections, a wrong login on each, held open.
		script := "for i in 1 2 3 4; do exec {fd}<>/dev/tcp/127.0.0.1/" + port +
			"; printf 'g%s LOGIN alice wrong\\r\\n' $i >&$fd; done; sleep 60"
		return exec.Command("/bin/bash", "-c", script)
	})
}

// guesserReusingTimeWait is a Python program that, for each of 4
// connections, first leaves 8 sockets in TIME_WAIT on one local port
// (connections to a listener of its own, closed from its side), then binds
// that port again with SO_REUSEADDR and connects to the port in argv[1],
// sends a wrong LOGIN and holds the connection.
const guesserReusingTimeWait = `
import socket, sys, time
port = int(sys.argv[1])
lns = []
for _ in range(8):
    ln = socket.socket(); ln.bind(('127.0.0.1', 0)); ln.listen(8); lns.append(ln)
held = []
for i in range(4):
    p = 0
    for ln in lns:
        c = socket.socket(); c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        c.bind(('127.0.0.1', p)); p = c.getsockname()[1]
        c.connect(ln.getsockname()); a, _ = ln.accept()
        c.close(); time.sleep(0.05); a.close()
    d = socket.socket(); d.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    d.bind(('127.0.0.1', p)); d.connect(('127.0.0.1', port)); d.recv(1000)
    d.sendall(b'g%d LOGIN alice wrong\r\n' % i); held.append(d)
time.sleep(60)
`

// TestTimeWaitPortNotOwners: another local user's guesses, each from a port
// it first left in TIME_WAIT, passed for root's. The kernel's table lists
// a TIME_WAIT entry with uid 0, and the source was the first entry with
// the connection's client address, whatever its peer: the guesses counted
// against uid 0, here the daemon's own user, whose correct login got NO
// [UNAVAILABLE] while they waited (and, under another user, a guesser had
// a second source, uid 0's, beside its own). Now the entry must have the
// connection's two ends, and TIME_WAIT entries are passed by.
func TestTimeWaitPortNotOwners(t *testing.T) {
	python := pythonForOthers(t)
	t.Parallel()
	ownerInBesideGuesser(t, "another user's 4 guesses from reused TIME_WAIT ports", func(port string) *exec.Cmd {
		g := exec.Command(python, "-c", guesserReusingTimeWait, port)
		g.Dir = "/"
		return g
	})
}

// ownerInBesideGuesser runs the program guesser(port) makes, for the IMAP
// port of a new device, as nobody, waits for its 4 wrong logins to wait
// out their delay, then asks that the owner's correct login be answered OK
// at once and that the owner's source count no failure (what names the
// guesses in the failures' messages).
func ownerInBesideGuesser(t *testing.T, what string, guesser func(port string) *exec.Cmd) {
	t.Helper()
	r := newRig(t)
	w := &waits{block: true, release: make(chan struct{})}
	defer close(w.release)
	d := r.deviceWith("a", Config{Login: LoginLimits{Wait: w.wait}})
	_, port, _ := strings.Cut(d.addr, ":")
	g := guesser(port)
	g.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	g.Stderr = &logBuffer{}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { g.Process.Kill(); g.Wait() }()
	deadline := time.Now().Add(testproc.HangLimit)
	for len(w.list()) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("the other user's 4 wrong logins never waited (%d did); it said %q", len(w.list()), g.Stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rc := dialRaw(t, d.addr)
	rc.cmd(`o1 LOGIN alice "` + testPassword + `"`)
	if got := rc.until("o1 "); !strings.Contains(got, "o1 OK") {
		t.Fatalf("the owner's login while %s wait: %q, want OK", what, got)
	}
	if f, _, _ := d.srv.guard.State(rc.c.LocalAddr()); f != 0 {
		t.Errorf("the owner's source has %d failures, want 0: the guesses were another user's", f)
	}
}

// crowd is a Python program that opens 70 connections to the port in
// argv[1], reads each one's greeting (so the server has counted it among
// those waiting to log in), says "ready" and holds them.
const crowd = `
import socket, sys, time
held = []
for i in range(70):
    c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
    c.recv(1000); held.append(c)
print('ready', flush=True)
time.sleep(60)
`

// TestOtherUserCannotPushOutOwner: another local user's program opens 70
// connections that never log in, after the owner's mail client connected
// and before it logs in. Every loopback connection was bounded by the
// room for 64 alone, so the newer ones pushed the owner's out (`* BYE
// [UNAVAILABLE]`), and a flood kept the owner from logging in at all. Now
// another local user holds at most 8 waiting connections (its own oldest
// is pushed out), and the owner's login is answered OK.
func TestOtherUserCannotPushOutOwner(t *testing.T) {
	python := pythonForOthers(t)
	t.Parallel()
	r := newRig(t)
	d := r.deviceWith("a", Config{})
	_, port, _ := strings.Cut(d.addr, ":")
	owner := dialRaw(t, d.addr)

	g := exec.Command(python, "-c", crowd, port)
	g.Dir = "/"
	g.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, errOut := &logBuffer{}, &logBuffer{}
	g.Stdout, g.Stderr = out, errOut
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { g.Process.Kill(); g.Wait() }()
	deadline := time.Now().Add(testproc.HangLimit)
	for !strings.Contains(out.String(), "ready") {
		if time.Now().After(deadline) {
			t.Fatalf("the other user's 70 connections were never all greeted; it said %q", errOut)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if all, _ := d.srv.guard.Pending(owner.c.LocalAddr()); all > 9 {
		t.Errorf("%d connections wait to log in, want at most 9: the owner's and 8 of the other user's", all)
	}
	owner.cmd(`o1 LOGIN alice "` + testPassword + `"`)
	if got := owner.until("o1 "); !strings.Contains(got, "o1 OK") {
		t.Fatalf("the owner's login after another user's 70 connections: %q, want OK", got)
	}
}

// pythonForOthers returns a python3 another local user may run (not a
// shim under root's home), for a test that runs a program as nobody: it
// needs root. Either lacking fails the test in CI and skips it elsewhere.
func pythonForOthers(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root, to run a program as another user")
		}
		t.Skip("needs root, to run a program as another user")
	}
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI: %v", python, err)
		}
		t.Skipf("%s not installed; skipping", python)
	}
	return python
}
