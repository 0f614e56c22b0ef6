package api

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/userdb"
)

// caller is an authenticated request's signer.
type caller struct {
	user     string // the log named in the path
	key      keys.PublicKey
	spool    bool // signed with the spool key
	bodyHash [sha256.Size]byte
}

type handler func(w http.ResponseWriter, r *http.Request, c *caller)

// route says who may call a user route and whether it carries a body.
type route int

const (
	routeRead      route = iota // the user's key; no body
	routeAppend                 // the user's key or the spool key; a body
	routeUserWrite              // the user's key only; a body
)

// authed checks the path's user name and the request's signature, then
// authorizes the signer for the route: the user's own key for every user
// route, the spool key for appends only.
func (s *Server) authed(h handler, rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r, rt)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r, c)
	})
}

var emptyHash = sha256.Sum256(nil)

func (s *Server) authenticate(r *http.Request, rt route) (*caller, error) {
	user := r.PathValue("user")
	if err := keys.CheckUserName(user); err != nil {
		return nil, errorf(ErrBadRequest, "%v", err)
	}
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return nil, authErr(ErrUnauthenticated, AuthReasonMissing, "want one Authorization header, found %d", len(hs))
	}
	a, err := parseAuthorization(hs[0])
	if err != nil {
		return nil, authErr(ErrUnauthenticated, AuthReasonMalformed, "%v", err)
	}
	info(r).keyID = fmt.Sprintf("%x", a.key.KeyID())
	now := s.cfg.Now()
	ts := time.Unix(a.ts, 0)
	if d := now.Sub(ts); d > s.cfg.ClockSkew || d < -s.cfg.ClockSkew {
		return nil, authErr(ErrUnauthenticated, AuthReasonStale, "timestamp %d is %v from the server's clock (limit %v)", a.ts, d.Round(time.Second), s.cfg.ClockSkew)
	}
	q, err := canonicalQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errorf(ErrBadRequest, "%v", err)
	}
	if !ed25519.Verify(a.key.Ed25519, signedMessage(r.Method, r.URL.Path, q, a), a.sig) {
		return nil, authErr(ErrUnauthenticated, AuthReasonBadSignature, "bad signature")
	}
	var rk replayKey
	id := a.key.KeyID()
	copy(rk[:], id[:])
	copy(rk[8:], a.nonce[:])
	switch err := s.nonces.add(rk, ts.Add(s.cfg.ClockSkew+time.Second), now); {
	case errors.Is(err, errReplayed):
		return nil, authErr(ErrUnauthenticated, AuthReasonReplayed, "replayed request (nonce already used)")
	case err != nil:
		return nil, errorf(ErrUnavailable, "%v", err)
	}
	c := &caller{user: user, key: a.key, bodyHash: a.bodyHash}
	if rt == routeRead && a.bodyHash != emptyHash {
		return nil, authErr(ErrUnauthenticated, AuthReasonBodyHash, "signed body hash is not that of an empty body")
	}
	if s.cfg.SpoolKey.Ed25519 != nil && a.key.Equal(s.cfg.SpoolKey) {
		if rt != routeAppend {
			return nil, authErr(ErrForbidden, AuthReasonSpoolKeyForbidden, "the spool key may only append entries")
		}
		c.spool = true
		info(r).spool = true
		return c, nil
	}
	switch err := s.cfg.Users.Authorize(r.Context(), user, a.key); {
	case err == nil:
		return c, nil
	case errors.Is(err, userdb.ErrForbidden):
		return nil, authErr(ErrForbidden, AuthReasonForbidden, "key may not access the log of %q", user)
	case errors.Is(err, userdb.ErrUnknownKey):
		return nil, authErr(ErrUnauthenticated, AuthReasonUnknownKey, "unknown key for %q", user)
	case errors.Is(err, spool.ErrUnavailable):
		// The users table's database is down: temporary, like the store.
		return nil, &srvError{kind: ErrUnavailable, msg: "users database unavailable", detail: err}
	default:
		return nil, &srvError{kind: ErrInternal, msg: "authorizing", detail: err}
	}
}

// srvError is a failure as the server reports it: kind gives the status, msg
// goes to the peer, detail only to the log.
type srvError struct {
	kind   error
	msg    string
	detail error
	reason string // an AuthReason for 401 and 403
}

func (e *srvError) Error() string {
	if e.detail != nil {
		return e.msg + ": " + e.detail.Error()
	}
	return e.msg
}

func errorf(kind error, format string, a ...any) *srvError {
	return &srvError{kind: kind, msg: fmt.Sprintf(format, a...)}
}

// authErr is errorf for a refused authentication or authorization.
func authErr(kind error, reason, format string, a ...any) *srvError {
	e := errorf(kind, format, a...)
	e.reason = reason
	return e
}

// storeError classifies an error from the store.
func storeError(op string, err error) *srvError {
	kind := ErrInternal
	switch {
	case errors.Is(err, spool.ErrUnavailable), errors.Is(err, spool.ErrClosed):
		kind = ErrUnavailable
	case errors.Is(err, spool.ErrTooLarge):
		kind = ErrTooLarge
	case errors.Is(err, spool.ErrInvalidArgument), errors.Is(err, spool.ErrEmptyBatch), errors.Is(err, spool.ErrInvalidUser):
		kind = ErrBadRequest
	case errors.Is(err, spool.ErrStaleCheckpoint):
		kind = ErrConflict
	case errors.Is(err, spool.ErrNoCheckpoint):
		kind = ErrNotFound
	}
	return &srvError{kind: kind, msg: op, detail: err}
}

// fail answers with err's status and a JSON body {"error": text}.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var se *srvError
	if !errors.As(err, &se) {
		se = &srvError{kind: ErrInternal, msg: "internal error", detail: err}
	}
	info(r).err = se
	if se.reason != "" {
		s.cfg.Metrics.AuthFailure(se.reason)
	}
	status := kindStatusOf(se.kind)
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", AuthScheme)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter.Seconds())))
	}
	msg := se.msg
	if se.kind == ErrInternal {
		msg = se.kind.Error() // the detail stays in the log
	}
	writeJSON(w, status, map[string]string{"error": msg})
}
