package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
	"cspool/internal/userdb"
)

func (s *Server) head(w http.ResponseWriter, r *http.Request, c *caller) {
	h, err := s.cfg.Store.Head(r.Context(), c.user)
	if err != nil {
		s.fail(w, r, storeError("reading head", err))
		return
	}
	w.Header().Set("Cspool-Head", strconv.FormatUint(h, 10))
	writeJSON(w, http.StatusOK, map[string]uint64{"head": h})
}

// spoolKeysAnswer is the JSON answer to GET .../spool-keys (docs/API.md,
// "Spool keys"): the spool key in its text form, and the key it replaced
// with the spool key's signature over SuccessionMessage, base64url without
// padding; empty fields: none.
type spoolKeysAnswer struct {
	Key       string `json:"key,omitempty"`
	Previous  string `json:"previous,omitempty"`
	Signature string `json:"sig,omitempty"`
	// Earlier: the statements before this one, newest first, each of
	// the same form (Earlier[0].Key is Previous); absent: none. A device
	// of a release before it reads the first statement alone.
	Earlier []spoolKeysStatement `json:"earlier,omitempty"`
}

// spoolKeysStatement is one statement of spoolKeysAnswer.Earlier.
type spoolKeysStatement struct {
	Key       string `json:"key"`
	Previous  string `json:"previous"`
	Signature string `json:"sig"`
}

func (s *Server) spoolKeys(w http.ResponseWriter, r *http.Request, c *caller) {
	var res spoolKeysAnswer
	if s.cfg.SpoolKey.Ed25519 != nil {
		res.Key = s.cfg.SpoolKey.String()
	}
	if sc := s.cfg.SpoolKeySuccession; sc != nil && s.cfg.SpoolKey.Ed25519 != nil && sc.Key.Equal(s.cfg.SpoolKey) {
		res.Previous = sc.Previous.String()
		res.Signature = base64.RawURLEncoding.EncodeToString(sc.Signature)
		for i, e := range s.cfg.SpoolKeyEarlier {
			if i >= spool.MaxKeyChain-1 {
				break
			}
			res.Earlier = append(res.Earlier, spoolKeysStatement{Key: e.Key.String(), Previous: e.Previous.String(),
				Signature: base64.RawURLEncoding.EncodeToString(e.Signature)})
		}
	}
	writeJSON(w, http.StatusOK, res)
}

// appendResult is the JSON answer to an append.
type appendResult struct {
	First uint64 `json:"first"`
	Count int    `json:"count"`
}

