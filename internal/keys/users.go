package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

// ErrBadUserName is returned for a user name outside the allowed set.
var ErrBadUserName = errors.New("invalid user name")

// Who may act for which user: the server's users database (package userdb)
// says it, and the API and delivery answer with it, so each is defined here
// once and every side tests it with errors.Is.
var (
	// ErrUnknownUser: no key is known for the name. Permanent: HTTP 404
	// with Cspool-Unknown-User, LMTP 550 5.1.1, cspool deliver's exit 67.
	ErrUnknownUser = errors.New("unknown user")
	// ErrForbidden: the key belongs to a different user than the one
	// named (HTTP 403).
	ErrForbidden = errors.New("key belongs to another user")
)

// CheckUserName reports whether name may name a user: 1 to 64 bytes of
// ASCII letters, digits and ". _ + -", not starting with '.' or '-'. The same
// rule applies everywhere (users file, LMTP local parts, API paths), so a
// name is never escaped or re-encoded anywhere.
func CheckUserName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w %q: must be 1 to 64 characters", ErrBadUserName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '+' || c == '-'
		if !ok {
			// The character, not its first byte: "jürgen" is refused
			// for 'ü', which 'Ã' (0xC3 taken for a character) is not.
			r, _ := utf8.DecodeRuneInString(name[i:])
			if r == utf8.RuneError {
				return fmt.Errorf("%w %q: byte %#02x not allowed (not UTF-8)", ErrBadUserName, name, c)
			}
			return fmt.Errorf("%w %q: character %q not allowed", ErrBadUserName, name, r)
		}
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("%w %q: must not start with %q", ErrBadUserName, name, name[0])
	}
	return nil
}

// FoldCase is name with its ASCII capitals in lower case, and nothing else
// changed. User names are ASCII (CheckUserName); strings.ToLower also maps
// letters outside it onto ASCII ones (U+0130 to "i", the Kelvin sign to
// "k"), so that an address no user has reached a user by a look-alike.
func FoldCase(name string) string {
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			b := []byte(name)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return name
}

// Users maps user names to public keys.
type Users map[string]PublicKey

// ErrSharedKey: a users file lists one public key for two users. Whoever
// holds its secret key could read and write both logs, and the mail
// delivered to either is sealed to it: a line copied and renamed without
// its key, which would hand one user the other's mail.
var ErrSharedKey = errors.New("every user needs a key pair of its own (cspool gen-keys); with one key for both, either user could read the other's mail")

// ErrCaseOnly: a users file lists two names that differ only in case.
// Mail servers take addresses that differ only in case for one: Postfix
// delivered one copy of a message sent to both, to the first, so the other
// user got none, and the LMTP listener folds case to find a user.
var ErrCaseOnly = errors.New("mail servers take addresses that differ only in case for one address, so one of the two would not get its mail: rename one")

// ErrSecretKeyListed: a users file gives a user a secret key (its line
// holds "CSPOOL-SECRET-KEY-1:..."). The key is no longer secret: whoever
// has read the file, or the mail or chat it came through, reads that
// user's mail.
var ErrSecretKeyListed = errors.New("its line holds a SECRET key, which must never leave the user's devices")

// Lines gives the line of a users file each user is listed on.
type Lines map[string]int

// ParseUsers reads a users file: one "NAME PUBLIC-KEY" pair per line, blank
// lines and lines starting with '#' ignored, each key listed once
// (ErrSharedKey), no two names differing only in case (ErrCaseOnly), no
// secret key (ErrSecretKeyListed). Errors carry the line number.
func ParseUsers(r io.Reader) (Users, error) {
	users, _, err := ParseUsersLines(r)
	return users, err
}

