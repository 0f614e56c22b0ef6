package keys

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
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
			return fmt.Errorf("%w %q: character %q not allowed", ErrBadUserName, name, c)
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

// ParseUsers reads a users file: one "NAME PUBLIC-KEY" pair per line, blank
// lines and lines starting with '#' ignored, each key listed once
// (ErrSharedKey), no two names differing only in case (ErrCaseOnly). Errors
// carry the line number.
func ParseUsers(r io.Reader) (Users, error) {
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
			return nil, errByteOrderMark
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"NAME %sKEY\", found %d fields", n, PublicPrefix, len(fields))
		}
		if err := CheckUserName(fields[0]); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if _, dup := users[fields[0]]; dup {
			return nil, fmt.Errorf("line %d: user %q listed twice", n, fields[0])
		}
		folded := FoldCase(fields[0])
		if o, dup := byFolded[folded]; dup {
			return nil, fmt.Errorf("line %d: user %q differs from user %q (line %d) only in case: %w", n, fields[0], o.name, o.line, ErrCaseOnly)
		}
		byFolded[folded] = listed{fields[0], n}
		k, err := ParsePublic(fields[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: user %q: %w", n, fields[0], err)
		}
		if o, dup := byKey[string(k.Bytes())]; dup {
			return nil, fmt.Errorf("line %d: user %q has the public key of user %q (line %d): %w",
				n, fields[0], o.name, o.line, ErrSharedKey)
		}
		byKey[string(k.Bytes())] = listed{fields[0], n}
		users[fields[0]] = k
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

// LoadUsers reads a users file; errors are UsersFileErrors, naming the file.
func LoadUsers(path string) (Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &UsersFileError{path, openError(path, err)}
	}
	defer f.Close()
	// Whoever may write the file may give any user a key of theirs, and
	// read the mail sealed to it from then on. A group's write is the
	// operator's choice, as a group's read of a TLS key is.
	if info, err := f.Stat(); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o002 != 0 {
		return nil, &UsersFileError{path, fmt.Errorf("%w (mode %04o): whoever writes it can give any user a key of theirs and read the mail delivered to that user from then on",
			ErrWritableByAll, info.Mode().Perm())}
	}
	u, err := ParseUsers(f)
	if err != nil {
		return nil, &UsersFileError{path, err}
	}
	return u, nil
}
