package api

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/spool"
)

// compactStats is the JSON answer to a checkpoint upload.
type compactStats struct {
	Deleted int   `json:"deleted"`
	Bytes   int64 `json:"bytes"`
	Kept    int   `json:"kept"`
}

// checkpointPos returns the position of user's newest checkpoint, 0 if
// there is none or the store does not compact. A store without
// spool.CheckpointPositioner makes it load the whole checkpoint.
func (s *Server) checkpointPos(ctx context.Context, user string) (uint64, error) {
	return spool.CheckpointPos(ctx, s.cfg.Store, user)
}

// compactor returns the store as a spool.Compactor, or the 501 error.
func (s *Server) compactor() (spool.Compactor, error) {
	c, ok := s.cfg.Store.(spool.Compactor)
	if !ok {
		return nil, errorf(ErrNotImplemented, "this server's store does not keep checkpoints")
	}
	return c, nil
}

func (s *Server) putCheckpoint(w http.ResponseWriter, r *http.Request, c *caller) {
	comp, err := s.compactor()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != CheckpointContentType {
		s.fail(w, r, errorf(ErrUnsupportedType, "Content-Type must be %s", CheckpointContentType))
		return
	}
	v := r.URL.Query().Get("pos")
	pos, err := strconv.ParseUint(v, 10, 64)
	if err != nil || pos == 0 {
		s.fail(w, r, errorf(ErrBadRequest, "pos=%q: want an integer >= 1", v))
		return
	}
	if r.ContentLength > doneCheckAbove && s.checkpointDone(w, r, c, pos) {
		return
	}
	if err := s.checkReads(r, c.user, pos); err != nil {
		s.fail(w, r, err)
		return
	}
	limit := s.cfg.MaxCheckpointBody
	if r.ContentLength > limit {
		s.refuseCheckpoint(w, r, errorf(ErrTooLarge, "checkpoint of %d bytes exceeds this server's limit of %d bytes", r.ContentLength, limit))
		return
	}
	h := sha256.New()
	// Once the upload holds its share of the budget, each piece of the
	// body must come within WriteStall: a stalled upload lets its share
	// go then, not at the HTTP server's read timeout.
	sb := newStallBody(w, r.Body, s.cfg.WriteStall)
	defer sb.stop()
	body := io.TeeReader(http.MaxBytesReader(w, sb, limit), h)
	// The kept count comes first: read before anything is held, it sets
	// what the decoded keep list will take.
	head, n := readKeptCount(body)
	if n > uint64(s.cfg.MaxCheckpointKeep) {
		s.refuseCheckpoint(w, r, errorf(ErrTooLarge, "checkpoint lists %d kept positions, over this server's limit of %d (one per %d bytes of its limit of %d bytes)",
			n, s.cfg.MaxCheckpointKeep, CheckpointBytesPerKept, limit))
		return
	}
	if r.ContentLength >= 0 && n > uint64(r.ContentLength) {
		n = 0 // more than the body could hold: DecodeCheckpoint refuses it
	}
	// The body and the decoded keep list are held from the body's read to
	// the store's commit: they take their size from the server's budget
	// first. A body whose length is not given (chunked, as a proxy that
	// re-chunks sends every request) takes what it has read, as it grows:
	// taking the limit for it, two uploads on their way held the whole
	// default budget (TestChunkedCheckpointHoldsWhatItRead).
	hold := min(int64(chunkedFirstHold), limit)
	if r.ContentLength >= 0 {
		hold = r.ContentLength
	}
	hold = checkpointHold(hold, int(n))
	// One upload at a time for each key: a key that opens several and
	// stalls them holds one share of the budget, not all of it.
	if !s.holdKeyTransfer(c.key, true) {
		s.fail(w, r, &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
			msg: "this key is uploading a checkpoint already; try again later"})
		return
	}
	defer s.releaseKeyTransfer(c.key, true)
	if !s.holdCheckpoint(r.Context(), hold) {
		s.cfg.Metrics.CheckpointRefused(CheckpointRefusedMemory)
		s.fail(w, r, &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
			msg: fmt.Sprintf("too many checkpoint uploads at once: no room for %d bytes in %d; try again later", hold, s.cfg.CheckpointMemory)})
		return
	}
	// Given back before the answer, so that a client that has it sees the
	// budget (and its metric) without them.
	release := sync.OnceFunc(func() { s.releaseCheckpoint(hold) })
	defer release()
	grow := func(size int64) error {
		more := checkpointHold(min(size, limit), int(n)) - hold
		if more <= 0 {
			return nil
		}
		if !s.holdCheckpoint(r.Context(), more) {
			s.cfg.Metrics.CheckpointRefused(CheckpointRefusedMemory)
			return &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
				msg: fmt.Sprintf("too many checkpoint uploads at once: no room for %d bytes in %d; try again later", hold+more, s.cfg.CheckpointMemory)}
		}
		hold += more
		return nil
	}
	sb.start()
	buf, err := readCheckpointBody(r, c, head, body, h, limit, grow)
	sb.stop()
	if err != nil {
		release()
		if se, ok := err.(*srvError); ok && se.kind == ErrTooLarge {
			s.refuseCheckpoint(w, r, err)
			return
		}
		s.fail(w, r, err)
		return
	}
	// keep is 8 bytes a kept position; data is a slice of buf.
	keep, data, err := DecodeCheckpoint(buf, s.cfg.MaxCheckpointKeep)
	if err != nil {
		release()
	}
	if errors.Is(err, errTooManyKept) {
		s.refuseCheckpoint(w, r, errorf(ErrTooLarge, "decoding checkpoint: %v", err))
		return
	}
	if err != nil {
		s.fail(w, r, errorf(ErrBadRequest, "decoding checkpoint: %v", err))
		return
	}
	st, err := comp.Compact(r.Context(), c.user, spool.Checkpoint{Pos: pos, Data: data}, keep)
	release()
	s.formats.forget(c.user)
	if err != nil {
		s.fail(w, r, storeError("storing checkpoint", err))
		return
	}
	writeJSON(w, http.StatusOK, compactStats{Deleted: st.Deleted, Bytes: st.Bytes, Kept: st.Kept})
}

