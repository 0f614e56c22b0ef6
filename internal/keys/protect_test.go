package keys

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"filippo.io/age/armor"

	"cspool/internal/testproc"
)

// testWorkFactor keeps scrypt cheap in tests; one test uses the default.
const testWorkFactor = 10

func fixed(pp string) Passphrase {
	return func(string) (string, error) { return pp, nil }
}

func TestProtectedKeyFile(t *testing.T) {
	dir := t.TempDir()
	sec, pub := filepath.Join(dir, "user.sec"), filepath.Join(dir, "user.pub")
	k, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(k, sec, pub, WriteOptions{Comment: "laptop", Passphrase: "correct horse", WorkFactor: testWorkFactor}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(sec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), SecretPrefix) {
		t.Fatalf("protected file shows the key line:\n%s", raw)
	}
	if !strings.Contains(string(raw), "# laptop\n") || !strings.Contains(string(raw), "scrypt work factor 2^10") {
		t.Errorf("protected file lacks its comments:\n%s", raw)
	}

	f, err := LoadSecretWith(sec, fixed("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if !f.Protected || !f.Key.Public().Equal(k.Public()) {
		t.Fatalf("loaded protected=%v, same key=%v; want true, true", f.Protected, f.Key.Public().Equal(k.Public()))
	}

	for _, tc := range []struct {
		name string
		pass Passphrase
		want error
	}{
		{"no passphrase source", nil, ErrNeedPassphrase},
		{"wrong passphrase", fixed("correct horse "), ErrWrongPassphrase},
		{"empty passphrase", fixed(""), ErrWrongPassphrase},
	} {
		_, err := LoadSecretWith(sec, tc.pass)
		var fe *FileError
		if !errors.Is(err, tc.want) || !errors.As(err, &fe) || fe.Path != sec {
			t.Errorf("%s: got %v, want %v naming %s", tc.name, err, tc.want, sec)
		}
	}
	if _, err := LoadSecret(sec); !errors.Is(err, ErrNeedPassphrase) {
		t.Errorf("LoadSecret of a protected file: %v, want ErrNeedPassphrase", err)
	}
	if _, err := LoadPublic(sec); !errors.Is(err, ErrWrongKind) {
		t.Errorf("LoadPublic of a protected secret file: %v, want ErrWrongKind", err)
	}

	// A changed byte in the armored payload is refused, not misread.
	lines := strings.Split(string(raw), "\n")
	for i, l := range lines {
		if i > 0 && strings.HasPrefix(lines[i-1], "-----BEGIN") {
			b := []byte(l)
			b[10] ^= 1
			if b[10] == '+' || b[10] == '/' || b[10] == '=' {
				b[10] = 'A'
			}
			lines[i] = string(b)
		}
	}
	bad := filepath.Join(dir, "bad.sec")
	if err := os.WriteFile(bad, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecretWith(bad, fixed("correct horse")); err == nil {
		t.Error("a damaged protected key was accepted")
	}

	// Change the passphrase, then remove it.
	if err := RewriteSecret(sec, f.Key, "new one", testWorkFactor); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecretWith(sec, fixed("correct horse")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("old passphrase after a change: %v, want ErrWrongPassphrase", err)
	}
	if g, err := LoadSecretWith(sec, fixed("new one")); err != nil || !g.Key.Public().Equal(k.Public()) {
		t.Fatalf("new passphrase: %v", err)
	}
	if err := RewriteSecret(sec, f.Key, "", 0); err != nil {
		t.Fatal(err)
	}
	g, err := LoadSecretWith(sec, nil)
	if err != nil || g.Protected || !g.Key.Public().Equal(k.Public()) {
		t.Fatalf("after removing the passphrase: protected=%v err=%v", g.Protected, err)
	}
	raw, _ = os.ReadFile(sec)
	if strings.Count(string(raw), "# laptop\n") != 1 || strings.Contains(string(raw), "protected by") {
		t.Errorf("comments after two rewrites:\n%s", raw)
	}
	if info, _ := os.Stat(sec); info.Mode().Perm() != 0o600 {
		t.Errorf("mode after rewrite %04o, want 0600", info.Mode().Perm())
	}
}

// TestProtectedKeyDefaultWorkFactor: Protect without a work factor wraps
// the key with scrypt at 2^DefaultWorkFactor, and that is within what
// openProtected accepts. One scrypt at 2^18 takes about nine seconds under
// the race detector, so by default the test derives once (Protect) and
// reads the work factor from the age header; with CSPOOL_HEAVY=1 (CI) it
// also opens the block, a second derivation.
func TestProtectedKeyDefaultWorkFactor(t *testing.T) {
	if testing.Short() {
		t.Skip("scrypt at 2^18")
	}
	t.Parallel()
	if DefaultWorkFactor > maxWorkFactor {
		t.Fatalf("the default work factor %d is above the largest openProtected accepts, %d", DefaultWorkFactor, maxWorkFactor)
	}
	k, err := Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := Protect(k, "pass", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := scryptWorkFactor(t, block); got != DefaultWorkFactor {
		t.Fatalf("Protect without a work factor wrote scrypt at 2^%d, want 2^%d", got, DefaultWorkFactor)
	}
	if !testproc.Heavy() {
		return
	}
	got, err := openProtected(string(block), "pass")
	if err != nil || !got.Public().Equal(k.Public()) {
		t.Fatalf("open at the default work factor: %v", err)
	}
}

// scryptWorkFactor returns the work factor of the one scrypt stanza of an
// armored age file: its header's line "-> scrypt SALT LOG2N".
func scryptWorkFactor(t *testing.T, block []byte) int {
	t.Helper()
	hdr, err := io.ReadAll(io.LimitReader(armor.NewReader(bytes.NewReader(block)), 1024))
	if err != nil && len(hdr) == 0 {
		t.Fatalf("reading the armored block: %v", err)
	}
	lines := strings.Split(string(hdr), "\n")
	if len(lines) < 2 || lines[0] != "age-encryption.org/v1" {
		t.Fatalf("not an age header: %q", hdr)
	}
	f := strings.Fields(lines[1])
	if len(f) != 4 || f[0] != "->" || f[1] != "scrypt" {
		t.Fatalf("first stanza %q, want -> scrypt SALT LOG2N", lines[1])
	}
	n, err := strconv.Atoi(f[3])
	if err != nil {
		t.Fatalf("scrypt stanza %q: %v", lines[1], err)
	}
	if len(lines) > 3 && strings.HasPrefix(lines[3], "->") {
		t.Fatalf("more than one stanza: %q", hdr)
	}
	return n
}

func TestProtectedKeyTooOpen(t *testing.T) {
	dir := t.TempDir()
	sec := filepath.Join(dir, "user.sec")
	k, _ := Generate(rand.Reader)
	if err := WriteFiles(k, sec, filepath.Join(dir, "user.pub"), WriteOptions{Passphrase: "x", WorkFactor: testWorkFactor}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sec, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecretWith(sec, fixed("x")); !errors.Is(err, ErrTooOpen) {
		t.Errorf("world-readable protected key: %v, want ErrTooOpen", err)
	}
}
