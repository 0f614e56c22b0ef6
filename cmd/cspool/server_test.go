package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/testproc"
)

// lockedBuffer collects a subprocess's stderr.
type lockedBuffer = testproc.Buffer

// freePort is a loopback port for a server started in another process.
func freePort(t *testing.T) int { return testproc.FreePort(t) }

// serverProc is a `cspool server` subprocess.
type serverProc struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	url    string
	done   chan error
}

func startServer(t *testing.T, bin string, args ...string) *serverProc {
	t.Helper()
	port := freePort(t)
	p := &serverProc{stderr: &lockedBuffer{}, url: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"server", "--port", fmt.Sprint(port)}, args...)...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("server log:\n%s", p.stderr)
		}
	})
	if exited, err := awaitHealth(t, p.url, p.done); exited {
		t.Fatalf("server exited before answering: %v\n%s", err, p.stderr)
	}
	return p
}

// stop sends SIGTERM and requires exit status 0.
func (p *serverProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("server did not exit within 40 s of SIGTERM")
	}
}

func mustKey(t *testing.T) *keys.SecretKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealDelivery seals msg as a delivery by the spool key to user, whose key
// is to: an entry the server takes from the spool key.
func sealDelivery(t *testing.T, spoolK *keys.SecretKey, to keys.PublicKey, user, msg string) []byte {
	t.Helper()
	b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: []byte(msg)}, spoolK, to, user, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeUsersFile(t *testing.T, path string, users map[string]*keys.SecretKey) {
	t.Helper()
	var b strings.Builder
	for n, k := range users {
		fmt.Fprintf(&b, "%s %s\n", n, k.Public())
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

func buildServerBinary(t *testing.T) string {
	t.Helper()
	return buildBinary(t, "cspool", ".")
}

// buildBinary builds the Go package pkg (a path relative to this
// directory) with the build tags given, static as the release is
// (TestStaticBuild checks the cspool binary), once for all the tests that
// ask for the same name; name is the binary's name and must not be
// reused for another package or tags.
func buildBinary(t *testing.T, name, pkg string, tags ...string) string {
	t.Helper()
	built.mu.Lock()
	if built.bins == nil {
		built.bins = map[string]*builtBinary{}
	}
	b := built.bins[name]
	if b == nil {
		b = &builtBinary{}
		built.bins[name] = b
	}
	built.mu.Unlock()
	b.once.Do(func() {
		built.mu.Lock()
		if built.dir == "" {
			built.dir, b.err = os.MkdirTemp("", "cspool-test-bin-")
		}
		dir := built.dir
		built.mu.Unlock()
		if b.err != nil {
			return
		}
		b.bin = filepath.Join(dir, name)
		// -buildvcs=auto records the commit (`cspool version`,
		// TestVersion) even where GOFLAGS turns it off.
		args := []string{"build", "-buildvcs=auto", "-o", b.bin}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("CGO_ENABLED=0 go %s %s: %v\n%s", strings.Join(args, " "), pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// built holds the binaries the tests run (the cspool binary, and a few
// helpers some tests need), each compiled once for all of them (each build
// took a link of a few seconds, and the first a whole compile); TestMain
// removes their directory.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		flag.Set("test.parallel", fmt.Sprint(parallelTests))
	}
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

func TestServerCommand(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	t.Run("users file, LMTP, reload", func(t *testing.T) { testServerUsersFile(t, bin) })
	t.Run("test mode", func(t *testing.T) { testServerTestMode(t, bin) })
	t.Run("replay across a restart, connection limit", func(t *testing.T) { testServerRestartReplay(t, bin) })
}

// testServerRestartReplay captures alice's signed append, restarts the
// server process on the same spool directory and replays it: refused, not
// appended. Then connections beyond --max-conns-per-addr get 429. The
// first start, which made the spool, warns that it is new (a mistyped
// --spool-dir makes one too); the restart does not.
func testServerRestartReplay(t *testing.T, bin string) {
	dir := t.TempDir()
	alice := mustKey(t)
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice})
	args := []string{"--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath, "--max-conns-per-addr", "2"}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	body := api.EncodeBatch([][]byte{[]byte("expunge message 7")})
	// Clients here close each connection after its request, so that the
	// connection limit below counts only the connections it holds.
	oneShot := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	var captured http.Header
	// send sends the captured append, or, signed at ts, a new one to capture.
	send := func(url string, ts time.Time) *http.Response {
		req, err := http.NewRequestWithContext(ctx, "POST", url+"/v1/users/alice/entries", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if !ts.IsZero() {
			req.Header.Set("Content-Type", api.ContentType)
			if err := api.SignRequest(req, body, alice, ts); err != nil {
				t.Fatal(err)
			}
			captured = req.Header.Clone()
		}
		req.Header = captured.Clone()
		resp, err := oneShot.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	p := startServer(t, bin, args...)
	resp := send(p.url, time.Now())
	if earliest, err := strconv.ParseInt(resp.Header.Get(api.HeaderEarliestTS), 10, 64); err == nil && resp.StatusCode == http.StatusServiceUnavailable {
		// Signed within 30 s of the start: sign again as the server says.
		resp = send(p.url, time.Unix(earliest, 0))
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the original append: %d", resp.StatusCode)
	}
	p.stop(t)
	const newSpool = `level=WARN msg="made a new, empty spool: if this server's users have mail already, --spool-dir is mistyped`
	if log := p.stderr.String(); !strings.Contains(log, newSpool) || !strings.Contains(log, "dir="+filepath.Join(dir, "spool")) {
		t.Errorf("the first start on a new spool directory did not warn that the spool is new:\n%s", log)
	}

	p = startServer(t, bin, args...)
	if log := p.stderr.String(); strings.Contains(log, newSpool) {
		t.Errorf("a restart on the same spool warned that it is new:\n%s", log)
	}
	if resp := send(p.url, time.Time{}); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(api.HeaderEarliestTS) == "" {
		t.Errorf("the append replayed to the restarted server: %d, %s %q; want 503 with it",
			resp.StatusCode, api.HeaderEarliestTS, resp.Header.Get(api.HeaderEarliestTS))
	}
	tr := &http.Transport{DisableKeepAlives: true}
	ac, err := api.NewClient(p.url, "alice", alice, &http.Client{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	if head, err := ac.Head(ctx); err != nil || head != 1 {
		t.Errorf("alice after the replay: head %d, %v; want 1 (the replay not appended, her client recovering)", head, err)
	}

	// Hold two connections the server admitted (each answered 200, not
	// 429). Connections of the clients above may still count for a moment
	// (the server releases one when it reads its close), and a connection
	// dialled meanwhile is over the limit and refused, then the slot frees:
	// so each held connection is proven admitted, and any other connection
	// from here on is a third one.
	addr := strings.TrimPrefix(p.url, "http://")
	for held, tries := 0, 0; held < 2; tries++ {
		if tries == 100 {
			t.Fatalf("the server admitted %d connections in 100 tries; want 2", held)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, "GET /v1/health HTTP/1.1\r\nHost: cspool\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("health on a raw connection: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			held++
			defer c.Close()
		case http.StatusTooManyRequests:
			c.Close()
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("health on a raw connection: %d", resp.StatusCode)
		}
	}
	third, err := api.NewClient(p.url, "alice", alice, &http.Client{Transport: &http.Transport{DisableKeepAlives: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := third.Head(ctx); !errors.Is(err, api.ErrTooManyRequests) {
		t.Errorf("a third connection from 127.0.0.1: %v, want ErrTooManyRequests (429)", err)
	}
	p.stop(t)
}

func testServerUsersFile(t *testing.T, bin string) {
	dir := t.TempDir()
	alice, bob, spoolK := mustKey(t), mustKey(t), mustKey(t)
	usersPath := filepath.Join(dir, "users")
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice})
	spoolSec, spoolPub := filepath.Join(dir, "spool.sec"), filepath.Join(dir, "spool.pub")
	if err := keys.WriteFiles(spoolK, spoolSec, spoolPub, keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	lmtpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServer(t, bin, "--spool-dir", filepath.Join(dir, "spool"), "--users", usersPath,
		"--spool-key", spoolSec, "--lmtp", lmtpAddr, "--lmtp-domains", "example.org")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ac, err := api.NewClient(p.url, "alice", alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first, err := ac.Append(ctx, "alice", [][]byte{[]byte("one\x00"), []byte("two")}); err != nil || first != 1 {
		t.Fatalf("alice appends: first %d, %v", first, err)
	}
	sc, err := api.NewClient(p.url, "", spoolK, nil)
	if err != nil {
		t.Fatal(err)
	}
	delivered := sealDelivery(t, spoolK, alice.Public(), "alice", "delivered over HTTP")
	if first, err := sc.Append(ctx, "alice", [][]byte{delivered}); err != nil || first != 3 {
		t.Fatalf("spool key appends: first %d, %v", first, err)
	}
	// One message over LMTP.
	conn, err := net.Dial("tcp", lmtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	lc := smtp.NewClientLMTP(conn)
	if err := lc.SendMail("sender@example.net", []string{"alice@example.org"}, strings.NewReader("Subject: hi\r\n\r\nbody\r\n")); err != nil {
		t.Fatalf("LMTP delivery: %v", err)
	}
	lc.Close()
	es, head, err := ac.Read(ctx, 0, 0, 0, 0)
	if err != nil || head != 4 || len(es) != 4 || string(es[0].Data) != "one\x00" || !bytes.Equal(es[2].Data, delivered) {
		t.Fatalf("alice reads: %d entries, head %d, %v; want 4 entries", len(es), head, err)
	}

	// Bob is refused until the users file lists him and SIGHUP reloads it.
	bc, err := api.NewClient(p.url, "bob", bob, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.Head(ctx); !errors.Is(err, api.ErrUnauthenticated) {
		t.Fatalf("bob before reload: %v, want ErrUnauthenticated", err)
	}
	writeUsersFile(t, usersPath, map[string]*keys.SecretKey{"alice": alice, "bob": bob})
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err = bc.Head(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob still refused 10 s after SIGHUP: %v", err)
		}
	}
	p.stop(t)
	log := p.stderr.String()
	for _, want := range []string{"cspool server started", "lmtp=" + lmtpAddr, "users reloaded", "stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("server log lacks %q", want)
		}
	}
	if strings.Contains(log, "one\x00") || strings.Contains(log, "Subject: hi") || strings.Contains(log, "sig=") {
		t.Error("server log holds message contents or signatures")
	}
}

func testServerTestMode(t *testing.T, bin string) {
	dir := t.TempDir()
	carol, other := mustKey(t), mustKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for run := range 2 { // a restart keeps the registration
		p := startServer(t, bin, "--spool-dir", dir)
		cc, err := api.NewClient(p.url, "carol", carol, nil)
		if err != nil {
			t.Fatal(err)
		}
		if first, err := cc.Append(ctx, "carol", [][]byte{[]byte("x")}); err != nil || first != uint64(run+1) {
			t.Fatalf("run %d: carol appends: first %d, %v", run, first, err)
		}
		oc, err := api.NewClient(p.url, "carol", other, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := oc.Head(ctx); !errors.Is(err, api.ErrUnauthenticated) {
			t.Errorf("run %d: second key for carol: %v, want ErrUnauthenticated", run, err)
		}
		p.stop(t)
		if !strings.Contains(p.stderr.String(), "TEST MODE") {
			t.Errorf("run %d: log does not announce test mode", run)
		}
	}
}

func TestServerUsage(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	tests := [][]string{
		{"server", "--lmtp", "127.0.0.1:2424"},
		{"server", "--tls-cert", "c.pem"},
		{"server", "--port", "70000"},
		{"server", "extra"},
		{"server", "--max-conns-per-addr", "-1"},
		{"server", "--nonces-per-key", "0"},
		{"server", "--max-long-polls", "0"},
		{"server", "--append-memory", "-1"},
		{"server", "--append-memory", "1048576"}, // below the largest append (64 MiB)
		{"server", "--read-memory", "-1"},
		{"server", "--read-memory", "1048576"}, // below the largest append (64 MiB)
	}
	for _, args := range tests {
		if code := run(e, args); code != 2 {
			t.Errorf("cspool %v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
	}
	out.Reset()
	if code := run(e, []string{"server", "-h"}); code != 0 || !strings.Contains(out.String(), "Example:") {
		t.Errorf("server -h: exit %d, output %q", code, out.String())
	}
}

// TestServerLMTPAddressWithoutPort: --lmtp without a port is refused with
// a hint that says what the flag takes, not to pick another address.
func TestServerLMTPAddressWithoutPort(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	dir := t.TempDir()
	sec := filepath.Join(dir, "spool.sec")
	if code := run(e, []string{"gen-keys", sec, filepath.Join(dir, "spool.pub")}); code != 0 {
		t.Fatalf("gen-keys: exit %d: %s", code, errb.String())
	}
	errb.Reset()
	code := run(e, []string{"server", "--spool-dir", filepath.Join(dir, "spool"), "--addr", "127.0.0.1", "--port", "0",
		"--spool-key", sec, "--lmtp", "127.0.0.1", "--lmtp-domains", "example.org"})
	if code != 1 || !strings.Contains(errb.String(), "missing port in address") || !strings.Contains(errb.String(), "--lmtp takes HOST:PORT") {
		t.Errorf("--lmtp 127.0.0.1: exit %d, stderr %q; want 1 and a hint naming HOST:PORT", code, errb.String())
	}
}
