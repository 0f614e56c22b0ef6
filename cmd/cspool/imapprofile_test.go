package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestIMAPServerProfile runs cspool imap-server with --cpuprofile and
// --pprof-addr: the profile listener answers on its loopback address while
// the daemon serves a FETCH, and on SIGTERM the daemon writes a CPU profile
// that go tool pprof reads. A --pprof-addr beyond loopback is refused
// before anything starts.
func TestIMAPServerProfile(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	python := needTool(t, "python3", "python3")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to read the profile with")
	}
	bin := buildServerBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "USER=alice")
	runCmd(t, dir, env, "", bin, "gen-keys", "user.sec", "user.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	httpPort, imapPort := freePort(t), freePort(t)
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	url := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	server := startProc(t, "cspool server", dir, env, bin, "server", "--port", fmt.Sprint(httpPort))
	waitHealthy(t, url, server)

	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"0.0.0.0:6060", "192.0.2.1:6060", "6060"} {
		code, stdout, stderr := runExitStdin(t, dir, env, nil, bin, "imap-server", "--spool-server", url,
			"--port", fmt.Sprint(imapPort), "--status-addr", "", "--password-file", "pw", "--pprof-addr", bad)
		if code != 2 || !strings.Contains(stderr, "loopback") {
			t.Errorf("--pprof-addr %s: exit %d, want 2 and a word on loopback\n%s%s", bad, code, stdout, stderr)
		}
	}

	profile := filepath.Join(dir, "cpu.pprof")
	daemon := startProc(t, "cspool imap-server", dir, env, bin, "imap-server", "--spool-server", url,
		"--port", fmt.Sprint(imapPort), "--status-addr", "", "--password-file", "pw",
		"--cpuprofile", profile, "--pprof-addr", pprofAddr)
	daemon.waitOutput(t, "state:", 30*time.Second)
	if err := os.WriteFile(filepath.Join(dir, "message"), []byte("Subject: profiled\r\n\r\nhello\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		runCmd(t, dir, env, "message", bin, "deliver", "--user", "alice", "--user-key", "user.pub", "--spool-key", "spool.sec")
	}
	if got := fetchIMAP(t, python, "127.0.0.1", fmt.Sprint(imapPort), "alice", "secret", 20); len(got) != 20 {
		t.Fatalf("fetched %d messages, want 20", len(got))
	}

	resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Fatalf("goroutine profile on %s: status %d, body %.200q", pprofAddr, resp.StatusCode, body)
	}
	if _, err := os.Stat(profile); err != nil {
		t.Fatalf("the profile file is not there while the daemon runs: %v", err)
	}

	daemon.stop(t, syscall.SIGTERM, 30*time.Second)
	st, err := os.Stat(profile)
	if err != nil || st.Size() == 0 {
		t.Fatalf("no CPU profile written on SIGTERM: %v", err)
	}
	// -raw prints the samples with their stacks, symbolized from the
	// binary the profile names; a file that is not a profile fails here.
	out, err := exec.Command(goTool, "tool", "pprof", "-raw", bin, profile).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof cannot read %s: %v\n%s", profile, err, out)
	}
	if !strings.Contains(string(out), "PeriodType: cpu nanoseconds") {
		t.Errorf("the profile is not a CPU profile:\n%.2000s", out)
	}
}
