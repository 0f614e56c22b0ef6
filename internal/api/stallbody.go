package api

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// stallBody reads a request's body that holds a share of a memory budget
// while it comes (a checkpoint upload): each piece of stallPiece bytes
// must come within stall, the bound each piece of an answer has to be
// taken in (Config.WriteStall), or the read is ended, by a read deadline
// already passed, and what the upload held is let go. A client that
// stalls its upload loses its reservation after stall, not after the
// HTTP server's read timeout (10 minutes), and one that keeps sending,
// however slowly above stallPiece bytes a stall, is not cut off.
//
// The deadline is only ever brought forward, to now, when a piece is
// late: the HTTP server's own (ReadTimeout) stays as it was otherwise.
type stallBody struct {
	r     io.ReadCloser
	stall time.Duration
	left  int         // bytes of the current piece still to come
	armed bool        // start was called
	timer *time.Timer // ends the read when the current piece is late

	mu      sync.Mutex
	done    bool // stop was called: the timer no longer ends anything
	stalled bool // the timer ended the read
}

// newStallBody reads r, the body of the request w answers, so bounded
// from start on. Where the connection cannot take a read deadline (a handler called
// without an HTTP server), the body is read unbounded.
func newStallBody(w http.ResponseWriter, r io.ReadCloser, stall time.Duration) *stallBody {
	b := &stallBody{r: r, stall: stall, left: stallPiece}
	rc := http.NewResponseController(w)
	b.timer = time.AfterFunc(stall, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.done {
			return
		}
		b.stalled = true
		rc.SetReadDeadline(time.Now()) // ends the read waiting now
	})
	b.timer.Stop() // until start
	return b
}

func (b *stallBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.left -= n
	if b.armed && b.left <= 0 {
		b.left = stallPiece
		b.timer.Reset(b.stall)
	}
	if err != nil && err != io.EOF {
		b.mu.Lock()
		stalled := b.stalled
		b.mu.Unlock()
		if stalled {
			err = fmt.Errorf("the client sent no %d bytes of the body in %v: %w", stallPiece, b.stall, err)
		}
	}
	return n, err
}

// start starts the bound, when the upload holds its share of the budget:
// before, it holds none, and the server may not have taken the client's
// bytes while it waited for room, so the client is not late.
func (b *stallBody) start() {
	b.armed, b.left = true, stallPiece
	b.timer.Reset(b.stall)
}

// Close closes the body.
func (b *stallBody) Close() error { return b.r.Close() }

// stop ends the bound once the body is read (or given up): the timer
// sets no deadline afterwards.
func (b *stallBody) stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	b.timer.Stop()
}
