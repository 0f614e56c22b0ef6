package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/keys"
)

// TestMixedUpKeys passes each command's key flags the wrong files, as an
// operator in a hurry does: the error names the file, the hint names the
// swap (before any advice about file modes), and no hint tells the user to
// make a new key where an existing one is needed.
func TestMixedUpKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, who := range []string{"user", "spool"} {
		var out bytes.Buffer
		e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
		if code := run(e, []string{"gen-keys", p(who + ".sec"), p(who + ".pub")}); code != 0 {
			t.Fatalf("gen-keys %s: exit %d: %s", who, code, out.String())
		}
	}
	tlsKey := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAbcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n-----END PRIVATE KEY-----\n"
	if err := os.WriteFile(p("tls.key"), []byte(tlsKey), 0o600); err != nil {
		t.Fatal(err)
	}
	device := func(userKey, userPub, spoolPub string) []string {
		return []string{"sync", "--user", "alice", "--db", p("mail.db"), "--spool-server", "http://127.0.0.1:1",
			"--user-key", userKey, "--user-public-key", userPub, "--spool-key", spoolPub}
	}
	deliver := func(userKey, spoolKey string) []string {
		return []string{"deliver", "--user", "alice", "--spool-dir", p("spool"), "--user-key", userKey, "--spool-key", spoolKey}
	}
	cases := []struct {
		name     string
		args     []string
		want     []string // in stderr
		dontWant []string
	}{
		{"device: user keys swapped", device(p("user.pub"), p("user.sec"), p("spool.pub")),
			[]string{p("user.pub"), "wrong kind of key", "--user-key and --user-public-key look swapped"},
			[]string{"chmod", "gen-keys"}},
		{"device: spool secret key given", device(p("user.sec"), p("user.pub"), p("spool.sec")),
			[]string{p("spool.sec"), "--spool-key takes a public key file", "keep the secret one private"},
			[]string{"gen-keys"}},
		{"device: user key missing", device(p("nothere.sec"), p("user.pub"), p("spool.pub")),
			[]string{p("nothere.sec"), "copy user.sec and user.pub from another of the user's devices"},
			[]string{"chmod"}},
		{"deliver: keys swapped", deliver(p("spool.sec"), p("user.pub")),
			[]string{p("user.pub"), "--spool-key and --user-key look swapped"},
			[]string{"chmod", "gen-keys"}},
		// A wrong kind is a swap only when the other flag's file is of
		// the kind this one wants: swapping these would not help.
		{"device: public key for both", device(p("user.pub"), p("user.pub"), p("spool.pub")),
			[]string{p("user.pub"), "--user-key takes a secret key file", "user.sec next to user.pub"},
			[]string{"swapped", "chmod", "gen-keys"}},
		{"deliver: the user's secret key", deliver(p("user.sec"), p("spool.sec")),
			[]string{p("user.sec"), "--user-key takes a public key file", "keep the secret one private"},
			[]string{"swapped", "gen-keys"}},
		// The user's key pair at hand: its secret key as the spool's.
		{"deliver: the user's secret key as the spool's", deliver(p("user.pub"), p("user.sec")),
			[]string{"has the public key of --spool-key " + p("user.sec"), "either --spool-key " + p("user.sec") + " is alice's own secret key",
				"give the spool's", "or --user-key is the spool's public key"},
			[]string{"put the user's own public key on its line"}},
		{"server: public spool key", []string{"server", "--spool-dir", p("spool"), "--port", "1", "--spool-key", p("spool.pub")},
			[]string{p("spool.pub"), "--spool-key takes a secret key file"},
			[]string{"chmod"}},
		// The TLS key of the same server, a PEM file of several lines:
		// not a damaged key to restore from a backup.
		{"server: its TLS key as the spool key", []string{"server", "--spool-dir", p("spool"), "--port", "1", "--spool-key", p("tls.key")},
			[]string{p("tls.key"), "not a cspool key", "a PEM block (PRIVATE KEY)", "check --spool-key"},
			[]string{"damaged", "backup", "MC4CAQAw"}},
		{"gen-keys: no such folder", []string{"gen-keys", p("no/such/dir/a.sec"), p("no/such/dir/a.pub")},
			[]string{"no/such/dir/a.sec", "check that the folder exists"},
			[]string{"--force", "replace"}},
		{"gen-keys: public file's folder missing", []string{"gen-keys", p("half.sec"), p("no/such/dir/half.pub")},
			[]string{"no/such/dir/half.pub", "check that the folder exists"},
			[]string{"--force"}},
		{"gen-keys: key exists", []string{"gen-keys", p("user.sec"), p("other.pub")},
			[]string{p("user.sec"), "file exists", "--force replaces the existing key"},
			nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdin: strings.NewReader("Subject: x\r\n\r\nx\r\n"), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			code := run(e, c.args)
			msg := stderr.String()
			if code == 0 {
				t.Fatalf("cspool %v: exit 0, want a failure; stderr %q", c.args, msg)
			}
			if !strings.Contains(msg, "cspool: hint:") {
				t.Errorf("no hint in %q", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("stderr %q does not say %q", msg, w)
				}
			}
			for _, w := range c.dontWant {
				if strings.Contains(msg, w) {
					t.Errorf("stderr %q says %q", msg, w)
				}
			}
		})
	}
	// Nothing was left behind by the failed gen-keys.
	for _, f := range []string{"other.pub", "half.sec"} {
		if _, err := os.Stat(p(f)); err == nil {
			t.Errorf("a failed gen-keys left %s behind", f)
		}
	}
	// A secret key passed where the public one belongs is never echoed.
	sec, err := os.ReadFile(p("spool.sec"))
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
	run(e, device(p("user.sec"), p("user.pub"), p("spool.sec")))
	for _, line := range strings.Split(string(sec), "\n") {
		if strings.HasPrefix(line, "CSPOOL-SECRET-KEY-1:") && strings.Contains(stderr.String(), line[20:]) {
			t.Errorf("the error shows the secret key: %q", stderr.String())
		}
	}
}

