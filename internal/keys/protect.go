package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// A secret key file may be protected by a passphrase: its key line is then
// the plaintext of an age file (age-encryption.org/v1) with a single scrypt
// recipient stanza, ASCII-armored, after the same optional '#' comment lines
// (docs/FORMAT.md §1, "Passphrase-protected secret keys"). age derives the
// file key's wrapping key with scrypt (N = 2^WorkFactor, r = 8, p = 1) over
// the passphrase and a random 16-byte salt, and encrypts the payload with
// ChaCha20-Poly1305 in 64 KiB chunks: a wrong passphrase or a changed byte
// fails authentication, and nothing of the key is shown without it.

// DefaultWorkFactor is the scrypt work factor (log2 N) written by default:
// about 1 s and 256 MiB on a current machine, once per start of a command.
const DefaultWorkFactor = 18

// maxWorkFactor bounds the work a key file can ask of its reader (age's own
// default: about 15 s).
const maxWorkFactor = 22

// maxKeyPlaintext bounds the decrypted payload: one key line.
const maxKeyPlaintext = 4096

// Errors of protected key files, wrapped in a FileError.
var (
	// ErrWrongPassphrase: the passphrase given does not open the file.
	ErrWrongPassphrase = errors.New("wrong passphrase")
	// ErrNeedPassphrase: the file is protected and no passphrase source
	// was given.
	ErrNeedPassphrase = errors.New("the key is protected by a passphrase")
)

// Passphrase returns the passphrase for the protected key file at path.
type Passphrase func(path string) (string, error)

// SecretFile is a secret key loaded from a file.
type SecretFile struct {
	Key *SecretKey
	// Protected reports whether the file is passphrase-protected.
	Protected bool
}

// LoadSecretWith reads a secret key file, protected or not; pass is asked
// for the passphrase only when the file is protected (nil: a protected file
// is ErrNeedPassphrase). The checks of LoadSecret apply to both.
func LoadSecretWith(path string, pass Passphrase) (SecretFile, error) {
	text, info, err := readKeyFile(path)
	if err != nil {
		return SecretFile{}, err
	}
	if block, ok := armoredBlock(text); ok {
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			return SecretFile{}, &FileError{path, fmt.Errorf("%w: permissions %04o (run: chmod 600 %s)", ErrTooOpen, perm, path)}
		}
		if pass == nil {
			return SecretFile{}, &FileError{path, ErrNeedPassphrase}
		}
		pp, err := pass(path)
		if err != nil {
			return SecretFile{}, &FileError{path, err}
		}
		k, err := openProtected(block, pp)
		if err != nil {
			return SecretFile{}, &FileError{path, err}
		}
		return SecretFile{Key: k, Protected: true}, nil
	}
	k, err := parseSecretFile(path, text, info)
	if err != nil {
		return SecretFile{}, err
	}
	return SecretFile{Key: k}, nil
}

// armoredBlock returns the age armor of a protected key file's text: from
// its BEGIN line on, after comment and blank lines only.
func armoredBlock(text string) (string, bool) {
	rest := text
	for rest != "" {
		line, next, _ := strings.Cut(rest, "\n")
		l := strings.TrimSpace(line)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
			rest = next
		case l == armor.Header:
			return rest, true
		default:
			return "", false
		}
	}
	return "", false
}

func openProtected(block, passphrase string) (*SecretKey, error) {
	if passphrase == "" {
		return nil, fmt.Errorf("%w: the passphrase is empty", ErrWrongPassphrase)
	}
	id, err := age.NewScryptIdentity(passphrase)
	if err != nil {
		return nil, err
	}
	id.SetMaxWorkFactor(maxWorkFactor)
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(block)), id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, ErrWrongPassphrase
		}
		return nil, fmt.Errorf("%w: protected key: %v", ErrMalformed, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxKeyPlaintext+1))
	if err != nil {
		return nil, fmt.Errorf("%w: protected key: %v", ErrMalformed, err)
	}
	if len(plain) > maxKeyPlaintext {
		return nil, fmt.Errorf("%w: protected key: payload over %d bytes", ErrMalformed, maxKeyPlaintext)
	}
	return ParseSecret(string(plain))
}

// Protect returns the armored age file that holds k's text form encrypted
// to passphrase with scrypt at 2^workFactor (DefaultWorkFactor if 0).
func Protect(k *SecretKey, passphrase string, workFactor int) ([]byte, error) {
	if passphrase == "" {
		return nil, errors.New("the new passphrase is empty")
	}
	if workFactor == 0 {
		workFactor = DefaultWorkFactor
	}
	if workFactor < 1 || workFactor > maxWorkFactor {
		return nil, fmt.Errorf("scrypt work factor %d: want 1 to %d", workFactor, maxWorkFactor)
	}
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		return nil, err
	}
	r.SetWorkFactor(workFactor)
	var buf bytes.Buffer
	a := armor.NewWriter(&buf)
	w, err := age.Encrypt(a, r)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(w, k.String()+"\n"); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if err := a.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// protectedComment is the comment line written above a protected key; a
// rewrite replaces it.
const protectedComment = "# protected by a passphrase (age, scrypt work factor 2^%d): cspool passphrase FILE changes or removes it\n"

// RewriteSecret replaces the secret key file at path with k, protected by
// passphrase ("" writes it unprotected), keeping the file's other comment
// lines. The file is replaced atomically (mode 0600) and synced.
func RewriteSecret(path string, k *SecretKey, passphrase string, workFactor int) error {
	text, _, err := readKeyFile(path)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	for _, line := range strings.Split(text, "\n") {
		l := strings.TrimSpace(line)
		if !strings.HasPrefix(l, "#") || strings.HasPrefix(l, "# protected by a passphrase") {
			continue
		}
		out.WriteString(l + "\n")
	}
	if passphrase == "" {
		out.WriteString(k.String() + "\n")
	} else {
		if workFactor == 0 {
			workFactor = DefaultWorkFactor
		}
		block, err := Protect(k, passphrase, workFactor)
		if err != nil {
			return &FileError{path, err}
		}
		fmt.Fprintf(&out, protectedComment, workFactor)
		out.Write(block)
	}
	return writeFile(path, out.Bytes(), 0o600, true)
}

// readKeyFile reads a whole key file, within maxKeyFile.
func readKeyFile(path string) (string, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, &FileError{path, openError(path, err)}
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", nil, &FileError{path, unwrapPathError(err)}
	}
	if !info.Mode().IsRegular() {
		return "", nil, &FileError{path, errors.New("not a regular file")}
	}
	if info.Size() > maxKeyFile {
		return "", nil, &FileError{path, fmt.Errorf("%w: file is %d bytes, too large for a key file", ErrUnknownFormat, info.Size())}
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return "", nil, &FileError{path, err}
	}
	if bytes.HasPrefix(b, byteOrderMark) {
		return "", nil, &FileError{path, errByteOrderMark}
	}
	return string(b), info, nil
}
