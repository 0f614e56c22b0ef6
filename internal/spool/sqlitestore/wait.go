package sqlitestore

import (
	"context"
	"database/sql"
	"sync"
	"time"

	"cspool/internal/spool"
)

// waiters tracks, per user with at least one Wait in progress, the highest
// head this Store has seen committed, and a channel closed whenever it grows.
// Heads come only from the database or from this Store's own commits, never
// from a datagram's content.
type waiters struct {
	mu sync.Mutex
	m  map[string]*userWaiters
}

type userWaiters struct {
	n    int           // Wait calls registered
	head uint64        // highest committed head known
	ch   chan struct{} // closed and replaced when head grows
}

func newWaiters() *waiters {
	return &waiters{m: map[string]*userWaiters{}}
}

func (w *waiters) add(user string) *userWaiters {
	w.mu.Lock()
	defer w.mu.Unlock()
	uw := w.m[user]
	if uw == nil {
		uw = &userWaiters{ch: make(chan struct{})}
		w.m[user] = uw
	}
	uw.n++
	return uw
}

func (w *waiters) remove(user string, uw *userWaiters) {
	w.mu.Lock()
	defer w.mu.Unlock()
	uw.n--
	if uw.n == 0 {
		delete(w.m, user)
	}
}

func (w *waiters) state(uw *userWaiters) (uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return uw.head, uw.ch
}

// advance records that user's head is at least head, waking its waiters if
// that is news. Users nobody waits for are ignored.
func (w *waiters) advance(user string, head uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	uw := w.m[user]
	if uw == nil || head <= uw.head {
		return
	}
	uw.head = head
	close(uw.ch)
	uw.ch = make(chan struct{})
}

// users returns the users somebody waits for.
func (w *waiters) users() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	us := make([]string, 0, len(w.m))
	for u := range w.m {
		us = append(us, u)
	}
	return us
}

func (w *waiters) any() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.m) > 0
}

func (w *waiters) waited(user string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[user] != nil
}

// Wait implements spool.Store. It registers first and reads the head second,
// so an append committed in between is never missed; after that it sleeps on
// the user's channel, with no polling of its own.
func (s *Store) Wait(ctx context.Context, user string, after uint64) error {
	_, _, err := s.wait(ctx, user, after, false)
	return err
}

// WaitTip implements spool.TipWaiter: Wait, reading the tip (Tip) where
// Wait reads the head; the tip is returned when the wait ends while the
// head its waiters know is still the tip's.
func (s *Store) WaitTip(ctx context.Context, user string, after uint64) (spool.Tip, bool, error) {
	return s.wait(ctx, user, after, true)
}

// wait is Wait, and WaitTip when withTip is set.
func (s *Store) wait(ctx context.Context, user string, after uint64, withTip bool) (spool.Tip, bool, error) {
	var tip spool.Tip
	if err := spool.CheckUser(user); err != nil {
		return tip, false, err
	}
	if err := s.check(); err != nil {
		return tip, false, err
	}
	uw := s.waiters.add(user)
	defer s.waiters.remove(user, uw)
	// The head is one indexed row: read without ctx's cancellation, which
	// would cost the driver a goroutine to watch it, at every long-poll;
	// and on a goroutine of the store's (aside), not this one.
	var h uint64
	var err error
	rctx := context.WithoutCancel(ctx)
	if aerr := s.aside(func() {
		if withTip {
			tip, err = s.Tip(rctx, user)
			h = tip.Head
		} else {
			h, err = s.head(rctx, user)
		}
	}); aerr != nil {
		err = aerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return spool.Tip{}, false, ctx.Err()
		}
		return spool.Tip{}, false, err
	}
	s.waiters.advance(user, h)
	for {
		head, ch := s.waiters.state(uw)
		if head > after {
			return spool.Tip{}, false, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			// The tip stands while the head the waiters know is its own.
			if head, _ := s.waiters.state(uw); withTip && head == tip.Head {
				return tip, true, ctx.Err()
			}
			return spool.Tip{}, false, ctx.Err()
		case <-s.quit:
			return spool.Tip{}, false, spool.ErrClosed
		}
	}
}

// Reading a wait's head aside. A wait's goroutine sleeps for minutes, and
// the collector shrinks its stack meanwhile (it uses a few hundred bytes of
// it while it sleeps); a read through the SQLite driver needs tens of KB of
// stack. Read on the waiting goroutine, the head at the start of every
// wait grew that stack again, copying it several times over: with 10,000
// devices renewing their long-polls on a spool server, an eighth of its
// CPU, and about 8 KB of stack held by every wait. So the waits' reads run
// on the store's own goroutines (asideReader, Options.ReadConns of them,
// as many as there are read connections), whose stacks stay grown, and the
// waiting goroutines keep small ones.