// TestUserPublicKeyNextToSecret: a device given only --user-key finds the
// public half gen-keys wrote next to it (alice.sec: alice.pub) instead of
// looking for user.pub in the working directory, and --user-public-key,
// when given, still wins.
func TestUserPublicKeyNextToSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, who := range []string{"alice", "bob", "spool"} {
		var out bytes.Buffer
		e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
		if code := run(e, []string{"gen-keys", p(who + ".sec"), p(who + ".pub")}); code != 0 {
			t.Fatalf("gen-keys %s: exit %d: %s", who, code, out.String())
		}
	}
	sync := func(extra ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
		args := append([]string{"sync", "--once", "--user", "alice", "--db", p("mail.db"), "--spool-server", "http://127.0.0.1:1",
			"--user-key", p("alice.sec"), "--spool-key", p("spool.pub")}, extra...)
		if code := run(e, args); code == 0 {
			t.Fatalf("cspool %v: exit 0 against a closed port", args)
		}
		return stderr.String()
	}
	// The keys load, so what fails is reaching the spool server.
	if msg := sync(); !strings.Contains(msg, "127.0.0.1:1") || strings.Contains(msg, "user.pub") {
		t.Errorf("with alice.pub next to alice.sec: %q, want the spool server's error", msg)
	}
	if msg := sync("--user-public-key", p("bob.pub")); !strings.Contains(msg, p("bob.pub")+" is not the public half of "+p("alice.sec")) {
		t.Errorf("with --user-public-key bob.pub: %q, want the mismatch named", msg)
	}
	if err := os.Remove(p("alice.pub")); err != nil {
		t.Fatal(err)
	}
	if msg := sync(); !strings.Contains(msg, "user.pub") {
		t.Errorf("without alice.pub: %q, want the default user.pub named", msg)
	}
}

// The notice for a secret key file without a passphrase says what a copy
// of that key gives: the user's key opens the mail; the spool's opens
// none, but signs deliveries every device trusts.
func TestUnprotectedKeyNotice(t *testing.T) {
	dir := t.TempDir()
	k := mustKey(t)
	sec := filepath.Join(dir, "k.sec")
	if err := keys.WriteFiles(k, sec, filepath.Join(dir, "k.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f         keyFlag
		want, not string
	}{
		{deviceUserKey, "can read the mail sealed to it, and this device's database", "sign deliveries"},
		{serverSpoolKey, "can sign deliveries that every device of this spool's users takes as this spool's (it opens no mail)", "read the mail"},
	} {
		var stderr bytes.Buffer
		e := &env{stdout: &bytes.Buffer{}, stderr: &stderr, getenv: func(string) string { return "" }}
		if _, err := c.f.loadSecret(&passphraseSource{e: e, file: new(string)}, sec, ""); err != nil {
			t.Fatal(err)
		}
		out := stderr.String()
		if !strings.Contains(out, "has no passphrase: anyone who copies it "+c.want) || strings.Contains(out, c.not) ||
			!strings.Contains(out, "cspool passphrase "+sec) {
			t.Errorf("%s: notice %q", c.f.flag, out)
		}
	}
}

// TestSpoolKeyPairAsUserKey: the spool's key pair given as the user's
// (--user-key spool.sec, its spool.pub beside it) with the right
// --spool-key was refused as "spool.pub holds the user's own public key"
// with the hint to pass spool.pub, which the operator had passed. The
// error now names both flags and the hint says either may be wrong.
func TestSpoolKeyPairAsUserKey(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "spool.sec"), filepath.Join(dir, "spool.pub")
	if err := keys.WriteFiles(mustKey(t), sec, pub, keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, getenv: func(string) string { return "" }}
	_, _, err := loadDeviceKeys(&passphraseSource{e: e, file: new(string)}, sec, pub, pub)
	var h *hintError
	if err == nil || !errors.As(err, &h) || !strings.Contains(err.Error(), "--user-key "+sec+" and --spool-key "+pub+" are one key pair") ||
		!strings.Contains(h.hint, "--user-key takes the user's secret key") {
		t.Fatalf("the spool's key pair as the user's: %v (hint %+v); want both flags named", err, h)
	}
}

