package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/keys"
)

// TestEmptyUsersFileWarned starts the server, the binary, on an empty
// users file, as docs/systemd/README.md's recipe does (`touch
// /etc/cspool/users`, the users' lines added later): it starts, since a
// new installation has no user yet, and says at start, as a warning, that
// it refuses every delivery and every device until a line is added and
// it is reloaded. It said only users=0 in an info line, as after a
// mistyped or truncated file. A line added and SIGHUP: alice is served,
// and no second warning.
func TestEmptyUsersFileWarned(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, _, alice := aliceWithSpool(t)
	users := filepath.Join(dir, "empty-users")
	if err := os.WriteFile(users, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, bin, "--users", users, "--spool-dir", filepath.Join(dir, "spool"), "--spool-key", filepath.Join(dir, "spool.sec"))
	const warning = `level=WARN msg="the users file lists no user: every delivery is refused as for an unknown user (LMTP 550) and every device's request too, ` +
		`until a line NAME PUBLIC-KEY is added and the server reloaded (systemctl reload, or SIGHUP)"`
	if log := srv.stderr.String(); !strings.Contains(log, warning) || !strings.Contains(log, "file="+users) {
		t.Fatalf("the server's log on an empty users file has no warning naming it:\n%s", log)
	}
	writeUsersFile(t, users, map[string]*keys.SecretKey{"alice": alice})
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i := 0; !strings.Contains(srv.stderr.String(), "users reloaded"); i++ {
		if i == 300 {
			t.Fatalf("no reload logged after SIGHUP:\n%s", srv.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, out, errOut := runExitStdin(t, dir, nil, []byte("Subject: x\r\n\r\nx\r\n"), bin, "deliver", "--spool-server", srv.url,
		"--users", users, "--user", "alice", "--spool-key", "spool.sec"); code != 0 {
		t.Fatalf("deliver to alice after the reload: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	srv.stop(t)
	if n := strings.Count(srv.stderr.String(), "lists no user"); n != 1 {
		t.Errorf("the warning came %d times, want once (at start):\n%s", n, srv.stderr)
	}
}
