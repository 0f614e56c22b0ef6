package hostile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"cspool/internal/api"
	"cspool/internal/chain"
	"cspool/internal/spool"
)

// The chain headers of a read (docs/API.md §3).
const (
	headerChainStart = "Cspool-Chain-Start"
	headerChainHead  = "Cspool-Chain-Head"
)

// story is the log as a View shows it at one moment.
type story struct {
	honest, shown []spool.Entry
	head          uint64
	realHead      uint64
}

// tell reads the honest log and rewrites it.
func (p *Proxy) tell(ctx context.Context, v *View) (*story, error) {
	realHead, err := p.store.Head(ctx, p.user)
	if err != nil {
		return nil, fmt.Errorf("reading the head: %w", err)
	}
	honest, err := p.store.Read(ctx, p.user, 0, 1<<30, 1<<40)
	if err != nil {
		return nil, fmt.Errorf("reading the log: %w", err)
	}
	s := &story{honest: honest, shown: honest, realHead: realHead, head: realHead}
	if v.Rewrite != nil {
		s.shown = v.Rewrite(honest)
		s.head = 0
		if n := len(s.shown); n > 0 {
			s.head = s.shown[n-1].Pos
		}
	}
	return s, nil
}

// hash returns the chain hash the liar vouches for at pos.
func (p *Proxy) hash(ctx context.Context, s *story, v *View, pos uint64) (spool.Hash, error) {
	c, ok := p.store.(spool.Chainer)
	if !ok {
		return spool.Hash{}, errors.New("the store keeps no chain")
	}
	d, err := p.divergence(ctx, s)
	if err != nil {
		return spool.Hash{}, err
	}
	if v.KeepHeaders || pos < d {
		return c.ChainHash(ctx, p.user, min(pos, s.realHead))
	}
	h, err := c.ChainHash(ctx, p.user, d-1)
	if err != nil {
		return h, err
	}
	for _, e := range s.shown {
		if e.Pos >= d && e.Pos <= pos {
			h = chain.Next(h, e.Data)
		}
	}
	return h, nil
}

// divergence returns the first position at which the story departs from
// the log the chain hashes: below it the real chain hashes hold for the
// story. A position the store no longer holds (compacted) but the story
// shows departs unless its data is what the chain hashed there. It returns
// the largest position when the story is the truth.
func (p *Proxy) divergence(ctx context.Context, s *story) (uint64, error) {
	c, _ := p.store.(spool.Chainer)
	hs, ss := s.honest, s.shown
	for len(hs) > 0 || len(ss) > 0 {
		switch {
		case len(hs) > 0 && len(ss) > 0 && hs[0].Pos == ss[0].Pos:
			if !bytes.Equal(hs[0].Data, ss[0].Data) {
				return hs[0].Pos, nil
			}
			hs, ss = hs[1:], ss[1:]
		case len(ss) > 0 && (len(hs) == 0 || ss[0].Pos < hs[0].Pos):
			pos := ss[0].Pos
			if pos > s.realHead || c == nil {
				return pos, nil
			}
			prev, err := c.ChainHash(ctx, p.user, pos-1)
			if err != nil {
				return 0, err
			}
			cur, err := c.ChainHash(ctx, p.user, pos)
			if err != nil {
				return 0, err
			}
			if chain.Next(prev, ss[0].Data) != cur {
				return pos, nil
			}
			ss = ss[1:]
		default: // the store holds an entry the story leaves out
			return hs[0].Pos, nil
		}
	}
	return ^uint64(0), nil
}

// checkpointPos is the newest checkpoint's position, or the View's.
func (p *Proxy) checkpointPos(ctx context.Context, v *View) (uint64, error) {
	if v.Checkpoint != nil {
		return v.Checkpoint.Pos, nil
	}
	return spool.CheckpointPos(ctx, p.store, p.user)
}

func queryUint(q url.Values, name string, def uint64) uint64 {
	n, err := strconv.ParseUint(q.Get(name), 10, 64)
	if err != nil {
		return def
	}
	return n
}

// read answers GET entries with the View's story (docs/API.md §3).
func (p *Proxy) read(ctx context.Context, w http.ResponseWriter, q url.Values, v *View) error {
	after := queryUint(q, "after", 0)
	maxCount := min(queryUint(q, "max_count", 1000), 10000)
	maxBytes := min(queryUint(q, "max_bytes", 8<<20), 64<<20)
	wait := time.Duration(min(queryUint(q, "wait", 0), 60)) * time.Second
	s, err := p.tell(ctx, v)
	if err != nil {
		return err
	}
	if s.head <= after && wait > 0 {
		// Long-poll: nothing to show yet; wait for the real log to grow.
		if _, err := spool.WaitFor(ctx, p.store, p.user, s.realHead, wait, nil); err != nil {
			return err
		}
		if s, err = p.tell(ctx, v); err != nil {
			return err
		}
	}
	var out []spool.Entry
	var bytes uint64
	for _, e := range s.shown {
		if e.Pos <= after {
			continue
		}
		if len(out) > 0 && (uint64(len(out)) >= maxCount || bytes+uint64(len(e.Data)) > maxBytes) {
			break
		}
		out = append(out, e)
		bytes += uint64(len(e.Data))
	}
	cp, err := p.checkpointPos(ctx, v)
	if err != nil {
		return err
	}
	h := w.Header()
	c, err := chain.Vouch(after, s.head, func(pos uint64) (spool.Hash, error) { return p.hash(ctx, s, v, pos) })
	if err != nil {
		return err
	}
	if c.Chained {
		h.Set(headerChainStart, hex.EncodeToString(c.StartHash[:]))
		h.Set(headerChainHead, hex.EncodeToString(c.HeadHash[:]))
	}
	h.Set("Content-Type", api.ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("Cspool-Head", strconv.FormatUint(s.head, 10))
	h.Set("Cspool-Checkpoint", strconv.FormatUint(min(cp, s.head), 10))
	if v.Headers != nil {
		v.Headers(h)
	}
	w.WriteHeader(http.StatusOK)
	return writeFrames(bufio.NewWriter(w), out, v.CutShort)
}

// head answers GET head with the story's head.
func (p *Proxy) head(ctx context.Context, w http.ResponseWriter, v *View) error {
	s, err := p.tell(ctx, v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cspool-Head", strconv.FormatUint(s.head, 10))
	_, err = fmt.Fprintf(w, "{\"head\":%d}\n", s.head)
	return err
}

// writeCheckpoint answers GET checkpoint with cp (docs/API.md §5).
func writeCheckpoint(w http.ResponseWriter, cp spool.Checkpoint) error {
	w.Header().Set("Content-Type", api.CheckpointContentType)
	w.Header().Set("Cspool-Checkpoint-Pos", strconv.FormatUint(cp.Pos, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(cp.Data)))
	_, err := w.Write(cp.Data)
	return err
}
