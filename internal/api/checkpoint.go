package api

import (
	"context"
	"errors"
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
	body, err := readSignedBody(w, r, c, s.cfg.MaxCheckpointBody)
	if err != nil {
		s.fail(w, r, err)
		return
	}
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