func (s *Server) appendEntries(w http.ResponseWriter, r *http.Request, c *caller) {
	if ct := r.Header.Get("Content-Type"); ct != ContentType {
		s.fail(w, r, errorf(ErrUnsupportedType, "Content-Type must be %s", ContentType))
		return
	}
	if c.repeat {
		s.appendedBefore(w, r, c)
		return
	}
	if !c.spool && r.URL.Query().Has(QueryDelivery) {
		// A user's key where the spool's belongs (cspool deliver's
		// --spool-key and --user-key swapped): taken for the user's own
		// append, the message would be sealed to whatever --user-key
		// named, and stuck.
		s.fail(w, r, authErr(ErrForbidden, AuthReasonDeliveryKey,
			"a delivery must be signed with the spool's key, and this one was signed with the key of user %q: --spool-key names that user's secret key (were --spool-key and --user-key swapped?); nothing appended", c.user))
		return
	}
	if r.ContentLength > doneCheckAbove && s.doneBefore(w, r, c) {
		return
	}
	// A delivery's recipient is looked up before its body is read.
	var to *keys.PublicKey
	if c.spool {
		k, err := s.recipient(r.Context(), c.user)
		if err != nil {
			if errors.Is(err, keys.ErrUnknownUser) {
				w.Header().Set(HeaderUnknownUser, c.user)
				err = &srvError{kind: ErrNotFound, msg: fmt.Sprintf("no such user %q: nothing appended", c.user), detail: err}
			}
			s.fail(w, r, err)
			return
		}
		to = k
	}
	// The body is held from its read to the store's answer: it takes its
	// size from the appends' budget first, so that concurrent large
	// appends wait instead of taking the server's memory. A body whose
	// length is not given (chunked, as a proxy that re-chunks sends every
	// request) takes what it has read, as it grows: taking the limit for
	// it, a few bytes on their way held a key's whole share and a quarter
	// of the budget (TestChunkedAppendHoldsWhatItRead).
	ah := &appendHold{s: s, ctx: r.Context(), key: c.key, own: !c.spool}
	defer ah.release()
	var grow func(int64) error
	switch {
	case r.ContentLength > s.cfg.MaxBody:
		// refused unread below
	case r.ContentLength >= 0:
		if err := ah.growTo(r.ContentLength); err != nil {
			s.fail(w, r, err)
			return
		}
	default:
		if err := ah.growTo(min(chunkedFirstHold, s.cfg.MaxBody)); err != nil {
			s.fail(w, r, err)
			return
		}
		grow = func(n int64) error { return ah.growTo(min(n, s.cfg.MaxBody)) }
	}
	// Once the append holds its share, each piece of its body must come
	// within WriteStall, as a checkpoint upload's must: a stalled append
	// lets its share go then, not at the HTTP server's read timeout. Four
	// users' keys that each stalled an append of the largest body held the
	// whole budget for 10 minutes, and every other append, every delivery
	// over HTTP included, got 503 meanwhile (TestStalledAppendsOfFourKeys).
	sb := newStallBody(w, r.Body, s.cfg.WriteStall)
	defer sb.stop()
	r.Body = sb
	sb.start()
	body, err := readSignedBody(w, r, c, s.cfg.MaxBody, ah.held, grow)
	sb.stop()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	batch, err := DecodeBatch(body, s.cfg.MaxBatchCount)
	if err != nil {
		s.fail(w, r, errorf(ErrBadRequest, "decoding batch: %v", err))
		return
	}
	if to != nil {
		if err := checkSealedTo(batch, c.user, *to); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	onHead, head, err := parseIfHead(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	start := time.Now()
	var first uint64
	var repeat bool
	quotas, limited := s.cfg.Store.(spool.Quotas)
	ownLimit := int64(0)
	if limited && !c.spool && s.cfg.Quota > 0 && s.cfg.OwnMargin > 0 {
		ownLimit = s.cfg.Quota + s.cfg.OwnMargin
	}
	limited = limited && c.spool && s.cfg.Quota > 0
	if onHead && c.spool {
		s.fail(w, r, errorf(ErrBadRequest, "if_head is for a user's own appends, not for deliveries"))
		return
	}
	var ha spool.HeadAppender
	if onHead && !c.onced {
		var ok bool
		if ha, ok = s.cfg.Store.(spool.HeadAppender); !ok {
			s.fail(w, r, errorf(ErrNotImplemented, "this store cannot append on a condition"))
			return
		}
	}
	appendTo := func(ownLimit int64) {
		switch {
		case c.onced:
			// Recorded with the append, so that the same request
			// reaching another process on this store (a balancer's
			// retry) appends nothing and gets the same answer.
			limit := ownLimit
			if limited {
				limit = s.cfg.Quota
			}
			first, repeat, err = s.cfg.Store.(spool.OnceAppender).AppendOnce(r.Context(), c.user, c.once, limit, batch)
			info(r).repeat = repeat
		case limited:
			first, err = quotas.AppendWithin(r.Context(), c.user, s.cfg.Quota, batch)
		case onHead:
			if ownLimit > 0 {
				err = ownWithin(r.Context(), quotas, c.user, ownLimit, batch)
			}
			if err == nil {
				first, err = ha.AppendAt(r.Context(), c.user, head, batch)
			}
		case ownLimit > 0:
			first, err = quotas.AppendWithin(r.Context(), c.user, ownLimit, batch)
		default:
			first, err = s.cfg.Store.Append(r.Context(), c.user, batch)
		}
	}
	appendTo(ownLimit)
	var refused *spool.OverQuotaError
	if ownLimit > 0 && errors.As(err, &refused) {
		// A log already past the quota and the margin (the quota
		// lowered below it) takes the margin again from the least it
		// has held since (ownFloors), so that its deletes are taken.
		if limit, ok := s.ownFloor.limit(c.user, ownLimit, s.cfg.OwnMargin, refused.Usage, refused.Size); ok {
			appendTo(limit)
		}
	}
	var moved *spool.HeadMovedError
	if errors.As(err, &moved) {
		w.Header().Set("Cspool-Head", strconv.FormatUint(moved.Head, 10))
		s.fail(w, r, errorf(ErrConflict, "the log's head is %d, not %d: nothing appended", moved.Head, head))
		return
	}
	s.cfg.Metrics.StoreAppend(time.Since(start), err)
	var over *spool.OverQuotaError
	if errors.As(err, &over) {
		s.fail(w, r, errorf(ErrOverQuota, "the log of %q is over its quota (%d of %d bytes; %d more asked): nothing appended",
			c.user, over.Usage, over.Limit, over.Size))
		return
	}
	if errors.Is(err, spool.ErrOnceReused) {
		s.fail(w, r, replayed())
		return
	}
	if err != nil {
		s.fail(w, r, storeError("appending entries", err))
		return
	}
	writeJSON(w, http.StatusOK, appendResult{First: first, Count: len(batch)})
}

// appendedBefore answers an append whose nonce this process accepted
// before with the answer its append got, from the store's record, without
// reading its body: the record's digest is that of the whole signed
// request, body hash included. If the first is still being appended here,
// it waits for its answer first. A request the store holds no record of
// (its append failed) is refused as a replay, as before: nothing is
// appended.
func (s *Server) appendedBefore(w http.ResponseWriter, r *http.Request, c *caller) {
	s.onceMu.Lock()
	done := s.inflight[c.once.ID]
	s.onceMu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-r.Context().Done():
			s.fail(w, r, &srvError{kind: ErrUnavailable, msg: "waiting for the first copy of the append", detail: r.Context().Err()})
			return
		}
	}
	first, count, err := s.cfg.Store.(spool.OnceAppender).Appended(r.Context(), c.once)
	switch {
	case errors.Is(err, spool.ErrNotRecorded), errors.Is(err, spool.ErrOnceReused):
		s.fail(w, r, replayed())
	case err != nil:
		s.fail(w, r, storeError("looking up an append", err))
	default:
		info(r).repeat = true
		writeJSON(w, http.StatusOK, appendResult{First: first, Count: count})
	}
}

