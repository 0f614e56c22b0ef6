package imapd

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/emersion/go-imap/v2"
	"golang.org/x/sync/semaphore"

	"cspool/internal/mailstore"
)

// SEARCH's bodies on every core (docs/IMAP.md, "Search, compared with
// Dovecot"; docs/MAILSTORE.md, "Search index").
//
// A SEARCH BODY or TEXT that the index cannot answer for a message (a
// body not indexed yet, just after a first sync; a needle too short for
// the index) reads the message, parses its MIME tree, decodes and folds
// its text parts: most of such a SEARCH's CPU, which ran on the scan's
// goroutine, one core, while the store's reads waited for it. The scan
// still reads each message and tests what needs no body (flags, dates,
// sizes, the index's answers, the header) on its goroutine, in UID
// order; a message whose test comes to its body's text is read there
// too (its raw bytes, through the scan's snapshot: Message.Detached) and
// handed to one of searchWorkers goroutines, which tests it again, whole,
// with a matcher of its own. The matches are put in sequence order at
// the end, so the answer is the one matcher's, byte for byte.
//
// Memory: the messages handed over and not tested yet hold at most
// searchPoolBytes of raw bytes together (and each worker the texts of
// the one it tests); a message larger than that is tested on the scan's
// goroutine as before, alone. Those of all SEARCHes of the server hold at
// most searchServerBytes together: with many connections searching at
// once, each waits for room as its workers would for theirs.

// searchPoolBytes bounds the raw bytes of the messages handed to a
// SEARCH's workers and not tested yet.
const searchPoolBytes = 1 << 20

// searchServerBytes bounds those of every SEARCH of a server together
// (Server.searchMem).
const searchServerBytes = 4 * searchPoolBytes

// errNeedsBody stops a matcher that defers bodies (matcher.deferBody) where
// it would read the message's raw bytes.
var errNeedsBody = errors.New("the message's body is tested elsewhere")

// searchPool tests messages' bodies for one SEARCH on its workers.
type searchPool struct {
	ctx    context.Context
	cancel context.CancelFunc
	c      *imap.SearchCriteria
	proto  *matcher // the SEARCH's matcher, cloned for each worker
	srv    *Server

	workers int
	started bool
	ended   bool // wait or abandon ran: the workers have ended
	jobs    chan poolJob
	bytes   *semaphore.Weighted
	wg      sync.WaitGroup

	mu      sync.Mutex
	matched []ref
	err     error  // the first failure, by sequence number
	errSeq  uint32 // its message's
	// panicked is what a worker's test panicked with, and where: wait
	// panics with it on the SEARCH's goroutine, where go-imap recovers
	// it and ends the connection, as when the test ran there; on a
	// worker it would have ended the process.
	panicked any
}

type poolJob struct {
	r      ref
	m      *mailstore.Message
	weight int64
}

// newSearchPool returns the pool of a SEARCH with criteria c, whose
// matcher is mt, or nil when the server tests bodies on the scan's
// goroutine (Server.searchWorkers below 0). Its workers start with the
// first message handed over. ctx is the SEARCH's.
func (srv *Server) newSearchPool(ctx context.Context, c *imap.SearchCriteria, mt *matcher) *searchPool {
	n := int(srv.searchWorkers.Load())
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if n < 0 {
		return nil
	}
	p := &searchPool{c: c, proto: mt, srv: srv, workers: n, bytes: semaphore.NewWeighted(searchPoolBytes)}
	p.ctx, p.cancel = context.WithCancel(ctx)
	return p
}

// takes reports whether the pool may be handed m (not too large).
func (p *searchPool) takes(m *mailstore.Message) bool {
	return p != nil && m.Size <= searchPoolBytes
}

// add reads m's raw bytes (on the scan's goroutine) and hands it over,
// once the messages handed over before leave room for it; it returns the
// pool's failure, if a worker failed, to stop the scan.
func (p *searchPool) add(ctx context.Context, r ref, m *mailstore.Message) error {
	if err := p.ctx.Err(); err != nil {
		return p.stopped(err)
	}
	w := max(m.Size, 1)
	if err := p.bytes.Acquire(p.ctx, w); err != nil {
		return p.stopped(err)
	}
	if err := p.srv.searchMem.Acquire(p.ctx, w); err != nil {
		p.bytes.Release(w)
		return p.stopped(err)
	}
	d, err := m.Detached(ctx)
	if err != nil {
		p.release(w)
		return err
	}
	if !p.started {
		p.started = true
		p.jobs = make(chan poolJob, p.workers)
		for i := range p.workers {
			p.wg.Add(1)
			go p.work(i)
		}
	}
	select {
	case p.jobs <- poolJob{r: r, m: d, weight: w}:
		p.srv.searchPooled.Add(1)
		return nil
	case <-p.ctx.Done():
		p.release(w)
		return p.stopped(p.ctx.Err())
	}
}

