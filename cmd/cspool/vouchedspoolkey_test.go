package main

import (
	"strings"
	"testing"
	"time"
)

// TestVouchedSpoolKey: the spool's key replaced as docs/OPERATING.md
// says (a server started with --spool-key new.sec --previous-spool-key
// old.pub), a new device given the new key alone syncs every message,
// the old key's deliveries before the cutover included, and rejects the
// old key's placed after it: the server states, signed by the new key,
// which key it replaced, and keeps stating it after a restart without
// --previous-spool-key. Before, the new device passed the old key's
// deliveries by as a stranger's.
func TestVouchedSpoolKey(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r := newSpoolKeyRig(t)
	bin, dir, path, env, plant := r.bin, r.dir, r.path, r.env, r.plant
	old, nw := r.old, r.nw
	var srv *serverProc
	sync := func(db string) (int, string, string) {
		t.Helper()
		var code int
		var stdout, stderr string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, stdout, stderr = runExit(t, dir, env, bin, "sync", "--user", "alice", "--db", db,
				"--spool-server", srv.url, "--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", "new.pub")
			if code == 0 || strings.Contains(stderr, "spool-key") || time.Now().After(deadline) {
				return code, stdout, stderr
			}
		}
	}
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("old.sec"))
	srv.stop(t)
	plant(old, "one", "two")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"),
		"--previous-spool-key", path("old.pub"))
	srv.stop(t)
	plant(nw, "three")
	plant(old, "planted")
	plant(nw, "four")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"))
	code, out, stderr := sync("new.db")
	if code != 0 || !strings.Contains(out, "4 applied, 1 rejected") {
		t.Fatalf("a new device given the new key alone: exit %d, want the old key's two deliveries and the new key's applied, the planted one rejected\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "as the spool states under its signature") || !strings.Contains(stderr, "the first entry signed by the new spool key is applied") {
		t.Errorf("the previous key vouched for and the cutover are not logged:\n%s", stderr)
	}
}

// TestVouchedSpoolKeyExistingDevice: a device whose database recorded the
// old spool key, started with the new key alone after the spool's key was
// replaced, asks the spool at its start which key the new one replaced,
// and moves its record as --previous-spool-key would: it applies the new
// key's deliveries, rejects the old key's placed after the cutover, and
// keeps the mail it had. A key the statement does not verify under, and a
// spool that cannot be asked, are refused as before (exit 77, the reason
// in the error). Before, the device was refused at its start whatever the
// spool stated, its hint naming --previous-spool-key.
func TestVouchedSpoolKeyExistingDevice(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r := newSpoolKeyRig(t)
	bin, dir, path, env, plant := r.bin, r.dir, r.path, r.env, r.plant
	old, nw := r.old, r.nw
	var srv *serverProc
	sync := func(url, db, spoolKey string) (int, string, string) {
		t.Helper()
		var code int
		var stdout, stderr string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, stdout, stderr = runExit(t, dir, env, bin, "sync", "--user", "alice", "--db", db,
				"--spool-server", url, "--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", spoolKey)
			if code == 0 || strings.Contains(stderr, "spool-key") || time.Now().After(deadline) {
				return code, stdout, stderr
			}
		}
	}
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("old.sec"))
	srv.stop(t)
	plant(old, "one", "two")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("old.sec"))
	for _, db := range []string{"a.db", "b.db", "c.db"} {
		if code, out, stderr := sync(srv.url, db, "old.pub"); code != 0 || !strings.Contains(out, "2 applied") {
			t.Fatalf("%s synced with the old key: exit %d\n%s\n%s", db, code, out, stderr)
		}
	}
	srv.stop(t)
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"),
		"--previous-spool-key", path("old.pub"))
	srv.stop(t)
	plant(nw, "three")
	plant(old, "planted")
	plant(nw, "four")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"))
	code, out, stderr := sync(srv.url, "a.db", "new.pub")
	if code != 0 || !strings.Contains(out, "2 applied, 1 rejected") {
		t.Fatalf("a device of the old key started with the new key alone: exit %d, want the new key's two deliveries applied, the planted one rejected\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "it is taken as --previous-spool-key") || !strings.Contains(stderr, "the first entry signed by the new spool key is applied") {
		t.Errorf("the record moved on the spool's statement, and the cutover, are not logged:\n%s", stderr)
	}
	if code, out, stderr := sync(srv.url, "a.db", "new.pub"); code != 0 {
		t.Errorf("a.db started again with the new key: exit %d\n%s\n%s", code, out, stderr)
	}
	// A key the spool's statement is not signed by moves nothing.
	if code, _, stderr := sync(srv.url, "b.db", "other.pub"); code != 77 || !strings.Contains(stderr, "does not verify") {
		t.Errorf("b.db started with a key that made no statement: exit %d, want 77 and the statement not verifying\n%s", code, stderr)
	}
	// A spool that cannot be asked: refused at the start, as before.
	srv.stop(t)
	if code, _, stderr := sync(srv.url, "c.db", "new.pub"); code != 77 || !strings.Contains(stderr, "could not be asked") {
		t.Errorf("c.db started with the new key, the spool down: exit %d, want 77 and the spool not asked\n%s", code, stderr)
	}
}