// doneCheckAbove is the Content-Length above which an append, or a
// checkpoint upload, first asks the store whether it was carried out
// already (doneBefore, checkpointDone): one that holds less costs little
// held, and needs no question more.
const doneCheckAbove = chunkedFirstHold

// doneBefore answers, before its body is read, an append that the store
// shows carried out already, and tells whether it did: one without
// if_head whose record the store keeps (from another process on the
// store: this one's own copies are repeats, appendedBefore), with its
// first answer; one whose if_head the head has passed, with 409. Only a
// copy of a request can be either: a balancer's retry, or a captured
// request sent again to a process that has not seen its nonce. Its
// Content-Length is not signed, and its body's hash is checked only once
// it has been read: a copy whose body came as slowly as the server allows
// held its Content-Length of the appends' memory until then (the spool
// key's copies all of it, a user's a quarter), so that an outsider with
// four captured deliveries made every append and delivery to that process
// wait and get 503 (TestReplayedCopyOfDoneRequestHoldsNothing).
func (s *Server) doneBefore(w http.ResponseWriter, r *http.Request, c *caller) bool {
	onHead, head, err := parseIfHead(r)
	switch {
	case err != nil:
		return false // refused as before, once its body is read
	case c.onced:
		first, count, err := s.cfg.Store.(spool.OnceAppender).Appended(r.Context(), c.once)
		switch {
		case errors.Is(err, spool.ErrOnceReused):
			s.fail(w, r, replayed())
			return true
		case err != nil:
			return false // not recorded (or the store failing): appended as before
		}
		info(r).repeat = true
		closeUnread(w)
		writeJSON(w, http.StatusOK, appendResult{First: first, Count: count})
		return true
	case onHead && !c.spool:
		h, err := s.cfg.Store.Head(r.Context(), c.user)
		if err != nil || h <= head {
			return false
		}
		// The head only grows: the append can only be refused.
		w.Header().Set("Cspool-Head", strconv.FormatUint(h, 10))
		s.fail(w, r, errorf(ErrConflict, "the log's head is %d, not %d: nothing appended", h, head))
		return true
	}
	return false
}

// closeUnread ends the connection with an answer given before the
// request's body was read, and waits for that body no more than a
// refusal's (fail).
func closeUnread(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(refusedBodyGrace))
}

// recipient returns the key a delivery to user must be sealed to, nil when
// there is none to check against (test mode, a name nobody registered), or
// an error wrapping keys.ErrUnknownUser for a name that is no user.
func (s *Server) recipient(ctx context.Context, user string) (*keys.PublicKey, error) {
	k, err := s.cfg.Users.Lookup(ctx, user)
	switch {
	case err == nil:
		return &k, nil
	case errors.Is(err, userdb.ErrUnclaimed):
		return nil, nil
	case errors.Is(err, keys.ErrUnknownUser):
		return nil, err
	}
	return nil, usersError(err, user)
}

// checkSealedTo refuses a batch with an entry that is not sealed to the
// user's key, as far as the spool can tell without a secret: the header's
// recipient key id, its version and the length (docs/FORMAT.md section 2).
// Such an entry is one the user's devices could never open: a delivery
// made with a stale or mixed-up public key.
func checkSealedTo(batch [][]byte, user string, to keys.PublicKey) error {
	for i, e := range batch {
		if err := entry.CheckSealedTo(e, to); err != nil {
			return &srvError{kind: ErrWrongKey, msg: fmt.Sprintf(
				"entry %d of %d is not sealed to the key registered for %q (key id %x): %v; nothing appended",
				i+1, len(batch), user, to.KeyID(), err)}
		}
	}
	return nil
}

