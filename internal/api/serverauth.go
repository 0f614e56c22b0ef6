package api

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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
	// once names an append without if_head to a store that appends a
	// request once (spool.OnceAppender); onced says it does.
	once  spool.Once
	onced bool
	// repeat: this process accepted the request's nonce before; the
	// append answers from the store's record of it (handlers.go).
	repeat bool
}

// onceMargin is how long after a request's timestamp has left the
// window its record stays in the store (spool.Once.Expires): the
// processes sharing a store judge the window by their own clocks, and
// this is how far apart those may be.
const onceMargin = time.Minute

// onceAppend tells whether a request to route rt with the canonical
// query q is an append the store records: an append without if_head, on
// a spool.OnceAppender.
func (s *Server) onceAppend(rt route, q string) bool {
	if rt != routeAppend {
		return false
	}
	if _, ok := s.cfg.Store.(spool.OnceAppender); !ok {
		return false
	}
	return !strings.HasPrefix(q, "if_head=") && !strings.Contains(q, "&if_head=")
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
		s.setBudget(w.Header(), info(r))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if c.onced && !c.repeat {
			// A copy that reaches this process before the append is
			// answered waits for it (appendedBefore).
			done := make(chan struct{})
			s.onceMu.Lock()
			s.inflight[c.once.ID] = done
			s.onceMu.Unlock()
			defer func() {
				s.onceMu.Lock()
				if s.inflight[c.once.ID] == done {
					delete(s.inflight, c.once.ID)
				}
				s.onceMu.Unlock()
				close(done)
			}()
		}
		h(w, r, c)
	})
}

var emptyHash = sha256.Sum256(nil)

// maxQueryBytes bounds a request's query as sent: the API's longest, a
// read naming every parameter at its largest, is about 120 bytes.
const maxQueryBytes = 1024

// HeaderEarliestTS, sent with a refusal for the request's timestamp, is the
// earliest timestamp (Unix seconds) the server accepts at the time of the
// answer; with the Date header it lets a client re-sign at once.
const HeaderEarliestTS = "Cspool-Earliest-Ts"

// HeaderReplayed marks a 401 as a refusal of a nonce the server has seen
// (docs/API.md §2, step 8): a client that gets it for a read signs the
// read again, once (Client.sendBody), since only a copy of its own
// request can have used the nonce: an HTTP client's retry of a request
// on a connection that broke after it was sent (Go's net/http retries a
// GET so), or a proxy's. Its value is "1".
const HeaderReplayed = "Cspool-Replayed"

// HeaderBudget, on every answer to a request whose signature verified and
// whose signer may use the route (429 for its budget included), is the
// signer's nonce budget (docs/API.md §2): "N/S; held=H", at most N
// requests of the key held at once, each for S seconds after its
// timestamp (about N/S requests a second, sustained), H of them held
// once this request's nonce was taken (all of the key's devices
// together). A device paces its requests by it (syncer.Budgeted).
const HeaderBudget = "Cspool-Budget"

// HeaderNonce, on every answer to a request whose signature verified, is
// the request's nonce (32 hex digits, as in its Authorization header): the
// answer names the request it answers, so that a client tells an answer
// to another request (a cache or proxy that mixed answers up, across
// users or across time) from its own (docs/API.md §2).
const HeaderNonce = "Cspool-Nonce"

// setBudget writes HeaderBudget for the request ri, if its signer passed,
// and HeaderNonce, if its signature verified.
func (s *Server) setBudget(h http.Header, ri *reqInfo) {
	if ri.budget > 0 {
		h.Set(HeaderBudget, strconv.Itoa(ri.budget)+"/"+strconv.FormatInt(int64(s.nonceHold().Seconds()), 10)+"; held="+strconv.Itoa(ri.held))
	}
	if ri.nonce != "" {
		h.Set(HeaderNonce, ri.nonce)
	}
}

// nonceHold is how long a nonce is remembered after its request's
// timestamp, in whole seconds, rounded up.
func (s *Server) nonceHold() time.Duration {
	return (s.cfg.ClockSkew + time.Second + time.Second - 1).Truncate(time.Second)
}