// release gives back the room a message of weight w took.
func (p *searchPool) release(w int64) {
	p.srv.searchMem.Release(w)
	p.bytes.Release(w)
}

// stopped is the error for the pool's context having ended: a worker's
// failure if one failed (which cancelled it), else err.
func (p *searchPool) stopped(err error) error {
	if f := p.failure(); f != nil {
		return f
	}
	return err
}

func (p *searchPool) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// work tests the messages handed over until there are no more; once the
// pool's context has ended it only lets them go.
func (p *searchPool) work(i int) {
	defer p.wg.Done()
	mt := p.proto.clone()
	for j := range p.jobs {
		if p.ctx.Err() == nil {
			p.test(i, mt, j)
		}
		p.release(j.weight)
	}
}

// test tests one message on worker i with mt and records the outcome; a
// panic stops the pool and is kept for wait.
func (p *searchPool) test(i int, mt *matcher, j poolJob) {
	defer func() {
		mt.msg, mt.header, mt.body, mt.text = nil, nil, nil, nil
		if v := recover(); v != nil {
			p.mu.Lock()
			if p.panicked == nil {
				p.panicked = fmt.Sprintf("testing message %d of a SEARCH: %v\n%s", j.r.uid, v, debug.Stack())
			}
			p.mu.Unlock()
			p.cancel()
		}
	}()
	if h := p.srv.searchHook.Load(); h != nil {
		(*h)(i)
	}
	mt.msg, mt.seq, mt.header, mt.body, mt.text = j.m, j.r.seq, nil, nil, nil
	ok, err := mt.match(p.ctx, p.c)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		if p.err == nil || j.r.seq < p.errSeq {
			p.err, p.errSeq = err, j.r.seq
		}
		p.cancel()
	case ok:
		p.matched = append(p.matched, j.r)
	}
}

// wait lets the workers finish the messages handed over (or drop them,
// if the SEARCH failed or ended) and returns matched and theirs together,
// in sequence order, and the SEARCH's error: scanErr, unless it is the
// pool's context ending for a worker's failure, which is returned
// instead. Every worker has ended when it returns.
func (p *searchPool) wait(matched []ref, scanErr error) ([]ref, error) {
	if p == nil {
		return matched, scanErr
	}
	if scanErr != nil {
		p.cancel()
	}
	p.end()
	if p.panicked != nil {
		panic(p.panicked)
	}
	if p.err != nil && (scanErr == nil || errors.Is(scanErr, context.Canceled)) {
		return nil, p.err
	}
	if scanErr != nil {
		return nil, scanErr
	}
	if len(p.matched) == 0 {
		return matched, nil
	}
	matched = append(matched, p.matched...)
	slices.SortFunc(matched, func(a, b ref) int { return int(int64(a.seq) - int64(b.seq)) })
	return matched, nil
}

// end lets the workers finish (or drop) the messages handed over and
// waits for them to end; it then ends the pool's context. Once only.
func (p *searchPool) end() {
	if p.ended {
		return
	}
	p.ended = true
	if p.started {
		close(p.jobs)
		p.wg.Wait()
	}
	p.cancel()
}

// abandon ends a pool whose SEARCH did not come to wait (a panic on its
// goroutine): its workers drop what they hold, and end. Nothing once wait
// has run.
func (p *searchPool) abandon() {
	if p == nil || p.ended {
		return
	}
	p.cancel()
	p.end()
}

// clone returns a matcher of the same SEARCH for another goroutine: what
// it shares (the saved result, the index's answers, the \Recent set) is
// read only; its sets' spans are its own.
func (mt *matcher) clone() *matcher {
	return &matcher{max: mt.max, lastUID: mt.lastUID, saved: mt.saved, recent: mt.recent, index: mt.index}
}
