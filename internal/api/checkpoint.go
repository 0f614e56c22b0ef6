package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

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
	limit := s.cfg.MaxCheckpointBody
	if r.ContentLength > limit {
		s.fail(w, r, errorf(ErrTooLarge, "checkpoint of %d bytes exceeds this server's limit of %d bytes", r.ContentLength, limit))
		return
	}
	// The body is held from its read to the store's commit: it takes its
	// size from the server's budget first (the limit when unknown).
	hold := limit
	if r.ContentLength >= 0 {
		hold = r.ContentLength
	}
	if !s.holdCheckpoint(r.Context(), hold) {
		s.fail(w, r, &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
			msg: fmt.Sprintf("too many checkpoint uploads at once: no room for %d bytes in %d; try again later", hold, s.cfg.CheckpointMemory)})
		return
	}
	defer s.cpMem.release(hold)
	body, err := readCheckpointBody(w, r, c, limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// keep is 8 bytes a kept position; data is a slice of body.
	keep, data, err := DecodeCheckpoint(body, s.cfg.MaxCheckpointKeep)
	if errors.Is(err, errTooManyKept) {
		s.fail(w, r, errorf(ErrTooLarge, "decoding checkpoint: %v", err))
		return
	}
	if err != nil {
		s.fail(w, r, errorf(ErrBadRequest, "decoding checkpoint: %v", err))
		return
	}
	st, err := comp.Compact(r.Context(), c.user, spool.Checkpoint{Pos: pos, Data: data}, keep)
	if err != nil {
		s.fail(w, r, storeError("storing checkpoint", err))
		return
	}
	writeJSON(w, http.StatusOK, compactStats{Deleted: st.Deleted, Bytes: st.Bytes, Kept: st.Kept})
}

// holdCheckpoint takes n bytes from the checkpoint uploads' budget, waiting
// up to CheckpointWait for room.
func (s *Server) holdCheckpoint(ctx context.Context, n int64) bool {
	wait := max(s.cfg.CheckpointWait, 0)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return s.cpMem.acquire(ctx, n)
}

// readCheckpointBody reads a checkpoint upload into one buffer: of its
// Content-Length, or grown up to limit bytes when the length is unknown.
// It hashes the body as it arrives and checks it against the signed hash.
func readCheckpointBody(w http.ResponseWriter, r *http.Request, c *caller, limit int64) ([]byte, error) {
	h := sha256.New()
	body := io.TeeReader(http.MaxBytesReader(w, r.Body, limit), h)
	var buf []byte
	if n := r.ContentLength; n >= 0 {
		buf = make([]byte, n)
		if _, err := io.ReadFull(body, buf); err != nil {
			return nil, errorf(ErrBadRequest, "reading body: %v", err)
		}
	} else {
		buf = make([]byte, 0, min(int64(64<<10), limit+1))
		for {
			if len(buf) == cap(buf) {
				grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit+1))
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
	w.Header().Set("Content-Type", CheckpointContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Cspool-Checkpoint-Pos", strconv.FormatUint(cp.Pos, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(cp.Data)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(cp.Data); err != nil {
		info(r).err = err
	}
}