// authenticate decides who signed r and whether they may use the route. The
// checks run cheapest first, and nothing is stored before the last one: a
// request is refused before its signature is verified unless its key is
// the spool key or one the users database knows (or, in test mode, one
// that may claim the name), and its nonce is recorded only once the
// signature and the authorization hold, against its own key's budget.
func (s *Server) authenticate(r *http.Request, rt route) (*caller, error) {
	user := r.PathValue("user")
	if err := keys.CheckUserName(user); err != nil {
		if len(user) > maxLogged {
			err = fmt.Errorf("%w %q: must be 1 to 64 characters", keys.ErrBadUserName, clip(user))
		}
		return nil, unverified(errorf(ErrBadRequest, "%v", err))
	}
	hs := r.Header.Values("Authorization")
	if len(hs) != 1 {
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonMissing, "want one Authorization header, found %d", len(hs)))
	}
	a, err := parseAuthorizationKnown(hs[0], &s.known)
	if err != nil {
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonMalformed, "%v", err))
	}
	ri := info(r)
	ri.key, ri.keyID = a.key, a.keyID
	now := s.now()
	if err := s.checkTime(r, a.ts, now); err != nil {
		return nil, err
	}
	if n := len(r.URL.RawQuery); n > maxQueryBytes {
		// Parsed and sorted, a query of a megabyte (net/http's bound on a
		// request's header) and 10,000 parameters took 7 to 30 ms, where
		// net/http's own parse of the request's URL took 1 ms, and it was
		// made before a stranger's key was looked up and refused.
		return nil, unverified(errorf(ErrBadRequest, "query of %d bytes: the API's queries are at most %d", n, maxQueryBytes))
	}
	q, err := canonicalQuery(r.URL.RawQuery)
	if err != nil {
		return nil, unverified(errorf(ErrBadRequest, "%v", err))
	}
	if rt == routeRead && a.bodyHash != emptyHash {
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonBodyHash, "signed body hash is not that of an empty body"))
	}
	if rt == routeRead && r.ContentLength != 0 {
		// The signature covers an empty body; these bytes (or chunks) it
		// does not. They were ignored and the read answered.
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonBodyHash, "a read carries no body, and this one has one (Content-Length or chunks)"))
	}
	spoolKey := s.cfg.SpoolKey.Ed25519 != nil && a.key.Equal(s.cfg.SpoolKey)
	var claim bool
	var forbidden *srvError // told only to whoever proves to hold the key
	if !spoolKey {
		switch err := s.cfg.Users.Check(r.Context(), user, a.key); {
		case err == nil:
		case errors.Is(err, userdb.ErrUnclaimed):
			claim = true
		case errors.Is(err, keys.ErrForbidden):
			forbidden = usersError(err, user)
		default:
			e := usersError(err, user)
			if e.reason != "" { // an unknown key; not the database failing
				return nil, unverified(e)
			}
			// The users database failing (down, or refusing
			// connections): the server's failure, not the caller's, so
			// its address is not charged for it (TestUsersOutageNotHeld);
			// but anyone can provoke it at will, before the signature,
			// and its lines were written every time: a stranger's flood
			// during an outage wrote a warning for each request.
			e.thinned = true
			return nil, e
		}
	}
	msg := signedMessage(r.Method, r.URL.Path, q, a)
	if !ed25519.Verify(a.key.Ed25519, msg, a.sig) {
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonBadSignature, "bad signature"))
	}
	ri.nonce = hex.EncodeToString(a.nonce[:])
	c := &caller{user: user, key: a.key, bodyHash: a.bodyHash}
	if s.onceAppend(rt, q) {
		c.onced = true
		// The timestamp first: the stores' records of one moment sit
		// together (spool.Once).
		binary.BigEndian.PutUint64(c.once.ID[:8], uint64(a.ts))
		copy(c.once.ID[8:16], ri.keyID[:])
		copy(c.once.ID[16:], a.nonce[:])
		c.once.Digest = sha256.Sum256(msg)
		c.once.Expires = time.Unix(a.ts, 0).Add(s.cfg.ClockSkew + time.Second + onceMargin)
	}
	// A request refused here spends its nonce all the same, against its
	// key's budget: it was answered at once, at no cost to its key and
	// logged every time, and a copy of it was refused again as it was,
	// at any rate, for as long as its timestamp was in the window.
	budget := s.cfg.MaxNonces
	var refuse *srvError
	switch {
	case spoolKey && rt != routeAppend:
		refuse = authErr(ErrForbidden, AuthReasonSpoolKeyForbidden, "the spool key may only append entries")
		budget = s.cfg.SpoolKeyNonces
	case spoolKey:
		c.spool = true
		ri.spool = true
		budget = s.cfg.SpoolKeyNonces
	case forbidden != nil:
		refuse = forbidden
	case claim:
		// Test mode: the signature proves the key; the name goes to it.
		if err := s.cfg.Users.Authorize(r.Context(), user, a.key); err != nil {
			return nil, usersError(err, user)
		}
	}
	var be *budgetError
	held, err := s.nonces.add(ri.keyID, a.nonce, time.Unix(a.ts, 0).Add(s.nonceHold()), now, budget)
	if refuse == nil {
		// The budget is stated to a signer that may use the route only.
		ri.budget, ri.held = budget, held
	}
	switch {
	case errors.Is(err, errReplayed) && c.onced && refuse == nil:
		// Answered from the store's record of its append, if it has one
		// (appendEntries); refused as a replay otherwise.
		c.repeat = true
	case errors.Is(err, errReplayed):
		return nil, replayed()
	case errors.As(err, &be):
		e := authErr(ErrTooManyRequests, AuthReasonNonceBudget, "this key made %d requests within %v: try again later", be.budget, s.cfg.ClockSkew)
		e.retryAfter, e.sampled = be.retry, true
		return nil, e
	case refuse != nil:
		return nil, refuse
	}
	s.known.add(a)
	return c, nil
}

