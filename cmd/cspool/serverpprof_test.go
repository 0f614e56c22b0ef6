package main

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerPprof runs `cspool server --pprof-addr` and fetches the
// goroutine profile from that listener; the API's own listener does not
// serve profiles.
func TestServerPprof(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startServer(t, bin, "--spool-dir", filepath.Join(t.TempDir(), "spool"), "--pprof-addr", addr)
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	code, body := get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Fatalf("goroutine profile: status %d, body %.200q", code, body)
	}
	if code, _ := get(p.url + "/debug/pprof/goroutine?debug=1"); code != http.StatusNotFound {
		t.Errorf("the API listener answered the profile path with %d, want 404", code)
	}
	p.stop(t)
}