// TestGenKeysMistakes: gen-keys with its file names in the wrong order
// wrote the secret key under the public name (the file a user sends to the
// operator) and the public one under the secret name, with no word; the
// same name twice got a hint about the folder; a work factor of 1 (no
// protection) was taken. Each is a usage error now, and nothing is written.
func TestGenKeysMistakes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"gen-keys", p("alice.pub"), p("alice.sec")}, "the secret key goes first"},
		{[]string{"gen-keys", p("k"), p("k")}, "give two file names"},
		// The same name twice with a key's suffix got the message of a
		// swap, which suggested the same two names again.
		{[]string{"gen-keys", p("k.sec"), p("k.sec")}, "give two file names"},
		{[]string{"gen-keys", p("k.pub"), p("k.pub")}, "give two file names"},
		// One name of the wrong kind: the swap it was told to make kept
		// a name of the wrong kind.
		{[]string{"gen-keys", p("a.sec"), p("b.sec")}, "run 'cspool gen-keys " + p("a.sec") + " " + p("b.pub") + "'"},
		{[]string{"gen-keys", p("a.pub"), p("b.pub")}, "run 'cspool gen-keys " + p("a.sec") + " " + p("b.pub") + "'"},
		{[]string{"gen-keys", "--passphrase", "--work-factor", "1", p("w.sec"), p("w.pub")}, "--work-factor 1: want 10 to 30"},
	} {
		var out bytes.Buffer
		e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
		if code := run(e, c.args); code != 2 || !strings.Contains(out.String(), c.want) {
			t.Errorf("cspool %v: exit %d, %q; want exit 2 saying %q", c.args, code, out.String(), c.want)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("files written: %v (%v)", entries, err)
	}
}

// TestPassphraseFileHints: a --passphrase-file that is missing, too open or
// a directory got the key file's hint ("copy user.sec from another of the
// user's devices"; for a missing one "--user-key: no such file"), though
// the key file was there and right. Each now gets the passphrase file's.
func TestPassphraseFileHints(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	pp := p("pp.txt")
	if err := os.WriteFile(pp, []byte("pass-phrase-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	if code := run(e, []string{"gen-keys", "--passphrase", "--new-passphrase-file", pp, "--work-factor", "10", p("user.sec"), p("user.pub")}); code != 0 {
		t.Fatalf("gen-keys: %d %s", code, out.String())
	}
	if err := os.WriteFile(p("open.txt"), []byte("pass-phrase-1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ file, want string }{
		{p("nothere.txt"), "--passphrase-file: no such file"},
		{p("open.txt"), "chmod 600"},
		{dir, "name a file whose first line is the password"},
		// The key file as its own passphrase file: its first line, the
		// comment gen-keys writes, is no passphrase.
		{p("user.sec"), "passphrase file " + p("user.sec") + " holds a file cspool wrote"},
	} {
		var stderr bytes.Buffer
		e := &env{stdout: &stderr, stderr: &stderr, getenv: func(string) string { return "" }}
		code := run(e, []string{"sync", "--user", "alice", "--db", p("mail.db"), "--spool-server", "http://127.0.0.1:1",
			"--user-key", p("user.sec"), "--passphrase-file", c.file, "--spool-key", p("user.pub")})
		msg := stderr.String()
		if code == 0 || !strings.Contains(msg, c.want) || strings.Contains(msg, "copy user.sec") || strings.Contains(msg, "--user-key: no such file") {
			t.Errorf("--passphrase-file %s: exit %d, %q; want the passphrase file's hint (%q)", c.file, code, msg, c.want)
		}
	}
}

// TestOutOfRangeFlags: a port or a timeout no one could mean was taken as
// given and failed later with a misleading hint ("stop the daemon already
// using it", "the daemon may be stuck", "may be delivered twice").
func TestOutOfRangeFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"imap-server", "--db", filepath.Join(dir, "m.db"), "--port", "-1"}, 2, "--port -1: want a port number"},
		{[]string{"status", "--db", filepath.Join(dir, "m.db"), "--timeout", "-1s"}, 2, "--timeout -1s: want a duration above 0"},
		{[]string{"deliver", "--user", "alice", "--spool-key", "x", "--timeout", "0s"}, 64, "--timeout 0s: want a duration above 0"},
	} {
		var out bytes.Buffer
		e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
		if code := run(e, c.args); code != c.code || !strings.Contains(out.String(), c.want) {
			t.Errorf("cspool %v: exit %d, %q; want %d saying %q", c.args, code, out.String(), c.code, c.want)
		}
	}
}
