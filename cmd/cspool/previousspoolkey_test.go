package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

// TestPreviousSpoolKey: a device that synced with the spool's old key
// follows its replacement with --previous-spool-key. The log is written
// straight into the store, sealed with the old key and then the new one,
// with a delivery signed by the old key placed after the first by the new
// key, as only an operator colluding with the old key's thief could. The
// new key alone is refused with a hint naming --previous-spool-key; the
// new key given as the previous one, a secret key file, a damaged file and
// a key the database never recorded are refused, naming the file or the
// keys; with both keys the database moves to the new key (logged once),
// applies the old key's deliveries up to the cutover and the new key's,
// and rejects the planted one.
func TestPreviousSpoolKey(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r := newSpoolKeyRig(t)
	bin, dir, path, env, plant := r.bin, r.dir, r.path, r.env, r.plant
	old, nw := r.old, r.nw
	if err := os.WriteFile(path("damaged.pub"), []byte("cspool-pub-1:not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var srv *serverProc
	sync := func(flags ...string) (int, string, string) {
		t.Helper()
		var code int
		var stdout, stderr string
		// The server may still be starting: a transport failure is
		// retried, a refusal of a key is not.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, stdout, stderr = runExit(t, dir, env, bin, append([]string{"sync", "--user", "alice", "--db", "mail.db",
				"--spool-server", srv.url, "--user-key", "user.sec", "--user-public-key", "user.pub"}, flags...)...)
			if code == 0 || strings.Contains(stderr, "spool-key") || time.Now().After(deadline) {
				return code, stdout, stderr
			}
		}
	}
	plant(old, "one")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"))
	if code, out, stderr := sync("--spool-key", "old.pub"); code != 0 || !strings.Contains(out, "1 applied, 0 rejected") {
		t.Fatalf("first sync with the old key: exit %d, want the delivery applied\n%s\n%s", code, out, stderr)
	}
	srv.stop(t)
	// Offline across the replacement: the old key's last delivery, the
	// new key's, and the old key's once more after them.
	plant(old, "two")
	plant(nw, "three")
	plant(old, "planted")
	plant(nw, "four")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"))

	for _, c := range []struct {
		name  string
		flags []string
		want  []string
	}{
		{"the new key alone", []string{"--spool-key", "new.pub"},
			[]string{"mail.db trusts the spool key", "hint:", "--previous-spool-key", `"Replacing the spool key"`}},
		{"the new key as the previous one", []string{"--spool-key", "new.pub", "--previous-spool-key", "new.pub"},
			[]string{"--previous-spool-key: new.pub holds the same key as --spool-key new.pub", "hint:"}},
		{"a secret key as the previous one", []string{"--spool-key", "new.pub", "--previous-spool-key", "old.sec"},
			[]string{"old.sec", "hint:"}},
		{"a damaged file as the previous one", []string{"--spool-key", "new.pub", "--previous-spool-key", "damaged.pub"},
			[]string{"damaged.pub", "hint:"}},
		{"a key never recorded as the previous one", []string{"--spool-key", "new.pub", "--previous-spool-key", "other.pub"},
			[]string{"--previous-spool-key: mail.db trusts the spool key", "which is neither --spool-key", "hint:"}},
	} {
		code, _, stderr := sync(c.flags...)
		if code == 0 {
			t.Errorf("%s: exit 0, want a refusal\n%s", c.name, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: stderr does not say %q:\n%s", c.name, w, stderr)
			}
		}
	}
	code, out, stderr := sync("--spool-key", "new.pub", "--previous-spool-key", "old.pub")
	if code != 0 || !strings.Contains(out, "3 applied, 1 rejected") {
		t.Fatalf("sync with both keys: exit %d, want 3 applied and the planted delivery rejected\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "the spool key was replaced") || !strings.Contains(stderr, "the first entry signed by the new spool key is applied") {
		t.Errorf("sync with both keys: the move and the cutover are not logged:\n%s", stderr)
	}
	code, out, stderr = sync("--spool-key", "new.pub", "--previous-spool-key", "old.pub")
	if code != 0 || strings.Contains(stderr, "the spool key was replaced") {
		t.Errorf("a second sync with both keys: exit %d, want 0 and the move not logged again\n%s\n%s", code, out, stderr)
	}
}

// spoolKeyRig is the setting of the tests of a replaced spool key with
// real server processes: the binary, a folder holding alice's key pair and
// three spool key pairs (old, new, other: NAME.sec and NAME.pub; alice's
// user.sec and user.pub), a users file of alice and a spool folder, into
// which plant writes deliveries signed by any key.
type spoolKeyRig struct {
	t                     *testing.T
	bin, dir              string
	env                   []string
	alice, old, nw, other *keys.SecretKey
	third                 *keys.SecretKey // the key after nw, for a second replacement
	date                  int64
}

func newSpoolKeyRig(t *testing.T) *spoolKeyRig {
	t.Helper()
	r := &spoolKeyRig{t: t, bin: buildServerBinary(t), dir: t.TempDir(), env: append(os.Environ(), "USER=alice"),
		alice: mustKey(t), old: mustKey(t), nw: mustKey(t), other: mustKey(t), third: mustKey(t), date: 1764000000000}
	for name, k := range map[string]*keys.SecretKey{"user": r.alice, "old": r.old, "new": r.nw, "other": r.other, "third": r.third} {
		if err := keys.WriteFiles(k, r.path(name+".sec"), r.path(name+".pub"), keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writeUsersFile(t, r.path("users"), map[string]*keys.SecretKey{"alice": r.alice})
	if err := os.Mkdir(r.path("spool"), 0o700); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *spoolKeyRig) path(name string) string { return filepath.Join(r.dir, name) }

// plant appends to alice's log, straight into the spool's store (no
// server may hold it), one delivery signed by author for each subject.
func (r *spoolKeyRig) plant(author *keys.SecretKey, subjects ...string) {
	t := r.t
	t.Helper()
	st, err := sqlitestore.Open(r.path("spool"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, s := range subjects {
		r.date++
		b, _, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: r.date, Body: []byte("Subject: " + s + "\r\n\r\nbody\r\n")},
			author, r.alice.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Append(context.Background(), "alice", [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
}