// parseIfHead reads the optional if_head parameter of an append: the head
// the log must have for the batch to be appended (docs/API.md §4).
func parseIfHead(r *http.Request) (bool, uint64, error) {
	v, ok := r.URL.Query()["if_head"]
	if !ok {
		return false, 0, nil
	}
	h, err := strconv.ParseUint(v[0], 10, 64)
	if err != nil || len(v) != 1 || strconv.FormatUint(h, 10) != v[0] {
		return false, 0, errorf(ErrBadRequest, "if_head=%q: want one decimal integer", v[0])
	}
	return true, h, nil
}

// readSignedBody reads the whole body, refusing more than limit bytes and
// a body other than the one the caller's signature covers. grow, when not
// nil, is readBody's.
func readSignedBody(w http.ResponseWriter, r *http.Request, c *caller, limit, held int64, grow func(int64) error) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errorf(ErrTooLarge, "body of %d bytes exceeds the limit of %d", r.ContentLength, limit)
	}
	body, err := readBody(w, r, limit, held, grow)
	if err != nil {
		return nil, err
	}
	if sha256.Sum256(body) != c.bodyHash {
		// A captured request with another body: anyone can send it.
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonBodyHash, "body does not match the signed hash"))
	}
	return body, nil
}

// chunkedFirstHold is what an append of unknown length takes from the
// budgets before its first byte is read; it takes more as its body
// grows.
const chunkedFirstHold = 64 << 10

// appendHold is what one append holds of the appends' budget and, for a
// user's key (own), of its key's share.
type appendHold struct {
	s    *Server
	ctx  context.Context
	key  keys.PublicKey
	own  bool
	held int64
}

// growTo takes from the budgets what n bytes need beyond those held: the
// key's share at once (else 429), the budget waiting up to CheckpointWait
// for room (else 503).
func (h *appendHold) growTo(n int64) error {
	more := n - h.held
	if more <= 0 {
		return nil
	}
	s := h.s
	if h.own && !s.holdKeyAppend(h.key, more) {
		s.cfg.Metrics.AppendRefused(AppendRefusedKeyShare)
		return &srvError{kind: ErrTooManyRequests, retryAfter: s.cfg.RetryAfter,
			msg: fmt.Sprintf("this key's appends in progress hold their share of the server's memory (%d bytes): try again once they are done", s.keyAppendShare())}
	}
	if !s.holdAppend(h.ctx, more) {
		if h.own {
			s.releaseKeyAppend(h.key, more)
		}
		s.cfg.Metrics.AppendRefused(AppendRefusedMemory)
		return &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
			msg: fmt.Sprintf("too many appends at once: no room for %d bytes in %d; try again later", n, s.cfg.AppendMemory)}
	}
	h.held = n
	return nil
}

// release gives back all that h holds.
func (h *appendHold) release() {
	if h.held == 0 {
		return
	}
	if h.own {
		h.s.releaseKeyAppend(h.key, h.held)
	}
	h.s.apMem.release(h.held)
	h.held = 0
}

// holdAppend takes n bytes from the appends' budget, waiting up to
// CheckpointWait for room.
func (s *Server) holdAppend(ctx context.Context, n int64) bool {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.CheckpointWait, 0))
	defer cancel()
	return s.apMem.acquire(ctx, n)
}

// keyAppendShare is the most append bytes one user's key may hold at once:
// a quarter of AppendMemory, at least MaxBody.
func (s *Server) keyAppendShare() int64 {
	return max(s.cfg.AppendMemory/4, s.cfg.MaxBody)
}

// holdKeyAppend takes n bytes from key's share of the appends' budget, at
// once or not at all.
func (s *Server) holdKeyAppend(key keys.PublicKey, n int64) bool {
	id := key.KeyID()
	s.apKeysMu.Lock()
	defer s.apKeysMu.Unlock()
	if s.apKeys[id]+n > s.keyAppendShare() {
		return false
	}
	s.apKeys[id] += n
	return true
}

// releaseKeyAppend gives back n bytes taken by holdKeyAppend.
func (s *Server) releaseKeyAppend(key keys.PublicKey, n int64) {
	id := key.KeyID()
	s.apKeysMu.Lock()
	defer s.apKeysMu.Unlock()
	if s.apKeys[id] -= n; s.apKeys[id] <= 0 {
		delete(s.apKeys, id)
	}
}

// readBody reads the whole body, refusing more than limit bytes. With
// grow nil the body's room is held already (its Content-Length); else the
// body's length is not given, held bytes are held for it, and grow(n) is
// called to hold n before the buffer grows to n bytes (its error is
// returned).
func readBody(w http.ResponseWriter, r *http.Request, limit, held int64, grow func(int64) error) ([]byte, error) {
	size := int64(512)
	switch {
	case grow != nil:
		size = max(held, 512)
	case r.ContentLength > 0:
		size = r.ContentLength + 1 // +1: io.ReadAll sees EOF without growing
	}
	buf := make([]byte, 0, size)
	body := http.MaxBytesReader(w, r.Body, limit)
	for {
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, errorf(ErrTooLarge, "body exceeds the limit of %d bytes", limit)
		}
		if err != nil {
			return nil, errorf(ErrBadRequest, "reading body: %v", err)
		}
		if len(buf) == cap(buf) {
			if grow == nil {
				buf = append(buf, 0)[:len(buf)]
				continue
			}
			// Twice the room, up to one byte past the limit, which
			// MaxBytesReader then refuses.
			n := min(2*int64(cap(buf)), limit+1)
			if err := grow(n); err != nil {
				return nil, err
			}
			buf = append(make([]byte, 0, n), buf...)
		}
	}
}

