package keys

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func genFiles(t *testing.T) (dir, sec, pub string, k *SecretKey) {
	t.Helper()
	dir = t.TempDir()
	sec, pub = filepath.Join(dir, "user.sec"), filepath.Join(dir, "user.pub")
	k, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(k, sec, pub, WriteOptions{Comment: "alice's laptop"}); err != nil {
		t.Fatal(err)
	}
	return dir, sec, pub, k
}

func TestRoundTrip(t *testing.T) {
	_, sec, pub, k := genFiles(t)
	info, err := os.Stat(sec)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode = %04o, want 0600", info.Mode().Perm())
	}
	k2, err := LoadSecret(sec)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.Public().Equal(k.Public()) {
		t.Error("loaded secret key differs from the generated one")
	}
	p, err := LoadPublic(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Equal(k.Public()) {
		t.Error("loaded public key differs from the generated one")
	}
	if !strings.HasPrefix(p.String(), PublicPrefix) || !strings.HasPrefix(k.String(), SecretPrefix) {
		t.Errorf("unexpected prefixes: %q %q", p.String()[:16], k.String()[:16])
	}
	msg := []byte("hello")
	sig := k2.Sign(msg)
	if len(sig) != 64 {
		t.Fatalf("signature is %d bytes", len(sig))
	}
	// The derived halves are distinct keys.
	if bytes.Equal(p.X25519.Bytes(), p.Ed25519) {
		t.Error("X25519 and Ed25519 public keys are equal")
	}
}

func TestNoOverwrite(t *testing.T) {
	_, sec, pub, k := genFiles(t)
	before, _ := os.ReadFile(sec)
	err := WriteFiles(k, sec, pub, WriteOptions{})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), sec) {
		t.Fatalf("second write: got %v, want ErrExists naming %s", err, sec)
	}
	after, _ := os.ReadFile(sec)
	if !bytes.Equal(before, after) {
		t.Fatal("secret file changed without --force")
	}
	k2, _ := Generate(rand.Reader)
	if err := WriteFiles(k2, sec, pub, WriteOptions{Force: true}); err != nil {
		t.Fatalf("forced write: %v", err)
	}
	got, err := LoadSecret(sec)
	if err != nil || !got.Public().Equal(k2.Public()) {
		t.Fatalf("forced write did not replace the key: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir, sec, pub, _ := genFiles(t)
	secText, _ := os.ReadFile(sec)
	pubText, _ := os.ReadFile(pub)
	write := func(name string, data []byte, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyLine := func(b []byte) string {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "CSPOOL") || strings.HasPrefix(l, "cspool") {
				return l
			}
		}
		t.Fatal("no key line")
		return ""
	}
	sl := keyLine(secText)
	flipped := []byte(sl)
	i := len(SecretPrefix) + 5
	if flipped[i] == 'A' {
		flipped[i] = 'B'
	} else {
		flipped[i] = 'A'
	}
	tests := []struct {
		name   string
		path   string
		secret bool
		want   error
	}{
		{"missing", filepath.Join(dir, "nope.sec"), true, os.ErrNotExist},
		{"truncated", write("trunc.sec", []byte(sl[:len(sl)-6]+"\n"), 0o600), true, ErrMalformed},
		{"public as secret", write("pub-as.sec", pubText, 0o600), true, ErrWrongKind},
		{"secret as public", write("sec-as.pub", secText, 0o600), false, ErrWrongKind},
		// A public key file is world-readable as it should be: passed where
		// the secret key belongs, the kind is the problem, not the mode.
		{"readable public as secret", write("pub-as-open.sec", pubText, 0o644), true, ErrWrongKind},
		{"bad checksum", write("flip.sec", append(flipped, '\n'), 0o600), true, ErrBadChecksum},
		{"world readable", write("open.sec", secText, 0o644), true, ErrTooOpen},
		{"empty", write("empty.sec", []byte("# just a comment\n"), 0o600), true, ErrNoKey},
		{"garbage", write("garbage.pub", []byte("ssh-ed25519 AAAA\n"), 0o644), false, ErrUnknownFormat},
		{"future version", write("v9.pub", []byte("cspool-pub-9:AAAA\n"), 0o644), false, ErrUnknownFormat},
		{"two keys", write("two.pub", append(append([]byte{}, pubText...), pubText...), 0o644), false, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.secret {
				_, err = LoadSecret(tc.path)
			} else {
				_, err = LoadPublic(tc.path)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %q does not name the file %s", err, tc.path)
			}
		})
	}
}

