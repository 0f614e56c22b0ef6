package syncer

import (
	"context"
	"runtime"
	"slices"
	"sync"

	"cspool/internal/chain"
	"cspool/internal/cores"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// Opening entries on all cores, and reading ahead.
//
// Opening an entry (decrypting it, checking its signature, decoding its
// command, and hashing and parsing the message it carries for the apply)
// depends on its bytes alone, so it is done on every core at once
// (openAll), the signatures of up to sigBatch entries checked in one batch
// (openBatch); everything that depends on the device's state (the
// chain, the heads authors saw, replays, the store) is still checked one
// entry after the other, in log order, by verify.
//
// While the loop is behind the spool's head, the read after a batch is
// made, and its entries opened, while the batch applies (readAhead): the
// next read starts where the batch ends, which verify knows before the
// apply. The read ahead is used only by the read that asks for exactly
// that position, after the batch committed; any other read, an error, an
// alarm, a restore or a failed apply drops it. At most one read is in
// flight: a read ahead that is dropped is cancelled and waited for before
// the loop reads again. Nothing of a read ahead reaches the store until
// the loop takes it, so a crash applies nothing twice as before: the
// position still moves only with a committed batch.
//
// A read ahead from a Source that hands over each entry as it arrives
// (EachSource) is opened as it is read (readOpen): the first entries are
// opened while the spool still sends the rest, so the read's time on the
// wire and the spool's time to answer no longer come before the opening.
// The entries are opened from the bytes the read returns, and a read that
// fails drops whatever of it was opened, as any failed read ahead.
//
// A read ahead from a Source that can read into a given buffer
// (IntoSource) reads the entries' bytes into one buffer of BatchBytes;
// once every entry of it opened and its bytes were let go
// (releaseSealed), the loop keeps that buffer (keepBuffer) for the next
// read ahead, so a first sync allocates it once rather than every entry's
// bytes again (a quarter of what a sync allocated). A read with an entry
// that did not open, or that leads to a checkpoint, keeps its bytes, and
// its buffer is not used again.

// opened is an entry after entry.Open: the command, or why it did not
// open, the work on its message that Apply would do (Replica.Prepare), and
// the hash of its bytes the chain needs (chain.Leaf).
type opened struct {
	o    *entry.Opened
	err  error
	prep *mailstore.Prepared
	leaf [32]byte
}

// sigBatch is how many entries' signatures are checked together at most
// (entry.VerifyBatch): at 64 an entry's share of the batch's work is
// within a few percent of its least.
const sigBatch = 64

// openBatch opens entries' bytes, out[i] datas[i]'s, their signatures
// checked in one batch (entry.VerifyBatch, about half the cost of checking
// each alone); an entry's message is prepared once its signature is
// checked.
func (s *Syncer) openBatch(datas [][]byte, out []opened) {
	us := make([]*entry.Unverified, 0, len(datas))
	at := make([]int, 0, len(datas))
	for i, d := range datas {
		out[i] = opened{leaf: chain.Leaf(d)}
		u, err := entry.OpenUnverified(d, s.cfg.UserKey, s.cfg.User, s.trusted()...)
		if err != nil {
			out[i].err = err
			continue
		}
		us, at = append(us, u), append(at, i)
	}
	opens, errs := entry.VerifyBatch(us)
	for j, i := range at {
		out[i].o, out[i].err = opens[j], errs[j]
		if errs[j] == nil {
			out[i].prep = s.cfg.Store.Prepare(opens[j].Cmd)
		}
	}
}

// openOne opens one entry's bytes.
func (s *Syncer) openOne(data []byte) opened {
	var out [1]opened
	s.openBatch([][]byte{data}, out[:])
	return out[0]
}

// openAll opens the entries of a read on all cores, in batches of at most
// sigBatch; out[i] is entries[i]'s.
func (s *Syncer) openAll(entries []spool.Entry) []opened {
	out := make([]opened, len(entries))
	cores.Each(len(entries), sigBatch, func(from, to int) {
		datas := make([][]byte, 0, to-from)
		for _, e := range entries[from:to] {
			datas = append(datas, e.Data)
		}
		s.openBatch(datas, out[from:to])
	})
	return out
}

// readOpen reads the log after `after` from src and opens the entries on all
// cores as they arrive, while the rest of the read is still on its way:
// the read's time on the wire and the spool's time to answer overlap the
// opening instead of coming before it. It returns what openAll would give
// for the read. An entry is opened from the bytes the read returns: one
// handed over otherwise (a source that breaks EachSource's promise) is
// opened again from those.
func (s *Syncer) readOpen(ctx context.Context, src EachSource, after uint64, buf []byte) (spool.LogRead, []opened, error) {
	type handed struct {
		i    int
		data []byte
	}
	var (
		mu   sync.Mutex
		got  []opened // by index in the read, as the workers open them
		from [][]byte // the bytes got[i] was opened from; nil: not handed over
	)
	work := make(chan handed, max(1, s.cfg.BatchCount))
	var wg sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			// Each worker opens what it takes in batches of up to
			// sigBatch: those that arrived while it opened the last.
			for h := range work {
				batch := []handed{h}
			more:
				for len(batch) < sigBatch {
					select {
					case h, ok := <-work:
						if !ok {
							break more
						}
						batch = append(batch, h)
					default:
						break more
					}
				}
				datas, ops := make([][]byte, len(batch)), make([]opened, len(batch))
				for k, h := range batch {
					datas[k] = h.data
				}
				s.openBatch(datas, ops)
				mu.Lock()
				for k, h := range batch {
					for len(got) <= h.i {
						got, from = append(got, opened{}), append(from, nil)
					}
					got[h.i], from[h.i] = ops[k], h.data
				}
				mu.Unlock()
			}
		})
	}
	handedOver := 0
	lr, err := src.ReadLogEach(ctx, after, s.cfg.BatchCount, s.cfg.BatchBytes, 0, buf, func(i int, e spool.Entry) {
		if i < 0 || i != handedOver || e.Data == nil {
			return // opened below from the read's bytes
		}
		handedOver++
		work <- handed{i, e.Data}
	})
	close(work)
	wg.Wait()
	if err != nil {
		return lr, nil, err
	}
	out := make([]opened, len(lr.Entries))
	for i, e := range lr.Entries {
		if i < len(got) && from[i] != nil && sameBytes(from[i], e.Data) {
			out[i] = got[i]
		} else {
			out[i] = s.openOne(e.Data)
		}
	}
	return lr, out, nil
}