// readParams are the query parameters of a read.
type readParams struct {
	after    uint64
	maxCount int
	maxBytes int64
	wait     time.Duration
	reads    int // the highest entry format the device reads (readsUpTo); 0: any
}

// beyond reports whether e is in an entry format newer than the device
// reads: the response ends before it, and a read that would start with it
// is refused (heldBack), so that the device stops there instead of passing
// the entry by as one of an unknown version, which loses its message on
// that device for good. Once upgraded, the device reads on from there.
func (p readParams) beyond(e spool.Entry) bool {
	if p.reads == 0 {
		return false
	}
	v, ok := entry.VersionOf(e.Data)
	return ok && int(v) > p.reads
}

// heldBack is the refusal (400) of a read whose first entry is beyond the
// device's formats.
func heldBack(e spool.Entry, reads int) error {
	v, _ := entry.VersionOf(e.Data)
	return errorf(ErrBadRequest, "the next entry, at position %d, is in entry format %d, %s "+
		"(it says %s=%d, up to format %d): upgrade cspool on this device; it reads on from there, nothing is lost",
		e.Pos, v, heldBackText, ReadsParam, reads, reads)
}

// heldBackText is in heldBack's refusal, which Hint recognises.
const heldBackText = "which this device does not say it reads"

func (s *Server) parseRead(r *http.Request) (readParams, error) {
	p := readParams{maxCount: s.cfg.DefaultReadCount, maxBytes: s.cfg.DefaultReadBytes}
	q := r.URL.Query()
	num := func(name string, least uint64) (uint64, bool, error) {
		v := q.Get(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n < least {
			return 0, false, errorf(ErrBadRequest, "%s=%q: want an integer >= %d", name, v, least)
		}
		return n, true, nil
	}
	after, _, err := num("after", 0)
	if err != nil {
		return p, err
	}
	p.after = after
	if n, ok, err := num("max_count", 1); err != nil {
		return p, err
	} else if ok {
		p.maxCount = int(min(n, uint64(s.cfg.MaxReadCount)))
	}
	if n, ok, err := num("max_bytes", 0); err != nil {
		return p, err
	} else if ok {
		p.maxBytes = int64(min(n, uint64(s.cfg.MaxReadBytes)))
	}
	if n, ok, err := num("wait", 0); err != nil {
		return p, err
	} else if ok {
		p.wait = min(time.Duration(min(n, 1<<20))*time.Second, s.cfg.MaxWait)
	}
	p.maxCount = min(p.maxCount, s.cfg.MaxReadCount)
	p.maxBytes = min(p.maxBytes, s.cfg.MaxReadBytes)
	return p, nil
}

func (s *Server) read(w http.ResponseWriter, r *http.Request, c *caller) {
	p, err := s.parseRead(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !c.spool {
		p.reads = readsUpTo(r)
		s.noteReader(r.Context(), c.user, p.reads)
	}
	if p.wait > 0 && s.park(w, r, c.user, p) {
		// Answered from its own goroutine, at once if the log is already
		// past p.after (the wait's own read of the head says so).
		return
	}
	ctx := r.Context()
	// The entries are held from the store's read until the answer is
	// written: the read holds one of its key's places and their bytes
	// for that (readHold).
	h := &readHold{s: s, key: c.key.KeyID()}
	defer h.release()
	// A device that is up to date renews its long-poll with nothing to
	// read: the tip says so without reading entries.
	tip, err := s.tip(ctx, c.user)
	var entries []spool.Entry
	if err == nil && tip.Head > p.after {
		entries, err = h.first(ctx, c.user, p)
	}
	var known *spool.Tip
	if err == nil && len(entries) == 0 && p.wait > 0 {
		h.release() // not while it waits
		var moved, ok bool
		var waited spool.Tip
		if moved, waited, ok, err = s.wait(ctx, c.user, p.after, p.wait); err == nil && moved {
			if err = s.stillAllowed(ctx, c.user, c.key); err == nil {
				entries, err = h.first(ctx, c.user, p)
			}
		} else if ok {
			known = &waited
		}
	}
	s.answerRead(ctx, w, r, c.user, p, entries, h, known, err)
}

// stillAllowed asks the users database again, once a long-poll's wait has
// ended with entries to send, whether key may still read user's log: the
// users file may have been reloaded while it waited (a stolen device's key
// replaced). Before, a read waiting when its key was replaced was answered
// with the entries appended after the change (docs/API.md §3, "Long-poll").
// Only a user's key waits (the spool key may not read), and a wait that
// ends with nothing to send tells nothing the request did not already, so
// it is not asked again then.
func (s *Server) stillAllowed(ctx context.Context, user string, key keys.PublicKey) error {
	if err := s.cfg.Users.Check(ctx, user, key); err != nil {
		return usersError(err, user)
	}
	return nil
}

// holdRead takes one of the places of key's reads that hold entries
// (Config.MaxReadsPerKey), waiting up to CheckpointWait for one to end, or
// until ctx is done; it reports whether it took one. A read's entries
// stay in the server's memory until its answer is written, which a client
// that does not take it holds for WriteStall (each 256 KiB): before, one
// user's key held as many reads as its address had connections (64), each
// with a first entry of up to MaxBody, and the server's memory grew by
// 740 MB for 30 reads of a 20 MB entry (TestReadsOfOneKeyBounded).
func (s *Server) holdRead(ctx context.Context, key [8]byte) bool {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.CheckpointWait, 0))
	defer cancel()
	s.rdKeysMu.Lock()
	defer s.rdKeysMu.Unlock()
	for s.rdKeys[key] >= s.cfg.MaxReadsPerKey {
		freed := s.rdFreed
		s.rdKeysMu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
		}
		s.rdKeysMu.Lock()
		if ctx.Err() != nil && s.rdKeys[key] >= s.cfg.MaxReadsPerKey {
			return false
		}
	}
	s.rdKeys[key]++
	return true
}