func TestDeterministicDerivation(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	a, _ := NewSecretKey(seed)
	b, _ := NewSecretKey(seed)
	if a.String() != b.String() || !a.Public().Equal(b.Public()) {
		t.Fatal("same seed gave different keys")
	}
	if _, err := NewSecretKey(seed[:31]); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short seed: got %v", err)
	}
}

func TestParseUsers(t *testing.T) {
	k, _ := Generate(rand.Reader)
	k2, _ := Generate(rand.Reader)
	good := "# users\n\nalice " + k.Public().String() + "\n bob.smith  " + k2.Public().String() + "\n"
	u, err := ParseUsers(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(u) != 2 || !u["bob.smith"].Equal(k2.Public()) || !u["alice"].Equal(k.Public()) {
		t.Fatalf("got %v", u)
	}
	for _, bad := range []string{
		"alice\n",
		"al/ice " + k.Public().String() + "\n",
		"alice " + k.Public().String() + "\nalice " + k.Public().String() + "\n",
		"alice " + k.String() + "\n",
	} {
		if _, err := ParseUsers(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line ") {
			t.Errorf("ParseUsers(%q) = %v, want an error with a line number", bad[:10], err)
		}
	}
}

// TestUsersSharedKey: a users file that lists one public key for two users
// (alice's line copied for bob, the name changed and the key not) is
// refused, naming the file, both lines and both users. It was taken: bob's
// mail was then sealed to alice's key and alice's key could read bob's log
// through the API.
func TestUsersSharedKey(t *testing.T) {
	a, _ := Generate(rand.Reader)
	c, _ := Generate(rand.Reader)
	path := filepath.Join(t.TempDir(), "users")
	text := "alice " + a.Public().String() + "\ncarol " + c.Public().String() + "\n# bob, new\nbob " + a.Public().String() + "\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := LoadUsers(path)
	if !errors.Is(err, ErrSharedKey) {
		t.Fatalf("LoadUsers: %v, %d users: want ErrSharedKey", err, len(u))
	}
	for _, want := range []string{path, "line 4", `"bob"`, `"alice"`, "line 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %s", err, want)
		}
	}
}

