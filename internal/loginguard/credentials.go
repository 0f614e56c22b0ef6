package loginguard

import (
	"crypto/sha256"
	"crypto/subtle"
)

// Credentials are the user name and password a listener takes. They are
// kept as SHA-256 digests, and a login is checked by comparing digests:
// subtle.ConstantTimeCompare answers at once when the two lengths differ,
// so comparing the password sent with the password itself would take
// longer for a guess of the right length, and tell a guesser that length.
type Credentials struct {
	user, pass [sha256.Size]byte
}

// NewCredentials returns the credentials of user with password (which may
// be empty: an empty password is then the one accepted).
func NewCredentials(user, password string) Credentials {
	return Credentials{user: sha256.Sum256([]byte(user)), pass: sha256.Sum256([]byte(password))}
}

// Check reports whether user is the user name (userOK: a failed login
// counts against the user then, Guard.Fail) and whether user and password
// both are right (ok). It takes the same time whatever was sent.
func (c Credentials) Check(user, password string) (userOK, ok bool) {
	uh, ph := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(password))
	u := subtle.ConstantTimeCompare(uh[:], c.user[:])
	p := subtle.ConstantTimeCompare(ph[:], c.pass[:])
	return u == 1, u&p == 1
}
