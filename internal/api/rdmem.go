package api

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cspool/internal/spool"
)

// readBudget bounds the bytes of entries that reads hold in the server's
// memory at once (Config.ReadMemory), all keys together and each user's
// key within its share, from the store's read of them until their answer
// is written. A read holds what it has read, and takes the bound of a
// store read before making it; the first entry of a read is sent whole,
// however large, so the store's answer may be larger than its bound, and
// a read then takes the rest (readHold.first).
//
// Invariant: held is the sum of keys, and neither goes past its limit
// unless one read alone holds all of it (a read of an entry larger than
// the budget or the share is served when nothing else holds any).
type readBudget struct {
	mu    sync.Mutex
	limit int64 // Config.ReadMemory
	share int64 // the most one key holds: a quarter of limit, at least MaxBody
	held  int64
	peak  int64 // the most held at once, for tests and figures
	keys  map[[8]byte]int64
	freed chan struct{} // closed (and replaced) whenever bytes are given back
	// onHeld is told n bytes taken, -n given back (Config.MemoryHeld,
	// which tunes the server's collector); nil: no one.
	onHeld func(n int64)
}

func newReadBudget(limit, share int64, onHeld func(int64)) *readBudget {
	return &readBudget{limit: limit, share: share, keys: map[[8]byte]int64{}, freed: make(chan struct{}), onHeld: onHeld}
}

// readRoom says why a read found no room: its key's share, or the
// server's budget.
type readRoom int

const (
	roomTaken readRoom = iota
	roomKeyShare
	roomMemory
)

// take takes n more bytes for key, whose read holds mine already: at once
// if ctx is nil, else waiting until ctx is done for room. It reports what
// lacked room when it took nothing.
func (b *readBudget) take(ctx context.Context, key [8]byte, mine, n int64) readRoom {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		room := roomTaken
		switch {
		case b.keys[key]+n > b.share && b.keys[key] > mine:
			room = roomKeyShare
		case b.held+n > b.limit && b.held > mine:
			room = roomMemory
		}
		if room == roomTaken {
			break
		}
		if ctx == nil || ctx.Err() != nil {
			return room
		}
		freed := b.freed
		b.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
		}
		b.mu.Lock()
	}
	b.keys[key] += n
	b.held += n
	b.peak = max(b.peak, b.held)
	if b.onHeld != nil {
		b.onHeld(n)
	}
	return roomTaken
}

// give gives back n bytes taken for key.
func (b *readBudget) give(key [8]byte, n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keys[key] -= n; b.keys[key] <= 0 {
		delete(b.keys, key)
	}
	b.held -= n
	if b.onHeld != nil {
		b.onHeld(-n)
	}
	close(b.freed)
	b.freed = make(chan struct{})
}

// state returns the bytes held now and the most held at once so far.
func (b *readBudget) state() (held, peak int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak
}

// readHold is what one read holds: one of its key's places (holdRead)
// and the bytes of the entries it holds, of ReadMemory and its key's
// share. A read asks for nothing of either while it waits for new
// entries (a long-poll).
//
// bufs are the buffers the read's chunks are read into (chunkBufs): the
// first chunk goes into bufs[1], and stream reads the further ones into
// both in turn and gives them back.
type readHold struct {
	s     *Server
	key   [8]byte
	place bool
	held  int64
	bufs  *chunkBufs
}

// chunkBufs are the two buffers a response's chunks are read into, kept
// together between responses: the last ones given back in
// Server.spareChunks, the others in Server.chunks. A sync.Pool alone lost
// them too often for a device's reads one after the other: a response's
// handler on one core cannot reach what the last one put back on another
// (the pool's private slot), and the collector, which runs about every
// 10 MB a first sync allocates, empties it; a first sync allocated a
// chunk's buffer again for 24 of its 54 responses.
type chunkBufs [2][]byte

// buffers returns h's chunk buffers, taken from the server's spare or its
// pool the first time.
func (h *readHold) buffers() *chunkBufs {
	if h.bufs == nil {
		h.bufs = h.s.spareChunks.Swap(nil)
	}
	if h.bufs == nil {
		h.bufs, _ = h.s.chunks.Get().(*chunkBufs)
	}
	if h.bufs == nil {
		h.bufs = new(chunkBufs)
	}
	return h.bufs
}

// putBuffers gives h's chunk buffers back to the server's pool, but for
// one grown beyond Config.ChunkBytes (for an entry larger than that): no
// entry read into them may be used after.
func (h *readHold) putBuffers() {
	b := h.bufs
	if b == nil {
		return
	}
	h.bufs = nil
	for i := range b {
		if int64(cap(b[i])) > h.s.cfg.ChunkBytes {
			b[i] = nil
		}
		b[i] = b[i][:0]
	}
	if !h.s.spareChunks.CompareAndSwap(nil, b) {
		h.s.chunks.Put(b)
	}
}