// TestUsersCaseOnly: two users whose names differ only in case are
// refused. Postfix took alice@ and Alice@ in one message for one address
// and delivered one copy, to the first: the other user got none, without a
// bounce.
func TestUsersCaseOnly(t *testing.T) {
	a, _ := Generate(rand.Reader)
	b, _ := Generate(rand.Reader)
	_, err := ParseUsers(strings.NewReader("Alice " + a.Public().String() + "\nalice " + b.Public().String() + "\n"))
	if !errors.Is(err, ErrCaseOnly) {
		t.Fatalf("ParseUsers: %v, want ErrCaseOnly", err)
	}
	for _, want := range []string{"line 2", `"alice"`, `"Alice"`, "line 1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %s", err, want)
		}
	}
	for in, want := range map[string]string{"alice": "alice", "ALICE.Smith-1": "alice.smith-1", "AL\u0130CE": "al\u0130ce", "\u212Aim": "\u212Aim"} {
		if got := FoldCase(in); got != want {
			t.Errorf("FoldCase(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFileErrorsSayWhat: a key file or users file saved by an editor as
// "UTF-8 with BOM" is refused for the mark, not as "more than one key line"
// (the mark made the comment line a key line) or a name with a bad
// character; an error about a users file says "users file", not "key file".
func TestFileErrorsSayWhat(t *testing.T) {
	dir, sec, pub, k := genFiles(t)
	bom := func(path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append([]byte("\xef\xbb\xbf"), b...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	bom(sec)
	bom(pub)
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("\xef\xbb\xbfalice "+k.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errSec := LoadSecret(sec)
	_, errPub := LoadPublic(pub)
	_, errUsers := LoadUsers(users)
	for _, tc := range []struct {
		what string
		err  error
		want string
	}{
		{"secret key file", errSec, "key file " + sec + ": "},
		{"public key file", errPub, "key file " + pub + ": "},
		{"users file", errUsers, "users file " + users + ": "},
	} {
		if !errors.Is(tc.err, ErrMalformed) || !strings.HasPrefix(tc.err.Error(), tc.want) ||
			!strings.Contains(tc.err.Error(), "byte-order mark") || strings.Contains(tc.err.Error(), "more than one") {
			t.Errorf("%s starting with a byte-order mark: %v, want ErrMalformed starting %q and naming the byte-order mark", tc.what, tc.err, tc.want)
		}
	}
	// Any other users file error names the users file too.
	if err := os.WriteFile(users, []byte("alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUsers(users); err == nil || !strings.HasPrefix(err.Error(), "users file "+users+": line 1:") {
		t.Errorf("users file with a line of one field: %v, want an error starting \"users file %s: line 1:\"", err, users)
	}
	// Two key lines: both named.
	if err := os.WriteFile(pub, []byte(k.Public().String()+"\n# x\n"+k.Public().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPublic(pub); err == nil || !strings.Contains(err.Error(), "lines 1 and 3") {
		t.Errorf("key file with two key lines: %v, want both lines named", err)
	}
}

// TestUsersWritableByAll: a users file every user of the machine may write
// was taken, though whoever writes it gives any user a key of theirs and
// reads that user's mail from then on. It is refused now, naming the file
// and its mode; a group's write (0664, the operators' group) is taken.
func TestUsersWritableByAll(t *testing.T) {
	a, _ := Generate(rand.Reader)
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("alice "+a.Public().String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	_, err := LoadUsers(path)
	if !errors.Is(err, ErrWritableByAll) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "0666") {
		t.Errorf("LoadUsers of a users file of mode 0666: %v, want ErrWritableByAll naming the file and the mode", err)
	}
	for _, mode := range []os.FileMode{0o644, 0o664, 0o600} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if u, err := LoadUsers(path); err != nil || len(u) != 1 {
			t.Errorf("LoadUsers of a users file of mode %04o: %d users, %v", mode, len(u), err)
		}
	}
}

// TestUsersOwnedByAnother: a users file owned by an account other than
// root and the one reading it (nobody, here) was taken, though that
// account may change its mode and write it whenever it likes, giving any
// user a key of its own. It is refused now, as sshd refuses such an
// authorized_keys file, naming the file and its owner; one of root's is
// taken, of any mode LoadUsers takes (root:cspool 0640, as Debian's
// packages keep a service's secrets, and 0644).
func TestUsersOwnedByAnother(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("gives a file to another user: needs root")
	}
	a, _ := Generate(rand.Reader)
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte("alice "+a.Public().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var owned *OwnedByAnotherError
	_, err := LoadUsers(path)
	if !errors.As(err, &owned) || owned.Owner != 65534 || !strings.Contains(err.Error(), "users file "+path+": owned by ") ||
		!strings.Contains(err.Error(), "uid 65534") {
		t.Errorf("LoadUsers of a users file owned by uid 65534: %v, want OwnedByAnotherError naming the file and its owner", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o644} {
		if err := os.Chown(path, 0, 65534); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if u, err := LoadUsers(path); err != nil || len(u) != 1 {
			t.Errorf("LoadUsers of a users file of root's, mode %04o: %d users, %v", mode, len(u), err)
		}
	}
}

// TestUsersFileMixUps: what an operator pastes or an editor writes into a
// users file. A user's SECRET key pasted for the public one is refused as
// ErrSecretKeyListed, naming the line and the user and never printing the
// key (the error goes to the journal); it was refused as any wrong kind of
// key, with nothing said of the key now being exposed. A name in UTF-8 is
// refused for its character ('ü'), where the error named its first byte
// as a character ('Ã'). A name listed twice names both lines; only the
// second was named. A key file named for the users file (or a line of a
// key alone) says so; it said "found 1 fields". Line ends of CRLF, trailing blanks and capitals are
// taken, for what they are: the same lines.
func TestUsersFileMixUps(t *testing.T) {
	a, _ := Generate(rand.Reader)
	b, _ := Generate(rand.Reader)
	ap, bp := a.Public().String(), b.Public().String()
	for _, tc := range []struct {
		name, text string
		is         error
		want       []string
	}{
		{"secret key pasted", "# users\nalice " + a.String() + "\nbob " + bp + "\n", ErrSecretKeyListed, []string{"line 2", `"alice"`, "SECRET key"}},
		{"name in UTF-8", "j\u00fcrgen " + ap + "\n", ErrBadUserName, []string{"line 1", "'\u00fc'"}},
		{"a key file", "# cspool public key\n" + ap + "\n", nil, []string{"line 2", "a key without a user name", "a key file"}},
		{"name listed twice", "alice " + ap + "\nbob " + bp + "\nalice " + bp + "\n", nil, []string{"line 3", `"alice"`, "lines 1 and 3"}},
	} {
		_, err := ParseUsers(strings.NewReader(tc.text))
		if err == nil || tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: ParseUsers: %v, want %v", tc.name, err, tc.is)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %s", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), SecretPrefix) || strings.Contains(err.Error(), "\u00c3") {
			t.Errorf("%s: error %q prints a secret key or a byte as a character", tc.name, err)
		}
	}
	for _, text := range []string{
		"alice " + ap + "\r\nBob " + bp + "\r\n",
		"alice " + ap + " \n\tBob\t" + bp + "\t\n",
	} {
		u, lines, err := ParseUsersLines(strings.NewReader(text))
		if err != nil || len(u) != 2 || !u["alice"].Equal(a.Public()) || !u["Bob"].Equal(b.Public()) || lines["alice"] != 1 || lines["Bob"] != 2 {
			t.Errorf("ParseUsersLines(%q): %v, lines %v, %v; want alice on line 1 and Bob on line 2", text, u, lines, err)
		}
	}
}

// TestUsersFolderWritableByAll: a users file in a folder every user may
// write to (or below one, or named through a symbolic link that lies in
// one, or leading into one) was taken: whoever may write to the folder
// renames the file and puts their own in its place. It is refused, naming
// the folder; a sticky folder such as /tmp, where only a file's owner
// may rename it, is taken.
func TestUsersFolderWritableByAll(t *testing.T) {
	a, _ := Generate(rand.Reader)
	root := t.TempDir()
	private, open, sticky := filepath.Join(root, "private"), filepath.Join(root, "open"), filepath.Join(root, "sticky")
	for dir, mode := range map[string]os.FileMode{private: 0o755, open: 0o777, sticky: 0o777 | os.ModeSticky} {
		if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "sub", "users"), []byte("alice "+a.Public().String()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(name, target string) string {
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
		return name
	}
	for _, tc := range []struct {
		what, path, dir string
	}{
		{"below a folder every user may write to", filepath.Join(open, "sub", "users"), open},
		{"a link to a file there", link(filepath.Join(private, "to-open"), filepath.Join(open, "sub", "users")), open},
		{"a link there to a private file", link(filepath.Join(open, "users"), filepath.Join(private, "sub", "users")), open},
		{"in a private folder", filepath.Join(private, "sub", "users"), ""},
		{"in a sticky folder", filepath.Join(sticky, "sub", "users"), ""},
		{"a link to a private file", link(filepath.Join(private, "users"), filepath.Join(private, "sub", "users")), ""},
	} {
		u, err := LoadUsers(tc.path)
		if tc.dir == "" {
			if err != nil || len(u) != 1 {
				t.Errorf("%s: LoadUsers: %d users, %v; want alice", tc.what, len(u), err)
			}
			continue
		}
		var fe *FolderWritableByAllError
		if !errors.As(err, &fe) || fe.Dir != tc.dir || !errors.Is(err, ErrWritableByAll) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: LoadUsers: %v, want FolderWritableByAllError naming %s and the file", tc.what, err, tc.dir)
		}
	}
}

// TestForeignFileNamed: a file of another kind kept beside the keys (a PEM
// TLS key, an age identity, a configuration or users file) given as a key
// is "not a cspool key" saying what it holds, without quoting it. A PEM key
// and a configuration file were "malformed key: more than one key line",
// which the commands' hint read as a damaged key to restore from a backup.
func TestForeignFileNamed(t *testing.T) {
	dir := t.TempDir()
	k, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pem := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAbcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\n-----END PRIVATE KEY-----\n"
	tests := []struct {
		name, text, want, secretPart string
	}{
		{"tls.key", pem, "a PEM block (PRIVATE KEY)", "MC4CAQAw"},
		{"cert.pem", "-----BEGIN CERTIFICATE-----\nMIIBfz\n-----END CERTIFICATE-----\n", "a PEM block (CERTIFICATE)", "MIIBfz"},
		{"age.txt", "# created: 2026-12-08T00:00:00Z\n# public key: age1qqqq\nAGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQ\n", "an age identity", "QQQQQQQQ"},
		{"server.conf", "spool-dir = /var/lib/cspool\nspool-key = /etc/cspool/spool.sec\n", "a configuration file", "/var/lib"},
		{"users", "alice " + k.Public().String() + "\nbob " + k.Public().String() + "\n", "a users file's line", k.Public().String()},
	}
	for _, tc := range tests {
		path := filepath.Join(dir, tc.name)
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, serr := LoadSecret(path)
		_, perr := LoadPublic(path)
		for _, err := range []error{serr, perr} {
			if !errors.Is(err, ErrUnknownFormat) || errors.Is(err, ErrMalformed) {
				t.Errorf("%s: got %v, want %v and not %v", tc.name, err, ErrUnknownFormat, ErrMalformed)
				continue
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, path) {
				t.Errorf("%s: %q does not say %q and name the file", tc.name, msg, tc.want)
			}
			if strings.Contains(msg, tc.secretPart) {
				t.Errorf("%s: %q quotes the file", tc.name, msg)
			}
		}
	}
}
