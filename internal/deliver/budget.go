package deliver

import (
	"fmt"
	"io"
)

// reservation is one message's share of the in-flight budget
// (LMTPOptions.MaxInflightBytes).
type reservation struct {
	l    *LMTP
	held int64
}

// grow takes n more bytes of the budget. It fails if that would go over the
// budget, unless this reservation is all that is in flight: one large
// message alone is never refused, so it cannot starve.
func (r *reservation) grow(n int64) bool {
	for {
		cur := r.l.inflight.Load()
		if cur > r.held && cur+n > r.l.opts.MaxInflightBytes {
			return false
		}
		if r.l.inflight.CompareAndSwap(cur, cur+n) {
			r.held += n
			if h := r.l.opts.MemoryHeld; h != nil {
				h(n)
			}
			return true
		}
	}
}

// release gives the whole reservation back.
func (r *reservation) release() {
	r.l.inflight.Add(-r.held)
	if h := r.l.opts.MemoryHeld; h != nil && r.held != 0 {
		h(-r.held)
	}
	r.held = 0
}

// costFactor is what a message costs per byte of its buffer while users
// of it are sealed and appended at once: the buffer, and for each user the
// sealed entry (about the message's size, entry.Padme) and the store's copy
// of it while the append is written.
func costFactor(users int) int64 { return 1 + 2*int64(users) }

// inbox collects one message within the size limit and the in-flight
// budget. Its buffer grows as bytes arrive, each growth reserved first; a
// declared SIZE sizes the growth that reaches half of it. Once the message cannot be kept
// (too large, or the budget is used up) the buffer and its reservation are
// given back and the rest is read and dropped, so that the sender still
// gets its reply at the end of the message.
type inbox struct {
	res    *reservation
	pool   *bufPool // where its buffers come from and go back to
	factor int64    // bytes reserved per byte of buffer, see costFactor
	limit  int64    // MaxMessageBytes
	hint   int64    // declared SIZE, 0 if none

	buf  []byte
	size int64 // bytes received, kept or not
	err  error // why the message is not kept: ErrTooLarge or ErrResources
}

// inboxFirstGrowth is the first buffer of a message without a declared
// SIZE: most mail fits, and a larger message grows it by half each time.
const inboxFirstGrowth = 16 << 10

// readFrom reads src to its end; the error is src's, not the reason the
// message was not kept (in.err).
func (in *inbox) readFrom(src io.Reader) error {
	// The first buffer is taken before the first read, so that a message
	// that fits (most do) is read straight into it, with no copy.
	in.keep(nil)
	var spare []byte // for reads when the buffer is full or not kept
	for {
		p, direct := in.buf[len(in.buf):cap(in.buf)], true
		if in.err != nil || len(p) == 0 {
			if spare == nil {
				spare = make([]byte, 16<<10)
			}
			p, direct = spare, false
		}
		n, err := src.Read(p)
		in.size += int64(n)
		if direct {
			in.buf = in.buf[:len(in.buf)+n]
		} else if n > 0 {
			in.keep(p[:n])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// keep appends p, growing the buffer within the limit and the budget.
func (in *inbox) keep(p []byte) {
	if in.err != nil {
		return
	}
	need := max(int64(len(in.buf)+len(p)), 1) // nil p: the first buffer
	if need > in.limit {
		in.drop(fmt.Errorf("%w: over %d bytes", ErrTooLarge, in.limit))
		return
	}
	if need > int64(cap(in.buf)) {
		next := max(need, int64(cap(in.buf))*3/2, inboxFirstGrowth)
		if in.hint > next && in.hint <= 2*next {
			// Half the declared SIZE is within this growth: the
			// buffer takes all of it, the last growth of a message as
			// large as it said. Never sooner: a SIZE is a claim, and
			// reserved at the first byte, a client that declared the
			// limit and sent one byte held the budget of a whole
			// message (times its users) for the read timeout, and a
			// few such connections took it all.
			next = in.hint
		}
		next = in.pool.fit(min(next, in.limit), in.limit)
		if !in.res.grow(in.factor * (next - int64(cap(in.buf)))) {
			in.drop(fmt.Errorf("%w: %d bytes in flight, budget %d", ErrResources, in.res.l.inflight.Load(), in.res.l.opts.MaxInflightBytes))
			return
		}
		b := in.pool.get(int(next))[:len(in.buf)]
		copy(b, in.buf)
		in.pool.put(in.buf)
		in.buf = b
	}
	in.buf = append(in.buf, p...)
}

// drop gives up keeping the message, for err.
func (in *inbox) drop(err error) {
	in.err = err
	in.pool.put(in.buf)
	in.buf = nil
	in.res.release()
}

// done gives the message's buffer back to the pool and its reservation
// back to the budget: nothing may use the message afterwards.
func (in *inbox) done() {
	in.pool.put(in.buf)
	in.buf = nil
	in.res.release()
}