// replayed refuses a request whose nonce was used before. Whoever
// captured the request can send it again at will.
func replayed() *srvError {
	return unverified(authErr(ErrUnauthenticated, AuthReasonReplayed, "replayed request (nonce already used)"))
}

// checkTime refuses a timestamp outside the window (401) or at or before
// the restart fence (503). A request refused by the fence before any
// timestamp after it can be accepted (the first second after the start) is
// answered when one can, so that the client's re-signed retry succeeds.
func (s *Server) checkTime(r *http.Request, ts int64, now time.Time) error {
	if d := now.Sub(time.Unix(ts, 0)); d > s.cfg.ClockSkew || d < -s.cfg.FutureSkew {
		e := authErr(ErrUnauthenticated, AuthReasonStale, "timestamp %d is %v from the server's clock (limit %v behind, %v ahead)",
			ts, d.Round(time.Second), s.cfg.ClockSkew, s.cfg.FutureSkew)
		// In the first second after the start no timestamp is accepted
		// yet: answered once one is, as the fence's refusal below, so
		// that the retry signed at the earliest timestamp succeeds (it
		// was more than FutureSkew ahead, refused too, and the client
		// took the second refusal for a wrong key).
		now, _ = s.waitOpen(r, now)
		e.earliestTS = s.earliest(now)
		return unverified(e)
	}
	if ts > s.fence {
		return nil
	}
	now, _ = s.waitOpen(r, now)
	e := authErr(ErrUnavailable, AuthReasonBeforeStart, "request signed before this server started (timestamp %d, want after %d): sign it again", ts, s.fence)
	e.earliestTS, e.retryAfter = s.earliest(now), time.Second
	return unverified(e)
}

// now is the server's time for the timestamp rules (docs/API.md §2,
// "Clock steps"): the wall clock (cfg.Now), but never behind where it
// was, which the monotonic clock carries on since. A wall clock stepped
// back moved every rule with it: the restart fence stayed ahead of every
// timestamp the window took, and each request of every user was refused
// until the clock caught up, as long as the step; and a request signed
// before the step, its nonce forgotten, was within the window again, and
// taken twice. The server's own time is what the refusals' Date header
// says, so that clients sign by it.
func (s *Server) now() time.Time {
	wall := s.cfg.Now()
	s.clockMu.Lock()
	defer s.clockMu.Unlock()
	mono := time.Now()
	floor := s.clockLast.Add(mono.Sub(s.clockMono))
	t := wall
	if wall.Before(floor) {
		t = floor
		if d := floor.Sub(wall); d > time.Second && !s.steppedBack {
			s.steppedBack = true
			s.log.Warn("the wall clock stepped back; the server keeps its own time going on from where it was until the wall clock catches up or the server restarts (docs/API.md §2)",
				"behind", d.Round(time.Second).String())
		}
	}
	s.clockLast, s.clockMono = t, mono
	return t
}

// waitOpen waits, in the first second after the start, until a timestamp
// can be accepted (after the fence by FutureSkew at most), or until r's
// client goes away. It returns the time then, and false if the client
// went away first.
func (s *Server) waitOpen(r *http.Request, now time.Time) (time.Time, bool) {
	openAt := time.Unix(s.fence+1, 0).Add(-s.cfg.FutureSkew)
	wait := openAt.Sub(now)
	if wait <= 0 {
		return now, true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return s.now(), true
	case <-r.Context().Done():
		return now, false
	}
}

