package keys

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FileError names the key file a problem was found in.
type FileError struct {
	Path string
	Err  error
}

func (e *FileError) Error() string { return fmt.Sprintf("key file %s: %v", e.Path, e.Err) }
func (e *FileError) Unwrap() error { return e.Err }

// UsersFileError names the users file a problem was found in.
type UsersFileError struct {
	Path string
	Err  error
}

func (e *UsersFileError) Error() string { return fmt.Sprintf("users file %s: %v", e.Path, e.Err) }
func (e *UsersFileError) Unwrap() error { return e.Err }

// byteOrderMark is U+FEFF in UTF-8, which some editors write at the start
// of a file saved as "UTF-8 with BOM". Key and users files are ASCII; a
// mark would otherwise be read as part of the first line.
var byteOrderMark = []byte("\xef\xbb\xbf")

var errByteOrderMark = fmt.Errorf("%w: the file starts with a UTF-8 byte-order mark (U+FEFF, written by an editor saving \"UTF-8 with BOM\"); save it as plain UTF-8 or ASCII", ErrMalformed)

// maxKeyFile bounds how much of a file is read: key files are tiny.
const maxKeyFile = 64 << 10

// LoadSecret reads a secret key file. It refuses files holding a public key
// (ErrWrongKind, checked first), damaged keys, and files that group or others
// can read (ErrTooOpen); the error names the file. A passphrase-protected
// file is ErrNeedPassphrase: use LoadSecretWith.
func LoadSecret(path string) (*SecretKey, error) {
	f, err := LoadSecretWith(path, nil)
	return f.Key, err
}

// parseSecretFile parses an unprotected secret key file's text.
func parseSecretFile(path, text string, info fs.FileInfo) (*SecretKey, error) {
	line, err := keyLine(path, text)
	if err != nil {
		return nil, err
	}
	// The kind first: a public key passed where the secret one belongs is
	// a swap of two flags, and telling its owner to chmod it would only
	// mislead.
	k, err := ParseSecret(line)
	if err != nil {
		return nil, &FileError{path, err}
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, &FileError{path, fmt.Errorf("%w: permissions %04o (run: chmod 600 %s)", ErrTooOpen, perm, path)}
	}
	return k, nil
}

// LoadPublic reads a public key file (or a secret key file's public half is
// NOT accepted: pass the public file).
func LoadPublic(path string) (PublicKey, error) {
	text, _, err := readKeyFile(path)
	if err != nil {
		return PublicKey{}, err
	}
	if _, ok := armoredBlock(text); ok {
		return PublicKey{}, &FileError{path, fmt.Errorf("%w: found a passphrase-protected secret key, want a public key", ErrWrongKind)}
	}
	line, err := keyLine(path, text)
	if err != nil {
		return PublicKey{}, err
	}
	p, err := ParsePublic(line)
	if err != nil {
		return PublicKey{}, &FileError{path, err}
	}
	return p, nil
}

// keyLine returns the one key line of a key file's text, skipping blank
// lines and '#' comments.
func keyLine(path, text string) (string, error) {
	var key string
	first := 0
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if key != "" {
			// A file of another kind (a PEM TLS key, a configuration
			// file) has many lines too: say what it is, not that a key
			// is damaged, which sends its reader to a backup.
			if !strings.HasPrefix(strings.ToLower(key), "cspool-") {
				return "", &FileError{path, notCspoolKey(key, first)}
			}
			return "", &FileError{path, fmt.Errorf("%w: more than one key line (lines %d and %d)", ErrMalformed, first, n+1)}
		}
		key, first = line, n+1
	}
	if key == "" {
		return "", &FileError{path, ErrNoKey}
	}
	return key, nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// DanglingLinkError is a file named through a symbolic link whose target
// does not exist. It is fs.ErrNotExist too; its text says that the name
// is there and what it points to, since `ls` shows the name and "no such
// file" sent the reader after the wrong file.
type DanglingLinkError struct {
	// Target is the missing file the link leads to, as it names it,
	// joined with the link's folder when it is relative.
	Target string
}

func (e *DanglingLinkError) Error() string {
	return fmt.Sprintf("a symbolic link to %s, which does not exist", e.Target)
}

func (e *DanglingLinkError) Unwrap() error { return fs.ErrNotExist }

// openError is the error of opening path: a DanglingLinkError when path
// is a symbolic link whose target is missing, else the PathError's cause.
func openError(path string, err error) error {
	if !errors.Is(err, fs.ErrNotExist) {
		return unwrapPathError(err)
	}
	info, lerr := os.Lstat(path)
	if lerr != nil || info.Mode()&fs.ModeSymlink == 0 {
		return unwrapPathError(err)
	}
	// The last link of a chain is the one whose target is missing.
	target := path
	for range 40 {
		next, rerr := os.Readlink(target)
		if rerr != nil {
			break
		}
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(target), next)
		}
		target = next
		if li, lerr := os.Lstat(target); lerr != nil || li.Mode()&fs.ModeSymlink == 0 {
			break
		}
	}
	return &DanglingLinkError{Target: target}
}

