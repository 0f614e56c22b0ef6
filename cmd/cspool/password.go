package main

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"cspool/internal/keys"
)

// passwordEnv is the environment variable that may hold the IMAP password:
// unlike a command-line argument, a process's environment is readable by
// its own user only (/proc/PID/environ).
const passwordEnv = "CSPOOL_IMAP_PASSWORD"

// imapPassword is the daemon's IMAP password and where it came from.
type imapPassword struct {
	value string
	// file holds the password, as an absolute path: --password-file or
	// DB.password ("" when it came from --password or the environment).
	file      string
	generated bool // made now and stored in file
	explicit  bool // given with --password, maybe empty (which allows an empty one)
}

// passwordFlags are imap-server's ways to be given its password.
type passwordFlags struct {
	password, file *string
}

func addPasswordFlags(fs *flagSet) *passwordFlags {
	return &passwordFlags{
		password: fs.String("password", "", "IMAP `password`; every local user can read it in the process list, so prefer --password-file or $"+passwordEnv+" (default: generated, stored in DB.password)"),
		file:     fs.String("password-file", "", "read the IMAP password from this `file` (its first line; the file must be open to its owner only)"),
	}
}

// resolve picks the IMAP password: --password-file, else --password (with
// a warning when it is on the command line), else $CSPOOL_IMAP_PASSWORD,
// else the one kept beside the database at dbPath (generated on first
// start).
func (p *passwordFlags) resolve(e *env, fs *flagSet, dbPath string, log *slog.Logger) (imapPassword, error) {
	fromFlag, fromFile := flagGiven(fs, "password"), flagGiven(fs, "password-file")
	switch {
	case fromFlag && fromFile:
		return imapPassword{}, usagef("give the IMAP password one way: --password or --password-file, not both")
	case fromFile:
		abs, err := filepath.Abs(*p.file)
		if err != nil {
			return imapPassword{}, fmt.Errorf("--password-file: %w", err)
		}
		pw, err := readSecretFile(abs, "password file")
		if err != nil {
			// A file the configuration names: fix it (77).
			return imapPassword{}, &exitError{err, exNoPerm}
		}
		return imapPassword{value: pw, file: abs}, nil
	case fromFlag:
		if fs.cmdline["password"] && *p.password != "" {
			log.Warn("--password on the command line can be read by every user of this machine (ps, /proc/PID/cmdline); "+
				"use --password-file FILE or the environment variable "+passwordEnv+" instead", "flag", "password")
		}
		return imapPassword{value: *p.password, explicit: true}, nil
	}
	if pw := e.getenv(passwordEnv); pw != "" {
		return imapPassword{value: pw}, nil
	}
	return storedPassword(dbPath)
}

// storedPassword returns the password kept beside the database, or makes
// one and keeps it there (mode 0600).
func storedPassword(dbPath string) (imapPassword, error) {
	path, err := filepath.Abs(dbPath + ".password")
	if err != nil {
		return imapPassword{}, fmt.Errorf("password file: %w", err)
	}
	pw, err := readStoredPassword(path)
	if err == nil {
		return imapPassword{value: pw, file: path}, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return imapPassword{}, err
	}
	raw := make([]byte, 15)
	if _, err := rand.Read(raw); err != nil {
		return imapPassword{}, err
	}
	pw = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		// The first file made next to --db: its folder is missing or
		// not writable.
		return imapPassword{}, withHint(fmt.Errorf("storing the generated password: %w", err),
			fmt.Sprintf("--db names a file in %s: check that the folder exists and that this user may write to it (the database and its password file are made there)", filepath.Dir(path)))
	}
	_, werr := f.WriteString(pw + "\n")
	if err := errors.Join(werr, f.Close()); err != nil {
		return imapPassword{}, fmt.Errorf("storing the generated password: %w", err)
	}
	return imapPassword{value: pw, file: path, generated: true}, nil
}