// ReadsParam is the query parameter of checkpoint uploads and log reads by
// which a device says the highest entry format version it reads
// (docs/API.md §3, §5): this package's client sends entry.Newest.
const ReadsParam = "reads"

// readsUpTo is the highest entry format version r says its device reads:
// entry.Version (2) when it says none, as devices built before format 3.
func readsUpTo(r *http.Request) int {
	v, err := strconv.Atoi(r.URL.Query().Get(ReadsParam))
	if err != nil || v < entry.Version {
		return entry.Version
	}
	return v
}

// formatFirsts are the positions of the first entries of formats 3 to
// entry.Newest in a user's log, in that order; 0 for none found.
type formatFirsts [entry.Newest - entry.Version3 + 1]uint64

// checkReads refuses (403) the upload of a checkpoint at pos by a device
// that does not say it reads entry format 3 or 4 while the log holds an
// entry of that format at or before pos. Such a device could not open the
// entry (or, of format 4, would pass its command by as one of an unknown
// version),
// so its checkpoint does not hold what the entry carries, and storing it
// would delete the entry: every device would lose it. A device that reads
// it lists it if it is still needed, as any entry.
//
// An old device whose checkpoint was refused writes and uploads another at
// its next sync step, at every delivery, which its code cannot be told not
// to do; the position found is remembered (Server.formats), so that those
// uploads cost a map lookup instead of reading the log's entries up to it
// each time.
func (s *Server) checkReads(r *http.Request, user string, pos uint64) error {
	reads := readsUpTo(r)
	if reads >= entry.Newest {
		return nil
	}
	ff, ok := s.cfg.Store.(spool.FormatFinder)
	if !ok {
		return nil
	}
	// What is remembered serves only to refuse: refused wrongly (the
	// entry since deleted), an old device's checkpoint waits; let through
	// wrongly (a log begun again under the same name, a restore made
	// while the server ran), it would delete an entry of format 3 or 4.
	firsts, _ := s.formats.get(user, time.Now())
	for v := max(reads+1, entry.Version3); v <= entry.Newest; v++ {
		first := &firsts[v-entry.Version3]
		if *first == 0 || *first > pos {
			f, err := ff.FirstOfFormat(r.Context(), user, pos, byte(v))
			if err != nil {
				return storeError("checking the log's entry formats", err)
			}
			if f != 0 {
				*first = f
				s.formats.put(user, firsts, time.Now())
			}
		}
		if *first != 0 && *first <= pos {
			return errorf(ErrForbidden, "the log holds an entry of format %d at position %d, which this device does not say it reads "+
				"(%s=%d): its checkpoint would delete what it could not open; upgrade cspool on this device", v, *first, ReadsParam, v)
		}
	}
	return nil
}