// ParseUsersLines is ParseUsers that also says which line each user is on.
func ParseUsersLines(r io.Reader) (Users, Lines, error) {
	users := Users{}
	type listed struct {
		name string
		line int
	}
	byKey := map[string]listed{}
	byFolded := map[string]listed{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		if n == 1 && bytes.HasPrefix(sc.Bytes(), byteOrderMark) {
			return nil, nil, errByteOrderMark
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 1 && (strings.HasPrefix(line, PublicPrefix) || strings.HasPrefix(line, SecretPrefix)) {
			return nil, nil, fmt.Errorf("line %d: a key without a user name: a key file, not a users file, or the name left out (want \"NAME %sKEY\")", n, PublicPrefix)
		}
		if len(fields) != 2 {
			return nil, nil, fmt.Errorf("line %d: want \"NAME %sKEY\", found %d fields", n, PublicPrefix, len(fields))
		}
		if err := CheckUserName(fields[0]); err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", n, err)
		}
		folded := FoldCase(fields[0])
		if o, dup := byFolded[folded]; dup && o.name == fields[0] {
			return nil, nil, fmt.Errorf("line %d: user %q listed twice (lines %d and %d)", n, fields[0], o.line, n)
		} else if dup {
			return nil, nil, fmt.Errorf("line %d: user %q differs from user %q (line %d) only in case: %w", n, fields[0], o.name, o.line, ErrCaseOnly)
		}
		byFolded[folded] = listed{fields[0], n}
		k, err := ParsePublic(fields[1])
		if err != nil && strings.HasPrefix(fields[1], SecretPrefix) {
			return nil, nil, fmt.Errorf("line %d: user %q: %w: %w", n, fields[0], err, ErrSecretKeyListed)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: user %q: %w", n, fields[0], err)
		}
		if o, dup := byKey[string(k.Bytes())]; dup {
			return nil, nil, fmt.Errorf("line %d: user %q has the public key of user %q (line %d): %w",
				n, fields[0], o.name, o.line, ErrSharedKey)
		}
		byKey[string(k.Bytes())] = listed{fields[0], n}
		users[fields[0]] = k
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	lines := make(Lines, len(byFolded))
	for _, l := range byFolded {
		lines[l.name] = l.line
	}
	return users, lines, nil
}

// LoadUsers reads a users file; errors are UsersFileErrors, naming the file.
func LoadUsers(path string) (Users, error) {
	users, _, err := LoadUsersLines(path)
	return users, err
}

// LoadUsersLines is LoadUsers that also says which line each user is on.
func LoadUsersLines(path string) (Users, Lines, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, &UsersFileError{path, openError(path, err)}
	}
	defer f.Close()
	// Whoever may write the file may give any user a key of theirs, and
	// read the mail sealed to it from then on. A group's write is the
	// operator's choice, as a group's read of a TLS key is.
	if info, err := f.Stat(); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o002 != 0 {
		return nil, nil, &UsersFileError{path, fmt.Errorf("%w (mode %04o): whoever writes it can give any user a key of theirs and read the mail delivered to that user from then on",
			ErrWritableByAll, info.Mode().Perm())}
	}
	if info, err := f.Stat(); err == nil && info.Mode().IsRegular() {
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			return nil, nil, &UsersFileError{path, &OwnedByAnotherError{Owner: int(st.Uid), Me: os.Geteuid()}}
		}
	}
	if err := checkUsersFolders(path); err != nil {
		return nil, nil, &UsersFileError{path, err}
	}
	u, lines, err := ParseUsersLines(f)
	if err != nil {
		return nil, nil, &UsersFileError{path, err}
	}
	return u, lines, nil
}

// OwnedByAnotherError: a users file whose owner is neither root nor the
// user the command runs as (Me), as sshd refuses such an authorized_keys
// file. Its owner may change its mode and write it whenever it likes: the
// power of a file every user may write (ErrWritableByAll), held by one
// more account, which gives any user a key of its own and reads the mail
// delivered to that user from then on. Root, and the server's own user,
// hold the spool already. It is ErrWritableByAll.
type OwnedByAnotherError struct {
	Owner, Me int // user ids
}

func (e *OwnedByAnotherError) Error() string {
	me := "neither root nor " + userName(e.Me)
	if e.Me == 0 {
		me = "not root"
	}
	return fmt.Sprintf("owned by %s, %s, whom this command runs as: %s may change its mode and write it at will, giving any user a key of theirs and reading the mail delivered to that user from then on",
		userName(e.Owner), me, userName(e.Owner))
}

func (e *OwnedByAnotherError) Unwrap() error { return ErrWritableByAll }

// userName is the login name of uid, or "uid N" if it has none.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// FolderWritableByAllError: a folder holding the users file (or a
// symbolic link on the way to it) that every user of the machine may
// write to, without the sticky bit: whoever may write to a folder may
// rename what is in it and put a file of theirs in its place, which
// comes to the same as writing the file. A sticky folder (/tmp) lets
// its users rename only their own files.
type FolderWritableByAllError struct {
	Dir  string
	Mode fs.FileMode
}

func (e *FolderWritableByAllError) Error() string {
	return fmt.Sprintf("its folder %s is %v (mode %04o): whoever replaces the file there can give any user a key of theirs and read the mail delivered to that user from then on",
		e.Dir, ErrWritableByAll, e.Mode.Perm())
}

func (e *FolderWritableByAllError) Unwrap() error { return ErrWritableByAll }

// checkUsersFolders returns a FolderWritableByAllError for the first
// folder, from the users file's own up to the root, of path as named and
// of the file it leads to, that every user may write to and is not
// sticky.
func checkUsersFolders(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	for _, p := range paths {
		for dir := filepath.Dir(p); ; dir = filepath.Dir(dir) {
			if info, err := os.Stat(dir); err == nil && info.Mode().Perm()&0o002 != 0 && info.Mode()&fs.ModeSticky == 0 {
				return &FolderWritableByAllError{dir, info.Mode()}
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return nil
}