// releaseRead gives back a place taken by holdRead.
func (s *Server) releaseRead(key [8]byte) {
	s.rdKeysMu.Lock()
	defer s.rdKeysMu.Unlock()
	if s.rdKeys[key]--; s.rdKeys[key] <= 0 {
		delete(s.rdKeys, key)
	}
	close(s.rdFreed)
	s.rdFreed = make(chan struct{})
}

// tooManyReads refuses a read that found no place among its key's
// (holdRead).
func (s *Server) tooManyReads() *srvError {
	return &srvError{kind: ErrTooManyRequests, retryAfter: s.cfg.RetryAfter,
		msg: fmt.Sprintf("this key's reads in progress (%d, the limit) hold their entries: try again once they are done", s.cfg.MaxReadsPerKey)}
}

// answerRead answers a read with entries (read after p.after, possibly
// after a wait, held by h) or err: it reads the tip again, sets the
// headers and streams the entries. A long-poll that ended with nothing
// new passes the tip its wait read last as known (spool.TipWaiter), which
// answers it without reading the tip again.
func (s *Server) answerRead(ctx context.Context, w http.ResponseWriter, r *http.Request, user string, p readParams, entries []spool.Entry, h *readHold, known *spool.Tip, err error) {
	var tip spool.Tip
	// The head and the checkpoint are read again after the entries: a
	// compaction that deleted any of them committed before, so the header
	// reports it. The hash at the head is fixed once the head exists, and
	// every entry sent is at or before it. With no entries to send and a
	// known tip, that tip is the answer: no head beyond p.after was
	// announced since the wait read it.
	switch {
	case err == nil && known != nil && len(entries) == 0:
		tip = *known
	case err == nil:
		tip, err = s.tip(ctx, user)
	}
	head, cp := tip.Head, tip.Checkpoint
	var chainStart, chainHead string
	var chained bool
	if err == nil {
		chainStart, chainHead, chained, err = s.chainHeaders(ctx, user, p.after, tip)
	}
	if err != nil {
		s.fail(w, r, storeError("reading entries", err))
		return
	}
	if len(entries) > 0 && p.beyond(entries[0]) {
		s.fail(w, r, heldBack(entries[0], p.reads))
		return
	}
	if chained {
		w.Header().Set(HeaderChainStart, chainStart)
		w.Header().Set(HeaderChainHead, chainHead)
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Cspool-Head", strconv.FormatUint(head, 10))
	w.Header().Set("Cspool-Checkpoint", strconv.FormatUint(cp, 10))
	if p.reads != 0 {
		// A device's read (the spool's own say nothing of formats).
		w.Header().Set(HeaderReaders, strconv.Itoa(s.ReadersFormat(ctx, user)))
	}
	s.setQuota(ctx, w, user)
	w.WriteHeader(http.StatusOK)
	if err := s.stream(ctx, w, user, p, head, cp, entries, h); err != nil {
		// The status is sent; the missing end marker tells the client.
		info(r).err = err
	}
}

// wait blocks until the log has an entry after pos (moved), the wait ends,
// or the server shuts down (spool.WaitFor), within the user's share of
// long-polls. Only store failures and a gone client are errors. When the
// wait ended without the head moving there is nothing new to read: the
// read answers with the head alone, which is what a waiting device renews
// its long-poll for, every few tens of seconds.
func (s *Server) wait(ctx context.Context, user string, after uint64, d time.Duration) (moved bool, tip spool.Tip, ok bool, err error) {
	if !s.acquirePoll(user) {
		return false, tip, false, &srvError{kind: ErrTooManyRequests, sampled: true,
			msg: fmt.Sprintf("%d reads of %s are waiting already (limit): try again later", s.cfg.MaxLongPolls, user)}
	}
	defer s.polls.release(user)
	s.cfg.Metrics.LongPoll(1)
	defer s.cfg.Metrics.LongPoll(-1)
	return spool.WaitForTip(ctx, s.cfg.Store, user, after, slotted(time.Now(), d), s.stopping)
}

// waitSlot is the grain on which long-polls end when their wait runs out.
const waitSlot = time.Second

// slotted returns how long a long-poll that starts at now and may wait up
// to d waits: until now+d rounded down to a whole waitSlot of the clock,
// when d is at least two slots; d otherwise. The waits that run out
// within one slot then end together, on one wake-up of the server, and
// their renewals come back together: with many devices the server's cost
// of a renewal is mostly waking up for it (the timer, the scheduler's
// threads, the network poller), not the request. A wait ends at most one
// slot earlier than asked, never later.
func slotted(now time.Time, d time.Duration) time.Duration {
	if d < 2*waitSlot {
		return d
	}
	return now.Add(d).Truncate(waitSlot).Sub(now)
}

// firstChunkBytes bounds the first store read of a response: the answer
// starts once it is read, and each next chunk may hold twice as much as
// the one before, up to Config.ChunkBytes. A device opens the entries of a
// read as they arrive (syncer, ahead.go), so the spool's time to read the
// first chunk is time its cores wait: with one read of 2 MiB it was 14 ms
// of the 20 a read of 192 entries of 10 KB took, a first sync's reads
// ahead one after the other; 256 KiB is read in about 2 ms.
const firstChunkBytes = 256 << 10

// firstChunk is the bound of a response's first store read when the read
// asks for maxBytes.
func (s *Server) firstChunk(maxBytes int64) int64 {
	return min(maxBytes, s.cfg.ChunkBytes, firstChunkBytes)
}

// stream writes entries, then further chunks read from the store, up to the
// limits and never past head, then the end marker. The next chunk is read
// while the current one is written, so the store and the network work at
// the same time; at most two chunks are in memory. The first chunk is
// small (firstChunk) and each next one bounded by twice the one before, up
// to Config.ChunkBytes.
//
// With a store that reads into a given buffer (spool.IntoReader), the
// further chunks are read into two buffers in turn (h's chunkBufs, the
// first chunk's in the second), each used again once the chunk in it is
// written (the chunk before the one being read), and given back to
// s.chunks at the end unless larger than Config.ChunkBytes.
//
// h holds the entries' bytes (readHold) and, before each further read,
// takes its bound too, at once: with no room the answer ends after the
// chunk being written, and the client reads on from there.
//
// cp is the checkpoint position sent in the header. After reading each
// further chunk, stream reads the checkpoint position again; if it moved,
// a compaction may have deleted entries of that chunk, so the chunk is
// dropped and the response ends early: the client's next read reports the
// new checkpoint.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, user string, p readParams, head, cp uint64, entries []spool.Entry, h *readHold) error {
	bw := s.spareBuffer.Swap(nil)
	if bw == nil {
		bw, _ = s.buffers.Get().(*bufio.Writer)
	}
	if bw == nil {
		bw = bufio.NewWriterSize(w, 64<<10)
	}
	bw.Reset(w)
	defer func() {
		bw.Reset(nil)
		if !s.spareBuffer.CompareAndSwap(nil, bw) {
			s.buffers.Put(bw)
		}
	}()
	ew := &entryWriter{w: bw}
	into, _ := s.cfg.Store.(spool.IntoReader)
	// into's buffers; the chunk read goes in bufs[turn]. The first
	// chunk, entries, may be in bufs[1] (readHold.read): the first
	// further chunk goes in bufs[0], and bufs[1] is read into again only
	// once entries are written.
	var bufs *chunkBufs
	turn := 0
	if into != nil {
		bufs = h.buffers()
	}
	defer h.putBuffers()
	count, size := 0, int64(0)
	bound := s.firstChunk(p.maxBytes) // the store read's bound for entries
	held := h.held                    // what h holds for the chunk being written
	type chunk struct {
		entries []spool.Entry
		moved   bool // the checkpoint moved past cp: entries may lack some
		err     error
	}
	for {
		// Plan the next chunk from what this one will write.
		n, sz, last, full := count, size, p.after, false
		for _, e := range entries {
			if e.Pos > head || n == p.maxCount || (n > 0 && sz+int64(len(e.Data)) > p.maxBytes) || p.beyond(e) {
				full = true
				break
			}
			n++
			sz += int64(len(e.Data))
			last = e.Pos
		}
		var next chan chunk
		var b int64 // the next chunk's bound, held for it before its read
		if !full && len(entries) > 0 && last < head && n < p.maxCount && sz < p.maxBytes {
			bound = min(2*bound, s.cfg.ChunkBytes)
			b = min(p.maxBytes-sz, bound)
		}
		// With no room for the next chunk at once, the answer ends with
		// this one, and the client reads on.
		if b > 0 && h.growTo(ctx, held+b, false) == roomTaken {
			next = make(chan chunk, 1)
			var buf *[]byte
			if into != nil {
				buf = &bufs[turn]
				turn = 1 - turn
			}
			if into != nil && int64(cap(*buf)) < b {
				// Room for the chunk's bound, not its exact size: the
				// next response's chunks fit in it too.
				*buf = make([]byte, 0, b)
			}
			go func() {
				var es []spool.Entry
				var err error
				if into != nil {
					es, *buf, err = into.ReadInto(ctx, user, last, p.maxCount-n, b, *buf)
				} else {
					es, err = s.cfg.Store.Read(ctx, user, last, p.maxCount-n, b)
				}
				var now uint64
				if err == nil {
					now, err = s.checkpointPos(ctx, user)
				}
				next <- chunk{es, now != cp, err}
			}()
		}
		for _, e := range entries[:n-count] {
			if err := ew.write(e.Pos, e.Data); err != nil {
				if next != nil {
					<-next
				}
				return err
			}
		}
		count, size, p.after = n, sz, last
		if next == nil {
			return ew.end()
		}
		c := <-next
		if c.err != nil {
			return c.err
		}
		if c.moved {
			return ew.end()
		}
		// The chunk written is let go, a buffer grown for an entry
		// larger than ChunkBytes with it, and the chunk read holds the
		// larger of its bound (its buffer's room) and its entries: an
		// entry larger than the bound, which the store reads whole, ends
		// the answer before it when there is no room for it at once.
		got := max(b, entriesSize(c.entries))
		if got > b && h.growTo(ctx, held+got, false) != roomTaken {
			return ew.end()
		}
		if into != nil && int64(cap(bufs[turn])) > s.cfg.ChunkBytes {
			bufs[turn] = nil
		}
		h.shrinkTo(got)
		held = got
		entries = c.entries
	}
}