// checkpointDone refuses (409), before its body is read, an upload at pos
// when the store holds a checkpoint at pos or later already, and tells
// whether it did: the upload can only be refused. A copy of an upload
// carried out before (a captured request sent again to another process on
// the store) so held the key's one upload and its Content-Length of the
// checkpoints' memory until its body, sent as slowly as the server allows,
// was read (doneBefore, TestReplayedCopyOfDoneRequestHoldsNothing).
func (s *Server) checkpointDone(w http.ResponseWriter, r *http.Request, c *caller, pos uint64) bool {
	cp, ok := s.cfg.Store.(spool.CheckpointPositioner)
	if !ok {
		return false // no cheap way to tell: refused once stored, as before
	}
	have, err := cp.CheckpointPos(r.Context(), c.user)
	if err != nil || have < pos {
		return false
	}
	s.fail(w, r, errorf(ErrConflict, "a checkpoint at position %d is stored already, at or after %d: nothing changed", have, pos))
	return true
}

// holdCheckpoint takes n bytes from the checkpoint uploads' budget, waiting
// up to CheckpointWait for room.
func (s *Server) holdCheckpoint(ctx context.Context, n int64) bool {
	wait := max(s.cfg.CheckpointWait, 0)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if !s.cpMem.acquire(ctx, n) {
		return false
	}
	s.cfg.Metrics.CheckpointHeld(n)
	return true
}

// cpTransfer names one key's checkpoint upload or download.
type cpTransfer struct {
	key [8]byte
	up  bool
}

// holdKeyTransfer marks key as uploading (up) or downloading a
// checkpoint, unless it is already; it reports whether it did. A device
// has one checkpoint to send or fetch at a time; a key with more is not
// let hold more of the budget.
func (s *Server) holdKeyTransfer(key keys.PublicKey, up bool) bool {
	t := cpTransfer{key.KeyID(), up}
	s.cpKeysMu.Lock()
	defer s.cpKeysMu.Unlock()
	if s.cpKeys[t] {
		return false
	}
	s.cpKeys[t] = true
	return true
}

// releaseKeyTransfer ends what holdKeyTransfer marked.
func (s *Server) releaseKeyTransfer(key keys.PublicKey, up bool) {
	s.cpKeysMu.Lock()
	defer s.cpKeysMu.Unlock()
	delete(s.cpKeys, cpTransfer{key.KeyID(), up})
}

// releaseCheckpoint gives back n bytes taken by holdCheckpoint.
func (s *Server) releaseCheckpoint(n int64) {
	s.cpMem.release(n)
	s.cfg.Metrics.CheckpointHeld(-n)
}

// refuseCheckpoint answers an upload refused as too large (413).
func (s *Server) refuseCheckpoint(w http.ResponseWriter, r *http.Request, err error) {
	s.cfg.Metrics.CheckpointRefused(CheckpointRefusedTooLarge)
	s.fail(w, r, err)
}

// readKeptCount reads the kept count that begins a checkpoint upload, a
// byte at a time: the bytes read, and the count, 0 if they are not a
// varint (DecodeCheckpoint then refuses the body).
func readKeptCount(body io.Reader) ([]byte, uint64) {
	head := make([]byte, 0, binary.MaxVarintLen64)
	var b [1]byte
	for len(head) < cap(head) {
		if _, err := io.ReadFull(body, b[:]); err != nil {
			break
		}
		head = append(head, b[0])
		if b[0] < 0x80 {
			break
		}
	}
	n, _, err := uvarint(head)
	if err != nil {
		return head, 0
	}
	return head, n
}

