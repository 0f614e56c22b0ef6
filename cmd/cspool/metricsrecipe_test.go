package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMetricsRecipe runs docs/METRICS.md's two shell blocks as printed:
// the server with --metrics-addr, then curl on the metrics. Only the paths
// (/etc/cspool and /var/lib/cspool into the test's folder) and the ports
// differ. curl must get the metrics, among them the delivery counter,
// and the server must keep its spool where the recipe says.
func TestMetricsRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	needTool(t, "curl", "curl")
	blocks := docShellBlocks(t, "docs/METRICS.md", "")
	if len(blocks) != 2 || !strings.HasPrefix(blocks[0], "cspool server ") || !strings.HasPrefix(blocks[1], "curl ") {
		t.Fatalf("docs/METRICS.md's sh blocks changed: %q, want the server, then curl", blocks)
	}
	bin := buildServerBinary(t)
	root := t.TempDir()
	etc, spoolDir, cwd := filepath.Join(root, "etc/cspool"), filepath.Join(root, "var/lib/cspool"), filepath.Join(root, "cwd")
	for _, d := range []string{etc, spoolDir, cwd} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	env := recipeEnv(bin, root)
	runCmd(t, etc, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	out := runCmd(t, etc, env, "", bin, "gen-keys", "alice.sec", "alice.pub")
	_, pub, ok := strings.Cut(out, "public key: ")
	if !ok {
		t.Fatalf("gen-keys printed no public key:\n%s", out)
	}
	if err := os.WriteFile(filepath.Join(etc, "users"), []byte("alice "+strings.TrimSpace(pub)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	httpPort, lmtpPort, metricsPort := freePort(t), freePort(t), freePort(t)
	replace := []string{"/etc/cspool", etc, "/var/lib/cspool", spoolDir,
		"127.0.0.1:2424", fmt.Sprintf("127.0.0.1:%d", lmtpPort),
		"127.0.0.1:9399", fmt.Sprintf("127.0.0.1:%d", metricsPort),
		"cspool server ", fmt.Sprintf("cspool server --port %d ", httpPort)}
	srv := startRecipe(t, "cspool server", blocks[0], cwd, env, replace)
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d", httpPort), srv)
	lmtpSendOne(t, fmt.Sprintf("127.0.0.1:%d", lmtpPort), "alice@example.org", 0)
	metrics := runRecipe(t, blocks[1], cwd, env, replace, func(l string) { t.Fatalf("unexpected %q in the curl recipe", l) })
	if want := `cspool_deliveries_total{outcome="ok",via="lmtp"} 1`; !strings.Contains(metrics, want) {
		t.Errorf("curl as docs/METRICS.md says printed no %q:\n%s", want, metrics)
	}
	srv.stop(t, syscall.SIGTERM, 40*time.Second)
	if _, err := os.Stat(filepath.Join(spoolDir, "spool.db")); err != nil {
		t.Errorf("the recipe's server kept no spool in --spool-dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cwd, "spool")); err == nil {
		t.Error("the recipe's server made a spool in the folder it was started in")
	}
}