// ownFloors lets a user's own appends past the quota and its margin
// (Config.OwnMargin) when the log held more than that already before
// them: an operator lowered the quota below what the log holds, or a
// checkpoint upload (not counted against the limit) took it past. The
// spool cannot tell a delete from an append that adds mail (FORMAT.md §2),
// so without this such a log refused its deletes too, and its mail could
// never be deleted to make room. Such a log may take OwnMargin past the
// least it has been seen to hold since it was first refused here (its
// floor), which only goes down as checkpoints let the spool compact it;
// so whoever holds the user's key takes the disk no further than before
// plus one margin (one for each start of the server, which keeps the
// floors in memory). A floor is dropped when a refusal finds the log
// within the limit again, or when the limit changes.
type ownFloors struct {
	mu sync.Mutex
	m  map[string]ownFloor
}

type ownFloor struct{ limit, floor int64 }

// limit returns the limit to try user's own append of size bytes again
// with, after the one with limit (the quota and margin) refused it at
// usage, and whether to.
func (f *ownFloors) limit(user string, limit, margin, usage, size int64) (int64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if usage <= limit {
		delete(f.m, user)
		return 0, false
	}
	if f.m == nil {
		f.m = map[string]ownFloor{}
	}
	e, ok := f.m[user]
	if !ok || e.limit != limit {
		e = ownFloor{limit: limit, floor: usage}
	}
	e.floor = min(e.floor, usage)
	f.m[user] = e
	if usage+size > e.floor+margin {
		return 0, false
	}
	return e.floor + margin, true
}

// ownWithin checks a user's conditional append against limit (the quota
// and Config.OwnMargin) before it is made: the usage, then the append on
// the head the device names. Any append between the two moves the head,
// and the conditional append then appends nothing; a compaction between
// them only lowers the usage. So the log never goes past limit this way,
// as with AppendWithin's one step.
func ownWithin(ctx context.Context, q spool.Quotas, user string, limit int64, batch [][]byte) error {
	u, err := q.Usage(ctx, user)
	if err != nil {
		return err
	}
	var size int64
	for _, b := range batch {
		size += int64(len(b))
	}
	if u+size > limit {
		return &spool.OverQuotaError{Usage: u, Size: size, Limit: limit}
	}
	return nil
}