// asideCall is a function run by an asideReader; done is signalled when it
// has returned.
type asideCall struct {
	fn   func()
	done chan struct{}
}

var asideCalls = sync.Pool{New: func() any { return &asideCall{done: make(chan struct{}, 1)} }}

// aside runs fn on one of the store's reader goroutines and returns once it
// has; spool.ErrClosed, with fn not run, once the store is closing.
func (s *Store) aside(fn func()) error {
	c := asideCalls.Get().(*asideCall)
	c.fn = fn
	select {
	case s.asides <- c:
	case <-s.quit:
		c.fn = nil
		asideCalls.Put(c)
		return spool.ErrClosed
	}
	<-c.done
	c.fn = nil
	asideCalls.Put(c)
	return nil
}

// asideReader runs the functions given to aside until the store closes.
func (s *Store) asideReader() {
	defer s.bg.Done()
	for {
		select {
		case <-s.quit:
			return
		case c := <-s.asides:
			c.fn()
			c.done <- struct{}{}
		}
	}
}

// refresh reads the heads of users from the database and wakes their
// waiters where the head moved.
func (s *Store) refresh(ctx context.Context, users []string) {
	for _, u := range users {
		if !s.waiters.waited(u) {
			continue
		}
		s.stats.headChecks.Add(1)
		h, err := s.head(ctx, u)
		if err != nil {
			if !s.closed.Load() {
				s.log.Warn("spool: checking head for waiters", "err", err)
			}
			return
		}
		s.waiters.advance(u, h)
	}
}

// scanBeyond is the number of waited users from which refreshAll reads
// every user's head in one pass rather than one query each.
const scanBeyond = 64

// refreshAll re-reads the head of every user somebody waits for: one query
// each when they are few, else one pass over the users table, which costs
// a fraction of that many queries.
func (s *Store) refreshAll(ctx context.Context) {
	users := s.waiters.users()
	if len(users) <= scanBeyond {
		s.refresh(ctx, users)
		return
	}
	s.stats.headChecks.Add(int64(len(users)))
	rows, err := s.rdb.QueryContext(ctx, "SELECT name, head FROM users")
	if err != nil {
		if !s.closed.Load() {
			s.log.Warn("spool: checking heads for waiters", "err", classify(err))
		}
		return
	}
	defer rows.Close()
	var name []byte
	var head uint64
	for rows.Next() {
		if err := rows.Scan(&name, &head); err != nil {
			break
		}
		s.waiters.advance(string(name), head)
	}
	if err := rows.Err(); err != nil && !s.closed.Load() {
		s.log.Warn("spool: checking heads for waiters", "err", classify(err))
	}
}

// fallback is the slow check that catches appends by other processes whose
// datagram was lost (or never sent). While anyone waits, it asks the write
// connection for PRAGMA data_version every FallbackInterval: that number
// changes only when another connection, hence another process, committed
// (every append of this process goes through that very connection), so
// this process's own appends, which wake their waiters directly, cost the
// check nothing. Only when another process committed does it re-read the
// heads of the waited users (refreshAll).
func (s *Store) fallback() {
	defer s.bg.Done()
	t := time.NewTicker(s.opts.FallbackInterval)
	defer t.Stop()
	last := int64(-1)
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		if !s.waiters.any() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.BusyTimeout)
		var v int64
		var err error
		if jerr := s.onWriter(ctx, func(db *sql.DB) {
			err = db.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v)
		}); jerr != nil {
			err = jerr
		}
		if err != nil {
			cancel()
			if !s.closed.Load() {
				s.log.Warn("spool: fallback check", "err", err)
			}
			continue
		}
		if v != last {
			last = v
			s.refreshAll(ctx)
		}
		cancel()
	}
}

// listenLoop wakes waiters for the users named in datagrams from other
// processes.
func (s *Store) listenLoop() {
	defer s.bg.Done()
	for {
		users, all, err := s.notify.receive()
		if err != nil {
			if !s.closed.Load() {
				s.log.Warn("spool: notify socket failed, relying on the fallback check", "err", err)
			}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.BusyTimeout)
		if all {
			s.refreshAll(ctx)
		} else {
			s.refresh(ctx, users)
		}
		cancel()
	}
}
