package imapd

import (
	"github.com/emersion/go-imap/v2"

	"cspool/internal/loginguard"
)

// LoginLimits slow down password guessing (docs/IMAP.md, "Login"); the
// guard is shared with the SMTP submission listener (package loginguard).
type LoginLimits = loginguard.Limits

// errLoginsWaiting refuses a login, unchecked, while its source has
// MaxWaiting failed logins waiting (loginguard.ErrWaiting).
var errLoginsWaiting = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
	Text: "too many failed logins from your address; try again later"}

// errSessions refuses a right login while LoginLimits.MaxSessions
// connections are logged in (loginguard.ErrSessions), as Dovecot answers
// a login past mail_max_userip_connections: the connection stays, not
// logged in, and may log in again once a session has closed.
var errSessions = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable,
	Text: "too many connections are logged in; close one, or try again later"}

// errConnClosing refuses, unchecked, logins a client sent after the one
// that closed its connection (pipelined in the same read).
var errConnClosing = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed,
	Text: "too many failed logins; the connection is closing"}

// errPrivacyRequired refuses, unchecked, a login in the clear from another
// machine when the server has TLS (Config.TLS): the client must STARTTLS
// first or use the implicit TLS port (RFC 9051 section 7.1, PRIVACYREQUIRED).
var errPrivacyRequired = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired,
	Text: "log in over TLS: STARTTLS first, or use the IMAPS port"}
