package submit

import (
	"context"
	"io"
	"sync"
	"time"
)

// room is the memory for messages being received, all connections
// together (Config.DataMemory). A message takes room as its bytes arrive,
// a step at a time (roomStep, then a quarter more each time), never more
// than the size limit, and gives it all back once answered: a client that
// stalls or trickles holds what it sent, not the size limit. It took the
// size limit before the first byte was read, so two clients that stopped
// in the middle of DATA held the whole budget at the default, and every
// other message waited, unread, up to the 10 minutes of go-smtp's read
// timeout.
//
// A step is granted only if, after it, the room left lets at least one
// message being received grow to the size limit (the banker's rule, every
// message's claim being the limit: the one closest to it can end, and
// what it gives back lets each of the others end in turn). Messages that
// keep coming therefore always end, however many arrive at once; one that
// stops is ended by the session's watch (dataWatch), and its room goes
// back.
type room struct {
	limit int64 // the most one message takes: Config.MaxMessageBytes

	mu     sync.Mutex
	free   int64
	claims map[*roomClaim]struct{}
	wake   chan struct{} // closed, and replaced, when room may have become grantable
}

// roomStep is the first room a message takes: what a connection that
// stops at once holds, until it is ended (most messages fit in it).
const roomStep = 64 << 10

func newRoom(total, limit int64) *room {
	return &room{limit: limit, free: total, claims: map[*roomClaim]struct{}{}, wake: make(chan struct{})}
}

// roomClaim is one message's room.
type roomClaim struct {
	r    *room
	held int64
	done bool // read to its end: it takes no more
}

// claim registers a message about to be received.
func (r *room) claim() *roomClaim {
	c := &roomClaim{r: r}
	r.mu.Lock()
	r.claims[c] = struct{}{}
	r.mu.Unlock()
	return c
}

// next is the room a message holding held takes for its next step.
func (r *room) next(held int64) int64 {
	return min(r.limit, max(roomStep, held+held/4))
}

// grow waits until c may hold to bytes (at most the limit), and takes
// them.
func (c *roomClaim) grow(ctx context.Context, to int64) error {
	r := c.r
	to = min(to, r.limit)
	for {
		r.mu.Lock()
		if r.safe(c, to) {
			r.free -= to - c.held
			c.held = to
			r.mu.Unlock()
			return nil
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// safe reports whether c may hold to: the room left after it lets some
// message reach the limit. Under r.mu.
func (r *room) safe(c *roomClaim, to int64) bool {
	free := r.free - (to - c.held)
	if free < 0 {
		return false
	}
	need := r.limit - to
	for o := range r.claims {
		if o != c && !o.done {
			need = min(need, r.limit-o.held)
		}
	}
	return free >= need
}

// finish tells the room c's message is read to its end.
func (c *roomClaim) finish() {
	r := c.r
	r.mu.Lock()
	c.done = true
	r.signal()
	r.mu.Unlock()
}

// giveBack gives c's room back before its message is answered: it is
// over the limit, and what is left of it is read into no room.
func (c *roomClaim) giveBack() {
	r := c.r
	r.mu.Lock()
	r.free += c.held
	c.held, c.done = 0, true
	r.signal()
	r.mu.Unlock()
}

// release gives c's room back.
func (c *roomClaim) release() {
	r := c.r
	r.mu.Lock()
	delete(r.claims, c)
	r.free += c.held
	c.held = 0
	r.signal()
	r.mu.Unlock()
}

// signal wakes the messages waiting for room. Under r.mu.
func (r *room) signal() {
	close(r.wake)
	r.wake = make(chan struct{})
}

// dataWatch ends a connection whose client sends no byte of its message
// for Config.DataIdleTimeout, or whose message takes longer than
// Config.ReadTimeout to arrive, not counting the waits for room (while the
// session waits, the client cannot send). It ends it with a 421 line and
// closes it; the session's read then fails and the room goes back.
type dataWatch struct {
	idle time.Duration
	bye  func(line string)

	mu      sync.Mutex
	t       *time.Timer
	left    time.Duration // of the whole message's time
	since   time.Time     // when the running stretch began (zero: paused)
	due     time.Time     // when the timer is set to fire
	stopped bool          // ended, or the message read: the timer does nothing
	fired   bool
}

func newDataWatch(idle, whole time.Duration, bye func(string)) *dataWatch {
	w := &dataWatch{idle: idle, left: whole, bye: bye}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.since = time.Now()
	w.due = w.since.Add(min(idle, whole))
	w.t = time.AfterFunc(min(idle, whole), w.fire)
	return w
}

// set sets the timer to the nearer of the two bounds. Under w.mu.
func (w *dataWatch) set(now time.Time) {
	d := max(0, min(w.idle, w.left))
	w.due = now.Add(d)
	w.t.Reset(d)
}

// spend counts the running stretch up to now. Under w.mu.
func (w *dataWatch) spend(now time.Time) {
	if !w.since.IsZero() {
		w.left -= now.Sub(w.since)
		w.since = now
	}
}

// kick: bytes of the message came.
func (w *dataWatch) kick() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.since.IsZero() {
		return
	}
	now := time.Now()
	w.spend(now)
	w.set(now)
}

// pause stops the clocks while the session waits for room.
func (w *dataWatch) pause() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.spend(time.Now())
	w.since = time.Time{}
	w.t.Stop()
}

// resume starts them again after the wait.
func (w *dataWatch) resume() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.since = time.Now()
	w.set(w.since)
}

// stop ends the watch once the message is read; it reports whether the
// watch had ended the connection first.
func (w *dataWatch) stop() (fired bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
	return w.fired
}

func (w *dataWatch) fire() {
	w.mu.Lock()
	now := time.Now()
	if w.stopped || w.since.IsZero() || now.Before(w.due) {
		// Ended, paused, or set again since this firing was due.
		w.mu.Unlock()
		return
	}
	w.spend(now)
	line := "421 4.4.2 No data for " + w.idle.String() + " in the middle of the message; closing the connection, nothing was sent"
	if w.left <= 0 {
		line = "421 4.4.2 The message took too long to arrive; closing the connection, nothing was sent"
	}
	w.stopped, w.fired = true, true
	w.mu.Unlock()
	w.bye(line)
}

// watchedReader kicks w for every read that brings bytes.
type watchedReader struct {
	r io.Reader
	w *dataWatch
}

func (wr watchedReader) Read(p []byte) (int, error) {
	n, err := wr.r.Read(p)
	if n > 0 {
		wr.w.kick()
	}
	return n, err
}