// growTo makes the bytes h holds n, taking what is missing at once, or
// waiting up to CheckpointWait for room when wait is set. It reports what
// lacked room when it took nothing (refusal makes the answer).
func (h *readHold) growTo(ctx context.Context, n int64, wait bool) readRoom {
	more := n - h.held
	if more <= 0 {
		h.shrinkTo(n)
		return roomTaken
	}
	var wctx context.Context
	if wait {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, max(h.s.cfg.CheckpointWait, 0))
		defer cancel()
	}
	room := h.s.rdMem.take(wctx, h.key, h.held, more)
	if room == roomTaken {
		h.held = n
	}
	return room
}

// refusal counts and returns the refusal of a read that found no room
// for n bytes: 429 when its key's share lacked it, 503 when the server's
// budget did.
func (h *readHold) refusal(room readRoom, n int64) error {
	s := h.s
	if room == roomKeyShare {
		s.cfg.Metrics.ReadRefused(ReadRefusedKeyShare)
		return &srvError{kind: ErrTooManyRequests, retryAfter: s.cfg.RetryAfter,
			msg: fmt.Sprintf("this key's reads in progress hold their share of the server's memory (%d bytes) and this one needs %d: try again once they are done", s.rdMem.share, n)}
	}
	s.cfg.Metrics.ReadRefused(ReadRefusedMemory)
	return &srvError{kind: ErrUnavailable, retryAfter: s.cfg.RetryAfter,
		msg: fmt.Sprintf("too many reads at once: no room for %d bytes of entries in %d; try again later", n, s.cfg.ReadMemory)}
}

// shrinkTo gives back what h holds beyond n bytes.
func (h *readHold) shrinkTo(n int64) {
	if n < h.held {
		h.s.rdMem.give(h.key, h.held-n)
		h.held = n
	}
}

// release gives back all that h holds, its place included.
func (h *readHold) release() {
	h.shrinkTo(0)
	if h.place {
		h.s.releaseRead(h.key)
		h.place = false
	}
}

// first reads a read's first chunk (firstChunk) into the server's memory
// with what it needs held: a place among its key's reads, waiting up to
// CheckpointWait for one, and the chunk's bytes. Those are the store
// read's bound, taken before it (waiting up to CheckpointWait for room);
// a first entry larger than the bound is read whole, and when there is
// no room for it at once the read waits for room for its size, holding
// nothing, and reads again.
func (h *readHold) first(ctx context.Context, user string, p readParams) ([]spool.Entry, error) {
	s := h.s
	if !h.place {
		if h.place = s.holdRead(ctx, h.key); !h.place {
			s.cfg.Metrics.ReadRefused(ReadRefusedKeyReads)
			return nil, s.tooManyReads()
		}
	}
	bound := s.firstChunk(p.maxBytes)
	if room := h.growTo(ctx, bound, true); room != roomTaken {
		return nil, h.refusal(room, bound)
	}
	for again := false; ; again = true {
		entries, need, room, err := h.read(ctx, user, p, bound)
		switch {
		case err != nil:
			return nil, err
		case room == roomTaken:
			return entries, nil
		case again:
			// Read again with room for the size found first, it
			// found more (a compaction deleted that entry meanwhile).
			return nil, h.refusal(room, need)
		}
		// Not while it waits: a read that holds nothing else is
		// served whatever its size, once nothing else holds any.
		h.shrinkTo(0)
		if room := h.growTo(ctx, need, true); room != roomTaken {
			return nil, h.refusal(room, need)
		}
	}
}

// errNoRoom ends a store read (spool.SizedReader) whose entries have no
// room at once.
var errNoRoom = errors.New("no room for the entries read")

// read makes the store read of a first chunk of at most bound bytes (but
// at least one entry): it returns the entries, h holding their size, or,
// when their size (need) had no room at once, none and what lacked room.
// A store that tells the size before it loads the entries
// (spool.SizedReader) then loads none.
func (h *readHold) read(ctx context.Context, user string, p readParams, bound int64) (entries []spool.Entry, need int64, room readRoom, err error) {
	fits := func(n int64) readRoom {
		if n <= h.held {
			h.shrinkTo(n)
			return roomTaken
		}
		return h.growTo(ctx, n, false)
	}
	if sized, ok := h.s.cfg.Store.(spool.SizedReader); ok {
		bufs := h.buffers()
		entries, bufs[1], err = sized.ReadSized(ctx, user, p.after, p.maxCount, bound, bufs[1], func(n int64) error {
			if room = fits(n); room != roomTaken {
				need = n
				return errNoRoom
			}
			return nil
		})
		if errors.Is(err, errNoRoom) {
			return nil, need, room, nil
		}
		if err != nil {
			return nil, 0, roomTaken, err
		}
		h.shrinkTo(entriesSize(entries)) // none: not told
		return entries, 0, roomTaken, nil
	}
	entries, err = h.s.cfg.Store.Read(ctx, user, p.after, p.maxCount, bound)
	if err != nil {
		return nil, 0, roomTaken, err
	}
	n := entriesSize(entries)
	if room = fits(n); room != roomTaken {
		return nil, n, room, nil
	}
	return entries, 0, roomTaken, nil
}

// entriesSize returns the bytes of the entries' data.
func entriesSize(entries []spool.Entry) int64 {
	var n int64
	for _, e := range entries {
		n += int64(len(e.Data))
	}
	return n
}