// readCheckpointBody reads a checkpoint upload into one buffer, head (read
// already) then the rest of body: of its Content-Length, or grown up to
// limit bytes when the length is unknown, calling grow(n) before the
// buffer grows to n bytes (its error is returned). body is hashed into h
// as it is read; the whole is checked against the signed hash.
func readCheckpointBody(r *http.Request, c *caller, head []byte, body io.Reader, h hash.Hash, limit int64, grow func(int64) error) ([]byte, error) {
	var buf []byte
	if n := r.ContentLength; n >= 0 {
		if int64(len(head)) > n {
			return nil, errorf(ErrBadRequest, "reading body: more than its Content-Length of %d bytes", n)
		}
		buf = make([]byte, n)
		copy(buf, head)
		if _, err := io.ReadFull(body, buf[len(head):]); err != nil {
			return nil, errorf(ErrBadRequest, "reading body: %v", err)
		}
	} else {
		buf = make([]byte, len(head), max(int64(len(head)), min(int64(64<<10), limit+1)))
		copy(buf, head)
		for {
			if len(buf) == cap(buf) {
				n := min(2*int64(cap(buf)), limit+1)
				if err := grow(n); err != nil {
					return nil, err
				}
				grown := make([]byte, len(buf), n)
				copy(grown, buf)
				buf = grown
			}
			n, err := body.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return nil, errorf(ErrTooLarge, "checkpoint exceeds this server's limit of %d bytes", limit)
			}
			if err != nil {
				return nil, errorf(ErrBadRequest, "reading body: %v", err)
			}
		}
	}
	if [sha256.Size]byte(h.Sum(nil)) != c.bodyHash {
		// A captured request with another body: anyone can send it.
		return nil, unverified(authErr(ErrUnauthenticated, AuthReasonBodyHash, "body does not match the signed hash"))
	}
	return buf, nil
}

func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request, c *caller) {
	comp, err := s.compactor()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// One download at a time for each key, its bytes taken from the
	// checkpoint budget before it is loaded: a key whose client does not
	// read its answers holds one checkpoint, for WriteStall at most without
	// progress, not one for each connection it opens.
	if !s.holdKeyTransfer(c.key, false) {
		s.fail(w, r, &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
			msg: "this key is downloading its checkpoint already; try again later"})
		return
	}
	defer s.releaseKeyTransfer(c.key, false)
	var held int64
	defer func() { s.cpMem.release(held) }()
	hold := func(n int64) bool {
		if n <= held {
			return true
		}
		ctx, cancel := context.WithTimeout(r.Context(), max(s.cfg.CheckpointWait, 0))
		ok := s.cpMem.acquire(ctx, n-held)
		cancel()
		if !ok {
			s.fail(w, r, &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
				msg: fmt.Sprintf("too many checkpoints held at once: no room for %d bytes in %d; try again later", n, s.cfg.CheckpointMemory)})
			return false
		}
		held = n
		return true
	}
	if sz, ok := comp.(spool.CheckpointSizer); ok {
		n, err := sz.CheckpointSize(r.Context(), c.user)
		if err != nil {
			s.fail(w, r, storeError("reading checkpoint", err))
			return
		}
		if !hold(n) {
			return
		}
	}
	cp, err := comp.LatestCheckpoint(r.Context(), c.user)
	if errors.Is(err, spool.ErrNoCheckpoint) {
		// The header tells "no checkpoint" apart from "no such route".
		w.Header().Set("Cspool-Checkpoint-Pos", "0")
		s.fail(w, r, errorf(ErrNotFound, "no checkpoint"))
		return
	}
	if err != nil {
		s.fail(w, r, storeError("reading checkpoint", err))
		return
	}
	// A checkpoint stored since the size was read may be larger.
	if !hold(int64(len(cp.Data))) {
		return
	}
	w.Header().Set("Content-Type", CheckpointContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Cspool-Checkpoint-Pos", strconv.FormatUint(cp.Pos, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(cp.Data)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(cp.Data); err != nil {
		info(r).err = err
	}
}
