package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/userdb"
)

// deliverSetup is a spool directory and key files for cspool deliver.
type deliverSetup struct {
	dir, spoolDir        string
	userSec              *keys.SecretKey
	spoolSec             *keys.SecretKey
	userPub, spoolSecKey string // file names
	usersFile            string
}

func newDeliverSetup(t *testing.T) *deliverSetup {
	t.Helper()
	dir := t.TempDir()
	s := &deliverSetup{dir: dir, spoolDir: filepath.Join(dir, "spool")}
	var err error
	if s.userSec, err = keys.Generate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if s.spoolSec, err = keys.Generate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	s.userPub = filepath.Join(dir, "alice.pub")
	s.spoolSecKey = filepath.Join(dir, "spool.sec")
	if err := keys.WriteFiles(s.userSec, filepath.Join(dir, "alice.sec"), s.userPub, keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(s.spoolSec, s.spoolSecKey, filepath.Join(dir, "spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	s.usersFile = filepath.Join(dir, "users")
	if err := os.WriteFile(s.usersFile, []byte("# users\nalice "+s.userSec.Public().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.spoolDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A spool in test mode, where alice registered her key.
	reg := filepath.Join(s.spoolDir, userdb.TestUsersFile)
	if err := os.WriteFile(reg, []byte("alice "+s.userSec.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// bodies opens every entry of alice's log in dir with her key.
func (s *deliverSetup) bodies(t *testing.T) [][]byte {
	t.Helper()
	st, err := sqlitestore.Open(s.spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	es, err := st.Read(context.Background(), "alice", 0, 1000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for i, e := range es {
		if e.Pos != uint64(i+1) {
			t.Fatalf("entry %d at position %d, want dense positions", i, e.Pos)
		}
		o, err := entry.Open(e.Data, s.userSec, "alice", s.spoolSec.Public())
		if err != nil {
			t.Fatalf("opening entry %d: %v", e.Pos, err)
		}
		if o.Cmd.Kind != command.Deliver {
			t.Fatalf("entry %d is %v, want Deliver", e.Pos, o.Cmd.Kind)
		}
		out = append(out, o.Cmd.Body)
	}
	return out
}

func TestDeliverCommand(t *testing.T) {
	t.Parallel()
	bin := buildServerBinary(t)
	s := newDeliverSetup(t)
	msg := []byte("Subject: caf\xc3\xa9\n\nbare LF\nNUL\x00 and \xff\r\n.\r\n")
	big := bytes.Repeat([]byte("x"), 2000)
	unixForm := append([]byte("Subject: piped\n\n"), bytes.Repeat([]byte("0123456789\n"), 89)...)
	unixForm = append(unixForm, "abcde"...) // 1,000 bytes, the last line without its end
	tooOpen := filepath.Join(s.dir, "open.sec")
	b, _ := os.ReadFile(s.spoolSecKey)
	if err := os.WriteFile(tooOpen, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// base gives the flags of a good delivery, less those extra gives
	// itself: a flag given twice with two values is refused.
	base := func(extra ...string) []string {
		args := []string{"deliver"}
		for _, f := range [][2]string{{"--user", "alice"}, {"--user-key", s.userPub}, {"--spool-key", s.spoolSecKey}, {"--spool-dir", s.spoolDir}} {
			if !slices.Contains(extra, f[0]) {
				args = append(args, f[0], f[1])
			}
		}
		return append(args, extra...)
	}
	plainSpool := filepath.Join(s.dir, "users-file-spool") // its server reads a users file
	if err := os.Mkdir(plainSpool, 0o700); err != nil {
		t.Fatal(err)
	}
	otherPub := filepath.Join(s.dir, "other.pub")
	if err := keys.WriteFiles(mustKey(t), filepath.Join(s.dir, "other.sec"), otherPub, keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		args       []string
		stdin      []byte
		wantCode   int
		wantStderr string // substring
		wantStdout string // substring
		delivered  bool
	}{
		{"deliver", base(), msg, 0, "", "at log position 1", true},
		{"users file, quiet", []string{"deliver", "--user", "alice", "--users", s.usersFile, "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir, "--quiet"}, msg, 0, "", "", true},
		{"empty message", base(), nil, 0, "", "at log position 3", true},
		{"missing spool key file", []string{"deliver", "--user", "alice", "--user-key", s.userPub, "--spool-key", filepath.Join(s.dir, "nope.sec"), "--spool-dir", s.spoolDir}, msg, 77, "nope.sec", "", false},
		{"missing user key file", []string{"deliver", "--user", "alice", "--user-key", filepath.Join(s.dir, "nope.pub"), "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir}, msg, 77, "nope.pub", "", false},
		{"spool key too open", []string{"deliver", "--user", "alice", "--user-key", s.userPub, "--spool-key", tooOpen, "--spool-dir", s.spoolDir}, msg, 77, "open.sec", "", false},
		{"public key as spool key", []string{"deliver", "--user", "alice", "--user-key", s.userPub, "--spool-key", s.userPub, "--spool-dir", s.spoolDir}, msg, 77, "alice.pub", "", false},
		{"unknown user in users file", []string{"deliver", "--user", "bob", "--users", s.usersFile, "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir}, msg, 67, "the users file (--users) has no such user", "", false},
		{"invalid user name", []string{"deliver", "--user", "../etc", "--user-key", s.userPub, "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir}, msg, 67, "invalid user name", "", false},
		{"too large", base("--max-size", "1000"), big, 65, "larger than 1000 bytes", "", false},
		// In Unix form, stored with CRLF line ends; --max-size counts
		// the message as read.
		{"unix form at --max-size", base("--max-size", "1000"), unixForm, 0, "", "at log position 4", true},
		{"another key than the registered one", []string{"deliver", "--user", "alice", "--user-key", otherPub, "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir}, msg, 65, "registered to another key", "", false},
		{"a name nobody registered, test mode", []string{"deliver", "--user", "carol", "--user-key", otherPub, "--spool-key", s.spoolSecKey, "--spool-dir", s.spoolDir}, msg, 0, "", "to carol at log position 1", false},
		{"--user-key into a spool not in test mode", base("--spool-dir", plainSpool), msg, 64, "not a spool in test mode", "", false},
		{"--user-key into PostgreSQL", base("--store", "postgres", "--dsn", "postgres://127.0.0.1:1/none"), msg, 64, "PostgreSQL", "", false},
		{"missing --user", []string{"deliver", "--user-key", s.userPub, "--spool-key", s.spoolSecKey}, msg, 64, "--user is required", "", false},
		{"unknown flag", base("--frobnicate"), msg, 64, "frobnicate", "", false},
		{"both key sources", base("--users", s.usersFile), msg, 64, "exactly one", "", false},
		{"no spool dir", base("--spool-dir", filepath.Join(s.dir, "typo")), msg, 73, "typo", "", false},
		{"server unreachable", base("--spool-server", "http://127.0.0.1:1", "--timeout", "10s"), msg, 75, "127.0.0.1:1", "", false},
		{"bad server URL", base("--spool-server", "ftp://x"), msg, 64, "spool-server", "", false},
	}
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(plainSpool, sqlitestore.DBName)); err == nil {
			t.Errorf("a refused delivery created a spool database in %s", plainSpool)
		}
	})
	want := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			cmd.Stdin = bytes.NewReader(c.stdin)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var xe *exec.ExitError
			if errors.As(err, &xe) {
				code = xe.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.wantCode {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, c.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.wantStderr) {
				t.Errorf("stderr %q does not mention %q", stderr.String(), c.wantStderr)
			}
			if !strings.Contains(stdout.String(), c.wantStdout) || (c.wantStdout == "" && stdout.Len() > 0) {
				t.Errorf("stdout %q, want %q", stdout.String(), c.wantStdout)
			}
			if c.delivered {
				want++
			}
			got := s.bodies(t)
			if len(got) != want {
				t.Fatalf("log has %d entries, want %d", len(got), want)
			}
			stored := c.stdin
			if bytes.Equal(c.stdin, unixForm) {
				stored = bytes.ReplaceAll(unixForm, []byte("\n"), []byte("\r\n"))
			}
			if c.delivered && !bytes.Equal(got[len(got)-1], stored) {
				t.Errorf("stored %q, want %q", got[len(got)-1], stored)
			}
		})
	}
}

// oneUser knows one user and that user's key.
type oneUser struct {
	name string
	key  keys.PublicKey
}

func (u oneUser) Check(ctx context.Context, user string, key keys.PublicKey) error {
	return u.Authorize(ctx, user, key)
}

func (u oneUser) Authorize(_ context.Context, user string, key keys.PublicKey) error {
	if user != u.name || !key.Equal(u.key) {
		return fmt.Errorf("key for %q: %w", user, userdb.ErrUnknownKey)
	}
	return nil
}

func (u oneUser) Lookup(_ context.Context, user string) (keys.PublicKey, error) {
	if user != u.name {
		return keys.PublicKey{}, fmt.Errorf("looking up %q: %w", user, keys.ErrUnknownUser)
	}
	return u.key, nil
}

func TestDeliverCommandThroughServer(t *testing.T) {
	t.Parallel()
	bin := buildServerBinary(t)
	s := newDeliverSetup(t)
	st, err := sqlitestore.Open(s.spoolDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	other, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// With --spool-key and --user-key swapped (the user's secret key
	// given as the spool's, the spool's public key as the user's), deliver
	// signed its request with the user's own key, which the server took
	// for one of the user's appends: exit 0, and a message sealed to the
	// spool's public key in the user's log, which no device of the user
	// could open. Now the delivery says it is one, the server refuses it
	// unless the spool key signed it, and deliver exits 78 naming the swap.
	for _, c := range []struct {
		name              string
		spoolKey          keys.PublicKey
		userKey, spoolSec string // the files given to deliver
		wantCode          int
		wantHead          uint64
		wantOut           string
	}{
		{"accepted spool key", s.spoolSec.Public(), s.userPub, s.spoolSecKey, 0, 1, ""},
		{"another spool key", other.Public(), s.userPub, s.spoolSecKey, 77, 1, ""},
		{"keys swapped", s.spoolSec.Public(), filepath.Join(s.dir, "spool.pub"), filepath.Join(s.dir, "alice.sec"), 78, 1, "swapped"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := api.NewServer(api.Config{Store: st, Users: oneUser{"alice", s.userSec.Public()}, SpoolKey: c.spoolKey})
			defer srv.Shutdown()
			hs := httptest.NewServer(srv)
			defer hs.Close()
			cmd := exec.Command(bin, "deliver", "--user", "alice", "--user-key", c.userKey, "--spool-key", c.spoolSec, "--spool-server", hs.URL, "--timeout", "30s")
			cmd.Stdin = strings.NewReader("Subject: over http\r\n\r\nhi\r\n")
			out, err := cmd.CombinedOutput()
			code := 0
			var xe *exec.ExitError
			if errors.As(err, &xe) {
				code = xe.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != c.wantCode || !strings.Contains(string(out), c.wantOut) {
				t.Errorf("exit status %d, want %d saying %q; output:\n%s", code, c.wantCode, c.wantOut, out)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if h, err := st.Head(ctx, "alice"); err != nil || h != c.wantHead {
				t.Errorf("head %d (%v), want %d", h, err, c.wantHead)
			}
		})
	}
	if got := s.bodies(t); len(got) != 1 || string(got[0]) != "Subject: over http\r\n\r\nhi\r\n" {
		t.Errorf("log holds %q, want the one message", got)
	}
}

// A --spool-dir that does not exist (a mistyped path) was refused with the
// hint to create it with mkdir, which, followed, took the mail into a new,
// empty spool that no server reads, and exited 0. Now the hint points at
// the server's directory only.
func TestDeliverMissingSpoolDirHint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spol")
	_, err := openSpoolDir(dir)
	var h *hintError
	if err == nil || !errors.As(err, &h) {
		t.Fatalf("a missing --spool-dir: %v, want an error with a hint", err)
	}
	if strings.Contains(h.hint, "mkdir") || !strings.Contains(h.hint, "--spool-dir") {
		t.Errorf("a missing --spool-dir: hint %q, want the server's directory and no mkdir", h.hint)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s made: %v", dir, err)
	}
}

// A recipient missing from the --users file, with --spool-server given
// too, got the hint that the server has no such user: the lookup was in
// the local users file, which may be an old copy of the server's. The hint
// now names the file; the server's own 404 still names the server.
func TestDeliverUnknownUserHintNamesTheSource(t *testing.T) {
	local := fmt.Errorf("delivering to alice: looking up %q: %w", "alice", keys.ErrUnknownUser)
	remote := fmt.Errorf("delivering to carol: %w", &api.Error{Op: "appending", Status: 404, Kind: api.ErrNotFound, Err: keys.ErrUnknownUser})
	for _, c := range []struct {
		name      string
		err       error
		server    string
		usersFile string
		want, not string
	}{
		{"users file, with a server", local, "https://spool.example.org", "/etc/cspool/users", "add the user to /etc/cspool/users", "the server at"},
		{"users file alone", local, "", "/etc/cspool/users", "add the user to /etc/cspool/users", "the server at"},
		{"the server's answer", remote, "https://spool.example.org", "/etc/cspool/users", "the server at https://spool.example.org", "the users file"},
	} {
		err := deliverFailure(c.err, c.server, c.usersFile)
		var h *hintError
		if !errors.As(err, &h) || !strings.Contains(h.hint, c.want) || strings.Contains(h.hint, c.not) {
			t.Errorf("%s: %v (hint %+v), want a hint with %q and without %q", c.name, err, h, c.want, c.not)
		}
		var x *exitError
		if !errors.As(err, &x) || x.code != exNoUser {
			t.Errorf("%s: %v, want exit %d", c.name, err, exNoUser)
		}
	}
}

// A users file every user may write is refused with exit 77 and the hint
// to chmod it (docs/DELIVERY.md: "too open"); it was taken.
func TestDeliverUsersFileWritableByAll(t *testing.T) {
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("alice "+k.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	_, _, err = loadDirectory("alice", "", path, "spool.sec")
	var x *exitError
	var h *hintError
	if !errors.As(err, &x) || x.code != exNoPerm || !errors.As(err, &h) || !strings.Contains(h.hint, "chmod 644 "+path) {
		t.Errorf("a users file of mode 0666: %v (hint %+v), want exit %d and chmod 644", err, h, exNoPerm)
	}
}
