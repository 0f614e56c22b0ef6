package deliver

import (
	"errors"
	"syscall"

	"cspool/internal/keys"
	"cspool/internal/spool"
)

// Errors returned by Deliver and the LMTP listener, wrapped with detail: test
// with errors.Is or use KindOf. A recipient that is not a user (or cannot
// name one) is keys.ErrUnknownUser, as the users database says it.
var (
	// ErrTooLarge: the message is over the size limit. Permanent.
	ErrTooLarge = errors.New("message too large")
	// ErrResources: the delivery side is short of memory or storage right now.
	// Temporary.
	ErrResources = errors.New("insufficient resources")
)

// Kind classifies a delivery error by what the sender must do about it.
type Kind uint8

// The kinds of delivery errors, with their LMTP replies and the exit status
// of cspool deliver.
const (
	// KindNone: no error (250 2.0.0; exit 0).
	KindNone Kind = iota
	// KindTemporary: retry later. The store is unavailable, the context ended,
	// the server is unreachable, or something unforeseen went wrong
	// (451 4.3.0; exit 75).
	KindTemporary
	// KindResources: retry later; out of storage or of the memory budget for
	// messages in flight (452 4.3.1; exit 75).
	KindResources
	// KindUnknownUser: permanent; no such user (550 5.1.1; exit 67).
	KindUnknownUser
	// KindTooLarge: permanent; the message is over the size limit
	// (552 5.3.4; exit 65).
	KindTooLarge
	// KindOverQuota: retry later; the user's log is over the spool's
	// quota, until the user deletes mail (452 4.2.2, RFC 3463 X.2.2
	// "mailbox full"; exit 75).
	KindOverQuota
)

var kindNames = [...]string{"none", "temporary", "resources", "unknown user", "too large", "over quota"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "invalid kind"
}

// KindOf classifies err. Errors it does not recognise are KindTemporary:
// a mail transfer agent then keeps the message and retries.
func KindOf(err error) Kind {
	switch {
	case err == nil:
		return KindNone
	case errors.Is(err, keys.ErrUnknownUser), errors.Is(err, keys.ErrBadUserName):
		return KindUnknownUser
	case errors.Is(err, ErrTooLarge), errors.Is(err, spool.ErrTooLarge):
		return KindTooLarge
	case errors.Is(err, spool.ErrOverQuota):
		return KindOverQuota
	case errors.Is(err, ErrResources), errors.Is(err, spool.ErrFull), errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.ENOMEM):
		return KindResources
	}
	return KindTemporary
}

// IsTemporary reports whether err is a failure worth retrying later.
func IsTemporary(err error) bool {
	k := KindOf(err)
	return k == KindTemporary || k == KindResources || k == KindOverQuota
}

// IsPermanent reports whether err is a failure that retrying cannot fix.
func IsPermanent(err error) bool {
	k := KindOf(err)
	return k == KindUnknownUser || k == KindTooLarge
}
