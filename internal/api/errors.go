package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"cspool/internal/spool"
)

// Error kinds. Every error of this package wraps exactly one of them; the
// server maps a kind to an HTTP status and the client maps the status back.
var (
	ErrBadRequest      = errors.New("bad request")              // 400
	ErrUnauthenticated = errors.New("unauthenticated")          // 401
	ErrForbidden       = errors.New("forbidden")                // 403
	ErrNotFound        = errors.New("not found")                // 404
	ErrConflict        = errors.New("conflict")                 // 409: a newer checkpoint exists, or the head moved
	ErrTooLarge        = errors.New("request too large")        // 413
	ErrUnsupportedType = errors.New("unsupported content type") // 415
	// ErrWrongKey: 422, permanent. An entry the spool key appended is not
	// sealed to the user's registered key (or is not an entry at all):
	// the user's devices could not open it. Nothing was appended.
	ErrWrongKey = errors.New("entry not sealed to the user's key")
	// ErrOverQuota: 507, temporary. A delivery would take the user's log
	// past the server's quota (--quota), or a user's own append past the
	// quota and Config.OwnMargin; nothing was appended. The user can make
	// room, so a sender keeps the message and retries.
	ErrOverQuota      = errors.New("over quota")
	ErrInternal       = errors.New("internal server error")   // 500, temporary
	ErrNotImplemented = errors.New("not implemented")         // 501: the store cannot compact
	ErrUnavailable    = errors.New("temporarily unavailable") // 503 (and 502, 504), temporary
	// ErrTooManyRequests: 429, temporary. The caller's own share is used up
	// (its key's nonce budget, its user's long-polls, its address's
	// connections); other callers are not affected.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrTransport: the request or response did not get through (connection
	// refused or reset, timeout, truncated response). Temporary.
	ErrTransport = errors.New("transport failure")
	// ErrProtocol: the server answered something this client cannot parse.
	// Permanent: retrying will not help until one side is fixed.
	ErrProtocol = errors.New("protocol error")
	// ErrCertificate: the server's TLS certificate did not verify (unknown
	// authority, another host name, expired). Found by the client alone, it
	// has no HTTP status. Permanent: it takes a person to fix the trust
	// (SSL_CERT_FILE, docs/TLS.md) or the certificate.
	ErrCertificate = errors.New("server certificate not trusted")
)

// A 404 answer to an append naming a user the server does not have (with
// HeaderUnknownUser) has keys.ErrUnknownUser as its Err: permanent, nothing
// was appended.

// HeaderUnknownUser marks a 404 as "no such user" rather than "no such
// route"; its value is the user name.
const HeaderUnknownUser = "Cspool-Unknown-User"

// ErrReplayed is the Err of a 401 with HeaderReplayed: the server had seen
// this very request (its nonce) before, so a copy of it came first: a
// proxy or balancer on the way that sent it twice. Of an append without
// if_head (a delivery) to a server that records such appends (docs/API.md
// §4, "Appends made once"), it means that no copy was appended: one that
// was gets the first answer instead. So cspool deliver takes it for a
// temporary failure, and the mail transfer agent tries again with a new
// request, where it took it for a refused key and bounced the message.
var ErrReplayed = errors.New("the server saw this request before: a copy of it came first")

// Error is a failed API call, as the client sees it.
type Error struct {
	Op     string // what was attempted, e.g. "reading entries of alice"
	Status int    // HTTP status, 0 if no response was received
	Kind   error  // one of the Err* kinds above
	Msg    string // the server's text or the local cause
	Err    error  // the underlying error, if any (transport failures)
	// RetryAfter is how long the server asked the client to wait before
	// trying again (Retry-After on a 429 or a 503: a key's spent budget, a
	// server short of room), zero if it did not say; at most
	// maxRetryAfter, whatever it said.
	RetryAfter time.Duration
}

// RetryIn is e.RetryAfter: what a caller that does not import this
// package (the syncer) finds with errors.As.
func (e *Error) RetryIn() time.Duration { return e.RetryAfter }

// maxRetryAfter bounds the wait a server's Retry-After may ask of the
// client: the server is not trusted with how long a device stays silent.
const maxRetryAfter = 2 * time.Minute

func (e *Error) Error() string {
	s := e.Op + ": " + e.Kind.Error()
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// Unwrap returns the kind, the spool error with the same meaning (so that
// callers written against spool.Store branch the same way), and the cause.
func (e *Error) Unwrap() []error {
	errs := []error{e.Kind}
	switch e.Kind {
	case ErrUnavailable, ErrTooManyRequests, ErrInternal, ErrTransport:
		errs = append(errs, spool.ErrUnavailable)
	case ErrTooLarge:
		errs = append(errs, spool.ErrTooLarge)
	case ErrOverQuota:
		errs = append(errs, spool.ErrOverQuota)
	case ErrConflict:
		if e.Err == nil { // else the head moved under a conditional append
			errs = append(errs, spool.ErrStaleCheckpoint)
		}
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// IsTemporary reports whether err is worth retrying later: the server was
// unreachable, overloaded or failed internally, the caller's share of it
// was used up (429), or the user's log is over its quota (507).
// Authentication, permission, size and format errors are permanent.
func IsTemporary(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTooManyRequests) || errors.Is(err, ErrInternal) ||
		errors.Is(err, ErrTransport) || errors.Is(err, spool.ErrUnavailable) || errors.Is(err, ErrOverQuota)
}

var kindStatus = []struct {
	kind   error
	status int
}{
	{ErrBadRequest, http.StatusBadRequest},
	{ErrUnauthenticated, http.StatusUnauthorized},
	{ErrForbidden, http.StatusForbidden},
	{ErrNotFound, http.StatusNotFound},
	{ErrConflict, http.StatusConflict},
	{ErrTooLarge, http.StatusRequestEntityTooLarge},
	{ErrUnsupportedType, http.StatusUnsupportedMediaType},
	{ErrWrongKey, http.StatusUnprocessableEntity},
	{ErrOverQuota, http.StatusInsufficientStorage},
	{ErrUnavailable, http.StatusServiceUnavailable},
	{ErrTooManyRequests, http.StatusTooManyRequests},
	{ErrInternal, http.StatusInternalServerError},
	{ErrNotImplemented, http.StatusNotImplemented},
}

// statusKind maps an HTTP error status to a kind.
func statusKind(status int) error {
	for _, ks := range kindStatus {
		if ks.status == status {
			return ks.kind
		}
	}
	switch {
	case status == http.StatusRequestTimeout || status == http.StatusBadGateway || status == http.StatusGatewayTimeout:
		return ErrUnavailable
	case status >= 500:
		return ErrInternal
	}
	return ErrProtocol
}

// kindStatusOf maps a kind to its HTTP status (500 for anything else).
func kindStatusOf(kind error) int {
	for _, ks := range kindStatus {
		if ks.kind == kind {
			return ks.status
		}
	}
	return http.StatusInternalServerError
}
