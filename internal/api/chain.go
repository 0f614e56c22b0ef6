package api

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"

	"cspool/internal/chain"
	"cspool/internal/spool"
)

// Headers of a read response: the chain hashes (spool.Chainer). API v1
// sends both with every read whose `after` is at or below the head.
const (
	// HeaderChainStart is the chain hash at the read's `after`.
	HeaderChainStart = "Cspool-Chain-Start"
	// HeaderChainHead is the chain hash at the head sent in Cspool-Head.
	HeaderChainHead = "Cspool-Chain-Head"
)

// chainHeaders returns the values of the chain headers of a read after
// `after` whose tip (Cspool-Head and the hash at it) is tip, or ok false
// when after is beyond the head (no hash to give). The tip must have been
// read from the store after the response's first entries: a chain hash
// never changes once its position exists, so the hash at the head is
// exactly what a client recomputes over the entries up to it, whenever it
// is read.
func (s *Server) chainHeaders(ctx context.Context, user string, after uint64, tip spool.Tip) (start, headHash string, ok bool, err error) {
	c, err := chain.Vouch(after, tip.Head, func(pos uint64) (spool.Hash, error) {
		if pos == tip.Head {
			return tip.HeadHash, nil
		}
		h, err := s.cfg.Store.ChainHash(ctx, user, pos)
		if err != nil {
			return h, fmt.Errorf("reading the chain hash at %d: %w", pos, err)
		}
		return h, nil
	})
	if err != nil || !c.Chained {
		return "", "", false, err
	}
	return hex.EncodeToString(c.StartHash[:]), hex.EncodeToString(c.HeadHash[:]), true, nil
}

// tip reads the head, the chain hash at it and the checkpoint's position:
// in one read from a spool.TipReader, else one after the other.
func (s *Server) tip(ctx context.Context, user string) (spool.Tip, error) {
	if tr, ok := s.cfg.Store.(spool.TipReader); ok {
		return tr.Tip(ctx, user)
	}
	var t spool.Tip
	var err error
	if t.Head, err = s.cfg.Store.Head(ctx, user); err != nil {
		return t, err
	}
	if t.Checkpoint, err = s.checkpointPos(ctx, user); err != nil {
		return t, err
	}
	if t.HeadHash, err = s.cfg.Store.ChainHash(ctx, user, t.Head); err != nil {
		return t, fmt.Errorf("reading the chain hash at the head %d: %w", t.Head, err)
	}
	return t, nil
}

// parseChainHeaders fills lr's chain fields from a response's headers:
// Chained when both are present, an error when only one is or either is
// not exactly 64 lowercase hex digits. Neither is not an error here: the
// caller decides what a read without the chain means (a device with its
// own chain raises an integrity alarm, docs/SECURITY.md §3).
func parseChainHeaders(h http.Header, lr *spool.LogRead) error {
	start, okStart := h[HeaderChainStart]
	head, okHead := h[HeaderChainHead]
	if !okStart && !okHead {
		return nil
	}
	if len(start) != 1 || len(head) != 1 {
		return fmt.Errorf("want exactly one %s and one %s, got %d and %d", HeaderChainStart, HeaderChainHead, len(start), len(head))
	}
	if err := parseHash(start[0], &lr.StartHash); err != nil {
		return fmt.Errorf("%s: %w", HeaderChainStart, err)
	}
	if err := parseHash(head[0], &lr.HeadHash); err != nil {
		return fmt.Errorf("%s: %w", HeaderChainHead, err)
	}
	lr.Chained = true
	return nil
}

// parseHash decodes the one encoding of a hash: 64 lowercase hex digits.
func parseHash(s string, h *spool.Hash) error {
	if len(s) != 2*len(h) {
		return fmt.Errorf("%d characters, want %d", len(s), 2*len(h))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("character %d is not a lowercase hex digit", i)
		}
	}
	_, err := hex.Decode(h[:], []byte(s))
	return err
}
