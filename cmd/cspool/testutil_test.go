package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
)

// Helpers for the end-to-end tests that run the built binary and real peers
// (Python's imaplib and smtplib, Postfix). server_test.go has freePort,
// lockedBuffer and buildServerBinary.

// Every test of this package calls t.Parallel: most of their time is
// spent waiting on the subprocesses they start and on real peers, not
// computing. TestMain lets parallelTests of them run at once unless
// -test.parallel is given (its default, GOMAXPROCS, would hold a 2-core
// machine to two waiting tests at a time).
const parallelTests = 6

// defaultAddrs is held by the tests that take an address the daemons
// listen on by default (the status pages' 127.0.0.1:1144 and
// 127.0.0.1:11144, the quickstart's SMTP port 11025): those that squat one
// to see the daemon step aside, and those that run a command as written,
// which then listens there. Every other test gives its daemons free ports
// or none.
var defaultAddrs sync.Mutex

// holdDefaultAddrs holds defaultAddrs until the test ends.
func holdDefaultAddrs(t *testing.T) {
	defaultAddrs.Lock()
	t.Cleanup(defaultAddrs.Unlock)
}

// needTool returns the path of an external program, or skips the test when
// it is missing; under CI=true a missing program is a failure.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI but not found (Debian package %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (apt-get install %s); skipping", name, pkg)
	}
	return p
}

// loginName is the name the daemons default to (the account's name).
func loginName() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "cspool"
}

// proc is a subprocess of the test with its output collected.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan error
	exited         bool
	err            error
}

// startProc starts bin with args in dir. It is killed and waited for at the
// end of the test if still running.
func startProc(t *testing.T, name, dir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.exited {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, p.stdout, name, p.stderr)
		}
	})
	return p
}

// waitOutput waits until the process's standard output contains want and
// returns the output so far.
func (p *proc) waitOutput(t *testing.T, want string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if out := p.stdout.String(); strings.Contains(out, want) {
			return out
		}
		select {
		case err := <-p.done:
			p.exited, p.err = true, err
			t.Fatalf("%s exited (%v) before printing %q", p.name, err, want)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v", p.name, want, d)
		}
	}
}

// stop sends sig and requires a clean exit (status 0) within d.
func (p *proc) stop(t *testing.T, sig syscall.Signal, d time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
	select {
	case err := <-p.done:
		p.exited, p.err = true, err
		if err != nil {
			t.Fatalf("%s exited with %v after %v, want status 0", p.name, err, sig)
		}
	case <-time.After(d):
		// SIGQUIT: the Go runtime writes every goroutine's stack to
		// stderr, which the cleanup prints, so the hang can be read.
		_ = p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case err := <-p.done:
			p.exited, p.err = true, err
		case <-time.After(10 * time.Second):
		}
		t.Fatalf("%s did not exit within %v of %v (its stacks, at SIGQUIT, are in its stderr below)", p.name, d, sig)
	}
}

// runCmd runs bin to completion (bounded) in dir and returns its combined
// output; a failure ends the test.
func runCmd(t *testing.T, dir string, env []string, stdin string, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	if stdin != "" {
		f, err := os.Open(filepath.Join(dir, stdin))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitHealthy waits for a spool server's /v1/health.
func waitHealthy(t *testing.T, url string, p *proc) {
	t.Helper()
	if exited, err := awaitHealth(t, url, p.done); exited {
		p.exited, p.err = true, err
		t.Fatalf("%s exited (%v) before answering on %s", p.name, err, url)
	}
}

// awaitHealth polls url's /v1/health until it answers, for at most 20 s
// (then the test fails), or until the server's process exits: then it
// returns true and the exit error taken from done.
func awaitHealth(t *testing.T, url string, done <-chan error) (exited bool, exitErr error) {
	t.Helper()
	c, err := api.NewClient(url, "", mustKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Health(ctx)
		cancel()
		if err == nil {
			return false, nil
		}
		select {
		case err := <-done:
			return true, err
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy server on %s after 20 s: %v", url, err)
		}
	}
}

// settingValue returns the value of a "  key: value" line of out.
func settingValue(t *testing.T, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q line in output:\n%s", key, out)
	return ""
}

// daemonPassword is the IMAP password the daemon's settings name: printed
// as given, or "in FILE" (a generated one is never printed), then read from
// that file.
func daemonPassword(t *testing.T, out string) string {
	t.Helper()
	v := settingValue(t, out, "password")
	path, ok := strings.CutPrefix(v, "in ")
	if !ok {
		return v
	}
	path, _, _ = strings.Cut(path, " (")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the daemon's password file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// imaplibFetch is run by Python: it logs in, waits (bounded) until BOX has
// at least WANT messages, and writes every message's raw bytes (BODY.PEEK[],
// in UID order) to OUTDIR/NNN.eml. It selects read-only, so nothing changes.
const imaplibFetch = `
import imaplib, os, sys, time
host, port, user, password, want, outdir, timeout, box = sys.argv[1:9]
want, deadline = int(want), time.time() + float(timeout)
M = imaplib.IMAP4(host, int(port))
M.login(user, password)
while True:
    typ, data = M.select(box, readonly=True)
    if typ != "OK":
        sys.exit("select: %r" % (data,))
    n = int(data[0])
    if n >= want or time.time() > deadline:
        break
    time.sleep(0.1)
i = 0
if n > 0:
    typ, data = M.uid("FETCH", "1:*", "(BODY.PEEK[])")
    if typ != "OK":
        sys.exit("fetch: %r" % (data,))
    for item in data:
        if isinstance(item, tuple):
            i += 1
            with open(os.path.join(outdir, "%03d.eml" % i), "wb") as f:
                f.write(item[1])
M.logout()
print("FETCHED %d OF %d" % (i, n))
`

// fetchIMAP logs in with Python's imaplib and returns INBOX's messages, raw,
// in UID order, after waiting up to 30 s for at least want of them.
func fetchIMAP(t *testing.T, python, host, port, user, password string, want int) [][]byte {
	t.Helper()
	return fetchIMAPBox(t, python, host, port, user, password, "INBOX", want)
}

// fetchIMAPBox is fetchIMAP for the mailbox box.
func fetchIMAPBox(t *testing.T, python, host, port, user, password, box string, want int) [][]byte {
	t.Helper()
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-c", imaplibFetch, host, port, user, password, fmt.Sprint(want), out, "30", box)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("imaplib as %s on %s:%s: %v\n%s", user, host, port, err, b)
	}
	names, err := filepath.Glob(filepath.Join(out, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var msgs [][]byte
	for _, n := range names {
		m, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if len(msgs) < want {
		t.Fatalf("imaplib fetched %d messages, want at least %d (%s)", len(msgs), want, strings.TrimSpace(string(b)))
	}
	return msgs
}

// exitCode is the status of a finished command's error (0 for nil).
func exitCode(t *testing.T, err error) int {
	t.Helper()
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		return xe.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// exitedNow says whether the process has exited, without waiting.
func (p *proc) exitedNow() bool {
	if p.exited {
		return true
	}
	select {
	case err := <-p.done:
		p.exited, p.err = true, err
		return true
	default:
		return false
	}
}