// sameBytes reports whether a and b are the same slice of memory.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// releaseSealed returns lr with the bytes of the entries that opened
// dropped: once opened, an entry's command and its leaf hash are all the
// loop needs of it, so the read's bytes (about the size of the
// plaintext again) need not stay live while the batch applies. The bytes
// of an entry that did not open stay: a misdelivered one is kept
// (misdelivered.go). The read's own slice is not written (a source may
// keep it).
func releaseSealed(lr spool.LogRead, opened []opened) spool.LogRead {
	entries := slices.Clone(lr.Entries)
	for i := range entries {
		if opened[i].err == nil {
			entries[i].Data = nil
		}
	}
	lr.Entries = entries
	return lr
}

// readAhead is a read of the log after a position, with its entries
// opened, made while the batch before it applies.
type readAhead struct {
	after  uint64
	cancel context.CancelFunc
	done   chan struct{} // closed when lr, opened and err are set
	lr     spool.LogRead
	opened []opened
	err    error
	buf    []byte // the buffer the entries' bytes were read into; nil: none
}

// startAhead reads the log after pos, and opens what it read, in the
// background. The loop alone calls it, and only with no read ahead
// pending.
func (s *Syncer) startAhead(ctx context.Context, after uint64) {
	ctx, cancel := context.WithCancel(ctx)
	ra := &readAhead{after: after, cancel: cancel, done: make(chan struct{})}
	into, ok := s.cfg.Source.(IntoSource)
	each, _ := s.cfg.Source.(EachSource)
	if ok {
		ra.buf = s.spare
		if ra.buf == nil {
			ra.buf = make([]byte, 0, s.cfg.BatchBytes)
		}
	}
	s.spare = nil
	go func() {
		defer close(ra.done)
		switch {
		case each != nil:
			ra.lr, ra.opened, ra.err = s.readOpen(ctx, each, after, ra.buf)
		case into != nil:
			ra.lr, ra.err = into.ReadLogInto(ctx, after, s.cfg.BatchCount, s.cfg.BatchBytes, 0, ra.buf)
		default:
			ra.lr, ra.err = s.cfg.Source.ReadLog(ctx, after, s.cfg.BatchCount, s.cfg.BatchBytes, 0)
		}
		if ra.err == nil {
			if ra.opened == nil {
				ra.opened = s.openAll(ra.lr.Entries)
			}
			if ra.lr.Checkpoint <= after {
				// A read that leads to a checkpoint (bootstrap) needs
				// the entries' bytes.
				ra.lr = releaseSealed(ra.lr, ra.opened)
			}
		}
	}()
	s.ahead = ra
}

// keepBuffer keeps buf for the next read ahead when no entry of lr holds
// bytes any more (every one opened and was let go by releaseSealed): else
// some of them may be in buf, which must then stay as it is.
func (s *Syncer) keepBuffer(buf []byte, lr spool.LogRead) {
	if buf == nil {
		return
	}
	for _, e := range lr.Entries {
		if e.Data != nil {
			return
		}
	}
	s.spare = buf[:0]
}

// dropAhead cancels the read ahead, if any, and waits for it to end.
func (s *Syncer) dropAhead() {
	if ra := s.ahead; ra != nil {
		s.ahead = nil
		ra.cancel()
		<-ra.done
	}
}

// takeAhead returns the read ahead when it read after pos and succeeded;
// otherwise it drops it and returns nil. It waits for the read to end.
func (s *Syncer) takeAhead(ctx context.Context, pos uint64) (*readAhead, error) {
	ra := s.ahead
	if ra == nil {
		return nil, nil
	}
	if ra.after != pos {
		s.dropAhead()
		return nil, nil
	}
	select {
	case <-ra.done:
	case <-ctx.Done():
		s.dropAhead()
		return nil, ctx.Err()
	}
	s.ahead = nil
	ra.cancel()
	if ra.err != nil {
		// Its context may have been another call's: read again.
		return nil, nil
	}
	return ra, nil
}