// WriteOptions control WriteFiles.
type WriteOptions struct {
	// Force allows replacing existing files.
	Force bool
	// Comment, if not empty, is written as a '#' line above each key.
	Comment string
	// Now is recorded in the comment line; zero means time.Now.
	Now time.Time
	// Passphrase, if not empty, protects the secret key (Protect).
	Passphrase string
	// WorkFactor is the scrypt work factor for Passphrase (0:
	// DefaultWorkFactor).
	WorkFactor int
}

// ErrExists is returned when a key file exists and Force is not set.
var ErrExists = errors.New("file exists")

// WriteFiles writes the secret key to secretPath (mode 0600, created
// exclusively unless Force) and the public key to publicPath (mode 0644).
func WriteFiles(k *SecretKey, secretPath, publicPath string, o WriteOptions) error {
	if secretPath == publicPath {
		return fmt.Errorf("secret and public key files must differ (both %s)", secretPath)
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	header := func(kind string) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, "# cspool %s, created %s\n", kind, now.UTC().Format(time.RFC3339))
		if c := strings.TrimSpace(o.Comment); c != "" {
			for _, l := range strings.Split(c, "\n") {
				fmt.Fprintf(&b, "# %s\n", l)
			}
		}
		return b.Bytes()
	}
	if !o.Force {
		for _, p := range []string{secretPath, publicPath} {
			if _, err := os.Lstat(p); err == nil {
				return &FileError{p, fmt.Errorf("%w (use --force to replace it)", ErrExists)}
			}
		}
	}
	sec := append(header("secret key: keep it private"), k.String()+"\n"...)
	if o.Passphrase != "" {
		wf := o.WorkFactor
		if wf == 0 {
			wf = DefaultWorkFactor
		}
		block, err := Protect(k, o.Passphrase, wf)
		if err != nil {
			return &FileError{secretPath, err}
		}
		sec = append(header("secret key: keep it private"), fmt.Sprintf(protectedComment, wf)...)
		sec = append(sec, block...)
	}
	if err := writeFile(secretPath, sec, 0o600, o.Force); err != nil {
		return err
	}
	pub := append(header("public key"), k.Public().String()+"\n"...)
	if err := writeFile(publicPath, pub, 0o644, o.Force); err != nil {
		if !o.Force {
			// A secret key without its public half is a trap for the
			// next run ("file exists"); it was just made and sealed
			// nothing yet.
			_ = os.Remove(secretPath)
		}
		return err
	}
	return nil
}

func writeFile(path string, data []byte, perm os.FileMode, force bool) error {
	flag := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		// Replace atomically so a reader never sees a half-written key and a
		// previously wider mode is not inherited.
		tmp := path + ".tmp"
		_ = os.Remove(tmp)
		if err := writeFile(tmp, data, perm, false); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			_ = os.Remove(tmp)
			return &FileError{path, unwrapPathError(err)}
		}
		return nil
	}
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return &FileError{path, fmt.Errorf("%w (use --force to replace it)", ErrExists)}
		}
		return &FileError{path, unwrapPathError(err)}
	}
	if err := f.Chmod(perm); err != nil { // umask may have narrowed or kept bits
		f.Close()
		return &FileError{path, err}
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return &FileError{path, err}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return &FileError{path, err}
	}
	if err := f.Close(); err != nil {
		return &FileError{path, err}
	}
	return nil
}

// notCspoolKey is the error for a file whose first key line, at line n,
// is no cspool key of any kind: it says what the line looks like when it
// is a file often kept beside cspool's keys.
func notCspoolKey(line string, n int) error {
	if what := foreignKind(line); what != "" {
		return fmt.Errorf("%w: line %d holds %s; a cspool key file has one line starting with %q or %q", ErrUnknownFormat, n, what, SecretPrefix, PublicPrefix)
	}
	return fmt.Errorf("%w: line %d does not start with %q or %q", ErrUnknownFormat, n, SecretPrefix, PublicPrefix)
}

// foreignKind names the kind of file a line that is no cspool key comes
// from, when it is one of the files kept beside cspool's keys; "" if it
// is none of them. It never quotes the line: it may be a secret.
func foreignKind(line string) string {
	fields := strings.Fields(line)
	switch {
	case strings.HasPrefix(line, "-----BEGIN "):
		label := strings.TrimSuffix(strings.TrimPrefix(line, "-----BEGIN "), "-----")
		if len(label) > 40 || strings.ContainsAny(label, "-:") {
			label = "PEM"
		}
		return fmt.Sprintf("a PEM block (%s), as in a TLS key or certificate", label)
	case strings.HasPrefix(line, "AGE-SECRET-KEY-"):
		return "an age identity (age-keygen's secret key)"
	case strings.HasPrefix(line, "age1"):
		return "an age recipient (age's public key)"
	case strings.HasPrefix(line, "ssh-"), strings.HasPrefix(line, "ecdsa-sha2-"):
		return "an OpenSSH public key"
	case len(fields) == 2 && strings.HasPrefix(strings.ToLower(fields[1]), "cspool-"):
		return "a users file's line (NAME PUBLIC-KEY), not a key file"
	case isSetting(line):
		return "a setting (NAME = VALUE): a configuration file, not a key file"
	}
	return ""
}

// isSetting reports whether line is a configuration file's NAME = VALUE,
// NAME a long flag's name (lower-case letters, digits and dashes).
func isSetting(line string) bool {
	name, _, ok := strings.Cut(line, "=")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return false
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
