package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPprofOwnUserOnly: --pprof-addr on loopback served the profiles to
// every local user, whose CPU profiles and traces cost the process while
// they run and whose goroutine dumps show its internals. Now the kernel's
// word on the client's socket decides: the process's own user gets the
// profiles, another local user (nobody here, through curl) gets 403.
func TestPprofOwnUserOnly(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl to connect as another user with")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	errc := make(chan error, 1)
	srv, err := startPprof(addr, errc)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	url := "http://" + addr + "/debug/pprof/goroutine?debug=1"

	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Errorf("the process's own user: status %d, body %.200q; want 200 and the goroutines", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-sS", "--max-time", "20", "-w", "\nstatus %{http_code}", url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("curl as nobody: %v\n%s", err, out)
	}
	if !strings.HasSuffix(string(out), "status 403") || strings.Contains(string(out), "goroutine profile:") {
		t.Errorf("another local user: got %.300q; want status 403 and no profile", out)
	}
}