// earliest is the earliest timestamp accepted at now.
func (s *Server) earliest(now time.Time) int64 {
	t := now.Add(-s.cfg.ClockSkew)
	e := t.Unix()
	if t.After(time.Unix(e, 0)) {
		e++
	}
	return max(e, s.fence+1)
}

// usersError maps an error of the users database.
func usersError(err error, user string) *srvError {
	switch {
	case errors.Is(err, keys.ErrForbidden):
		return authErr(ErrForbidden, AuthReasonForbidden, "key may not access the log of %q", user)
	case errors.Is(err, userdb.ErrUnknownKey), errors.Is(err, userdb.ErrUnclaimed):
		return authErr(ErrUnauthenticated, AuthReasonUnknownKey, "unknown key for %q", user)
	case errors.Is(err, spool.ErrUnavailable):
		// The users table's database is down: temporary, like the store.
		return &srvError{kind: ErrUnavailable, msg: "users database unavailable", detail: err}
	default:
		return &srvError{kind: ErrInternal, msg: "authorizing", detail: err}
	}
}

// holdRefusal waits as long as r's address must for its refusal
// (Config.RefusalRate).
func (s *Server) holdRefusal(r *http.Request) {
	d := s.conns.refusalDelay(r.RemoteAddr, time.Now())
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	case <-s.stopping.Done():
	}
}

// srvError is a failure as the server reports it: kind gives the status, msg
// goes to the peer, detail only to the log.
type srvError struct {
	kind   error
	msg    string
	detail error
	reason string // an AuthReason for a refused authentication
	// sampled: a refusal anyone can repeat at will (before the signature
	// was checked, a replay, a caller over its own share): its log lines are
	// thinned out, and its answer is held past the address's RefusalRate.
	sampled bool
	// thinned: its log lines are thinned out as a sampled refusal's,
	// but the answer is not held: the server's own failure that anyone
	// can provoke (the users database down, at step 4).
	thinned    bool
	retryAfter time.Duration // for 503 and 429; zero: Config.RetryAfter
	earliestTS int64         // HeaderEarliestTS, if not zero
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

// unverified marks a refusal anyone can repeat at will: made before the
// signature was checked, or of a captured request sent again.
func unverified(e *srvError) *srvError {
	e.sampled = true
	return e
}

// storeError classifies an error from the store; a *srvError passes as it
// is.
func storeError(op string, err error) *srvError {
	if se, ok := err.(*srvError); ok {
		return se
	}
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

// refusedBodyGrace is how long the body of a request refused before it
// was read is waited for (and thrown away, up to net/http's 256 KiB)
// before the answer: what a client sends at once arrives in it, and one
// that announced a body and stopped is answered after it.
const refusedBodyGrace = 2 * time.Second

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
	if se.sampled {
		s.holdRefusal(r)
	}
	if r.ContentLength != 0 && !info(r).bodyRead {
		// Refused before its body was read: the connection ends with
		// the answer. net/http reads the body (up to 256 KiB) before
		// it writes the answer, so that a client still sending gets
		// the answer rather than a reset, and a client that announced
		// a body and sent nothing held its connection, unanswered,
		// until the server's read timeout (10 minutes; a header has
		// 30 s): that read now has refusedBodyGrace. With no time at
		// all, the answer went out at once and the connection closed
		// under a client still writing its body: a device's checkpoint
		// over the server's limit got "broken pipe" instead of the 413
		// that says why (TestServerCheckpointMetrics, under load).
		closeUnread(w)
	}
	status := kindStatusOf(se.kind)
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", AuthScheme)
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		retry := se.retryAfter
		if retry <= 0 {
			retry = s.cfg.RetryAfter
		}
		w.Header().Set("Retry-After", strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
	}
	if se.earliestTS != 0 {
		w.Header().Set(HeaderEarliestTS, strconv.FormatInt(se.earliestTS, 10))
		// The clock the refusal went by (now), which the client signs by.
		w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	}
	if se.reason == AuthReasonReplayed {
		w.Header().Set(HeaderReplayed, "1")
	}
	msg := se.msg
	if se.kind == ErrInternal {
		msg = se.kind.Error() // the detail stays in the log
	}
	writeJSON(w, status, map[string]string{"error": msg})
}
