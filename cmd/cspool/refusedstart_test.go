package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRefusedStartLeavesNoSpool starts the server with a users file that
// is not there and a --spool-dir that names no spool yet (both mistyped).
// It opened the store before the users file: the refused start made a
// new spool there and recorded the spool key in it, so the next start,
// with the users file fixed and --spool-dir still wrong, served that empty
// spool without the warning that it was new. Now the users file is read
// first, nothing is made, and the next start warns.
func TestRefusedStartLeavesNoSpool(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	dir, usersPath, _ := aliceWithSpool(t)
	typo := filepath.Join(dir, "spool-typo")
	code, out, errOut := runExit(t, dir, nil, bin, "server", "--port", fmt.Sprint(freePort(t)), "--users", filepath.Join(dir, "userz"),
		"--spool-dir", typo, "--spool-key", "spool.sec")
	if code == 0 || !strings.Contains(errOut, "users file "+filepath.Join(dir, "userz")) {
		t.Fatalf("server with a missing users file: exit %d, stdout %q, stderr %q; want a failure naming the users file", code, out, errOut)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Fatalf("the refused start left %s behind (stat: %v); stderr %q", typo, err, errOut)
	}
	srv := startServer(t, bin, "--users", usersPath, "--spool-dir", typo, "--spool-key", filepath.Join(dir, "spool.sec"))
	srv.stop(t)
	if log := srv.stderr.String(); !strings.Contains(log, "made a new, empty spool") {
		t.Fatalf("the first start that made the spool did not warn about it; log:\n%s", log)
	}
}