// readStoredPassword reads DB.password, which the daemon made itself: a
// regular file of this user's, reached without following a symbolic link.
// Another local user who can write to the database's folder could
// otherwise plant a link there to a file of this user's whose first line
// is known (the users file beside a quickstart's keys, ~/.lesshst), and
// the daemon would take that line for its password. A missing file is an
// error wrapping os.ErrNotExist.
func readStoredPassword(path string) (string, error) {
	const what = "password file"
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		target, _ := os.Readlink(path)
		return "", withHint(fmt.Errorf("%s %s is a symbolic link (to %s), not the file the daemon made: "+
			"someone who can write to %s may have put it there", what, path, target, filepath.Dir(path)),
			"remove it (a new password is generated at the next start), and keep other users from writing to that folder")
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	switch {
	case !info.Mode().IsRegular():
		return "", withHint(fmt.Errorf("%s %s is not a regular file, not the file the daemon made", what, path),
			"remove it (a new password is generated at the next start), and keep other users from writing to its folder")
	case ok && int(st.Uid) != os.Geteuid():
		return "", withHint(fmt.Errorf("%s %s is owned by %s, not by this user (%s): the daemon did not make it",
			what, path, userName(int(st.Uid)), userName(os.Geteuid())),
			"remove it (a new password is generated at the next start), and keep other users from writing to its folder")
	}
	if err := checkPrivateMode(path, what, info); err != nil {
		return "", err
	}
	return readFirstLine(f, path, what)
}

// readSecretFile reads the first line of a file that holds a secret,
// refusing one that users other than its owner may open. A missing file is
// an error wrapping os.ErrNotExist.
func readSecretFile(path, what string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", what, err)
	}
	if err := checkSecretKind(path, what, info); err != nil {
		return "", err
	}
	if err := checkPrivateMode(path, what, info); err != nil {
		return "", err
	}
	return readFirstLine(f, path, what)
}

// readFirstLine returns the first line of f, a file holding a secret,
// which must not be blank.
func readFirstLine(f *os.File, path, what string) (string, error) {
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("reading %s %s: %w", what, path, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", withHint(fmt.Errorf("%s %s is empty", what, path), "write the password on its first line (for DB.password: remove the file and a new password is generated)")
	}
	if err := notKeyFile(path, what, line); err != nil {
		return "", err
	}
	return line, nil
}

// notKeyFile refuses a password file whose first line is a key file's: a
// key file of mode 0600 given as the password file (a setting mixed up)
// made its first line the password, which is the comment gen-keys writes,
// "# cspool secret key: keep it private, created TIME", guessable from
// the time alone, or, in a key file without it, the secret key itself,
// then typed into mail clients or sent to the smarthost. Nothing of the
// line is shown.
func notKeyFile(path, what, line string) error {
	kind := ""
	switch {
	case strings.HasPrefix(line, keys.SecretPrefix):
		kind = "a cspool secret key"
	case strings.HasPrefix(line, keys.PublicPrefix):
		kind = "a cspool public key"
	case strings.HasPrefix(line, "# cspool "):
		kind = "a file cspool wrote (a key file or a users file: its first line is cspool's comment)"
	case strings.HasPrefix(line, "-----BEGIN "):
		kind = "a PEM block (a passphrase-protected key, a TLS key or certificate)"
	default:
		return nil
	}
	return withHint(fmt.Errorf("%s %s holds %s, not a password: its first line would be the password", what, path, kind),
		"name the file whose first line is the password (mode 0600); a key file is never one")
}

// checkSecretKind refuses what cannot hold a secret: a directory, a device
// (/dev/null would read as an empty password, and a terminal would wait),
// a socket. A regular file and a pipe, as from a shell's <(command), pass.
func checkSecretKind(path, what string, info os.FileInfo) error {
	m := info.Mode()
	if m.IsRegular() || m&os.ModeNamedPipe != 0 {
		return nil
	}
	kind := "not a regular file"
	switch {
	case m.IsDir():
		kind = "a directory"
	case m&os.ModeDevice != 0:
		kind = "a device"
	case m&os.ModeSocket != 0:
		kind = "a socket"
	}
	return withHint(fmt.Errorf("%s %s is %s, not a file that holds a password", what, path, kind),
		"name a file whose first line is the password (mode 0600)")
}

// checkPrivateMode refuses a file holding a secret that users other than
// its owner may open.
func checkPrivateMode(path, what string, info os.FileInfo) error {
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return withHint(fmt.Errorf("%s %s holds a password and is open to other users (mode %04o)", what, path, perm),
			"run: chmod 600 "+shellQuote(path))
	}
	return nil
}
