package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
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

// maxKeyFile bounds how much of a file is read: key files are tiny.
const maxKeyFile = 64 << 10

// LoadSecret reads a secret key file. It refuses files holding a public key
// (ErrWrongKind, checked first), damaged keys, and files that group or others
// can read (ErrTooOpen); the error names the file.
func LoadSecret(path string) (*SecretKey, error) {
	line, info, err := readKeyLine(path)
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
	line, _, err := readKeyLine(path)
	if err != nil {
		return PublicKey{}, err
	}
	p, err := ParsePublic(line)
	if err != nil {
		return PublicKey{}, &FileError{path, err}
	}
	return p, nil
}

func readKeyLine(path string) (string, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, &FileError{path, unwrapPathError(err)}
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
	var key string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), maxKeyFile)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if key != "" {
			return "", nil, &FileError{path, fmt.Errorf("%w: more than one key line (line %d)", ErrMalformed, n)}
		}
		key = line
	}
	if err := sc.Err(); err != nil {
		return "", nil, &FileError{path, err}
	}
	if key == "" {
		return "", nil, &FileError{path, ErrNoKey}
	}
	return key, info, nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// WriteOptions control WriteFiles.
type WriteOptions struct {
	// Force allows replacing existing files.
	Force bool
	// Comment, if not empty, is written as a '#' line above each key.
	Comment string
	// Now is recorded in the comment line; zero means time.Now.
	Now time.Time
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
