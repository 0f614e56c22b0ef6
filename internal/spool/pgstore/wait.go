package pgstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
)

// waiters fans wake-ups out to the Waits blocked in this process. A wake
// closes the user's channel; waiters then re-read the head from the
// database, so a spurious wake costs a read, never a wrong answer.
type waiters struct {
	mu sync.Mutex
	m  map[string]*waitSlot
}

type waitSlot struct {
	ch   chan struct{}
	n    int    // Waits registered on this user
	head uint64 // the highest head a Wait of this user has read
}

// channel returns the channel the next wake of user closes; the caller must
// have registered (add).
func (w *waiters) channel(user string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.m[user].ch
}

func (w *waiters) add(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sl := w.m[user]
	if sl == nil {
		sl = &waitSlot{ch: make(chan struct{})}
		w.m[user] = sl
	}
	sl.n++
}

func (w *waiters) remove(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sl := w.m[user]; sl != nil {
		if sl.n--; sl.n == 0 {
			delete(w.m, user)
		}
	}
}

// seen records a head a Wait of user read, for the recheck to compare with.
func (w *waiters) seen(user string, head uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sl := w.m[user]; sl != nil && head > sl.head {
		sl.head = head
	}
}

func (w *waiters) wake(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sl := w.m[user]; sl != nil {
		close(sl.ch)
		sl.ch = make(chan struct{})
	}
}

// wakeBeyond wakes user's waiters if head is beyond every head they read.
func (w *waiters) wakeBeyond(user string, head uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sl := w.m[user]; sl != nil && head > sl.head {
		sl.head = head
		close(sl.ch)
		sl.ch = make(chan struct{})
	}
}

func (w *waiters) wakeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, sl := range w.m {
		close(sl.ch)
		sl.ch = make(chan struct{})
	}
}

// users returns the names of the users somebody waits for.
func (w *waiters) users() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	us := make([][]byte, 0, len(w.m))
	for u := range w.m {
		us = append(us, []byte(u))
	}
	return us
}

// Wait returns nil once user's head is beyond after, ctx.Err() when ctx
// ends, spool.ErrClosed when the store closes, and an error wrapping
// spool.ErrUnavailable when the head cannot be read. Between reads of the
// head it sleeps on the user's channel, with no timer of its own: a notice,
// an append through this Store, the listener coming back, or the Store's
// recheck (recheck) wakes it.
func (s *Store) Wait(ctx context.Context, user string, after uint64) error {
	_, _, err := s.wait(ctx, user, after, false)
	return err
}

// WaitTip implements spool.TipWaiter: Wait, reading the tip (Tip) where
// Wait reads the head, one query either way.
func (s *Store) WaitTip(ctx context.Context, user string, after uint64) (spool.Tip, bool, error) {
	return s.wait(ctx, user, after, true)
}

// wait is Wait, and WaitTip when withTip is set: then it returns the tip
// it read last (ok once it read one).
func (s *Store) wait(ctx context.Context, user string, after uint64, withTip bool) (tip spool.Tip, ok bool, err error) {
	if err := spool.CheckUser(user); err != nil {
		return tip, false, err
	}
	select {
	case <-s.closed:
		return tip, false, spool.ErrClosed
	default:
	}
	s.waiters.add(user)
	defer s.waiters.remove(user)
	for {
		// Take the channel before reading the head: an append committed
		// after the read closes this very channel.
		ch := s.waiters.channel(user)
		var head uint64
		if withTip {
			t, err := s.Tip(ctx, user)
			if err != nil {
				return spool.Tip{}, false, err
			}
			tip, ok, head = t, true, t.Head
		} else if head, err = s.Head(ctx, user); err != nil {
			return tip, false, err
		}
		if head > after {
			return tip, ok, nil
		}
		s.waiters.seen(user, head)
		select {
		case <-ch:
		case <-ctx.Done():
			return tip, ok, ctx.Err()
		case <-s.closed:
			return tip, ok, spool.ErrClosed
		}
	}
}

// recheckChunk bounds the names one recheck query carries.
const recheckChunk = 5000

// recheck is the safety net for notices that never came (none are lost
// while the listener's connection lives, and it wakes everyone when it
// comes back): every Options.RecheckInterval, while anyone waits, it reads
// the heads of every waited user in one query per recheckChunk names and
// wakes those whose head moved beyond what their Waits read. When the
// query fails (the database is down) it wakes everyone, so that each Wait
// reads its head and reports the failure. One query for all waiters, not
// one timer and one query per Wait: with 10,000 waiting devices that was
// 2,000 queries a second.
func (s *Store) recheck() {
	defer close(s.rDone)
	t := time.NewTicker(s.opts.RecheckInterval)
	defer t.Stop()
	for {
		select {
		case <-s.closed:
			return
		case <-t.C:
		}
		users := s.waiters.users()
		for len(users) > 0 {
			chunk := users[:min(len(users), recheckChunk)]
			users = users[len(chunk):]
			if err := s.recheckHeads(chunk); err != nil {
				s.waiters.wakeAll()
				break
			}
		}
	}
}

func (s *Store) recheckHeads(names [][]byte) error {
	s.rechecks.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StatementTimeout)
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT l.name, t.tip_head FROM cspool_logs l, cspool_tip(l.id) t WHERE l.name = ANY ($1::bytea[])", names)
	if err != nil {
		return err
	}
	defer rows.Close()
	var name []byte
	var head int64
	for rows.Next() {
		if err := rows.Scan(&name, &head); err != nil {
			return err
		}
		s.waiters.wakeBeyond(string(name), uint64(head))
	}
	return rows.Err()
}

// listen keeps one connection LISTENing on NotifyChannel and wakes the
// waiters each notice names. It reports the first connection's outcome on
// ready; after that it reconnects (with backoff) whenever the connection is
// lost, and wakes every waiter once it is back, since notices sent while it
// was away are lost.
func (s *Store) listen(ctx context.Context, ready chan<- error) {
	defer close(s.lDone)
	backoff := 100 * time.Millisecond
	first := true
	for {
		conn, pid, err := s.listenConn(ctx)
		if first {
			ready <- err
			if err != nil {
				return
			}
			first = false
		} else if err == nil {
			s.log.Info("postgres listener reconnected", "dsn", Redact(s.dsn))
			s.waiters.wakeAll()
		}
		if err == nil {
			backoff = 100 * time.Millisecond
			err = s.receive(ctx, conn, pid)
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("postgres listener lost its connection; reconnecting", "dsn", Redact(s.dsn), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// listenConn connects and LISTENs; it returns the connection and its
// server process (pg_backend_pid: through PgBouncer the connection's own
// process id is the bouncer's).
func (s *Store) listenConn(ctx context.Context) (*pgx.Conn, int32, error) {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return nil, 0, err
	}
	configure(cfg, s.opts)
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout+s.opts.StatementTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, 0, classify(err)
	}
	var pid int32
	if err := scanSimple(cctx, conn, "SELECT pg_backend_pid()", &pid); err != nil {
		conn.Close(context.Background())
		return nil, 0, classify(err)
	}
	if _, err := conn.Exec(cctx, "LISTEN "+NotifyChannel); err != nil {
		conn.Close(context.Background())
		return nil, 0, classify(err)
	}
	return conn, pid, nil
}

// receive delivers notices until the connection fails or ctx ends, and
// returns what ended it: PostgreSQL's own error when the session ended (a
// FATAL such as pg_terminate_backend's 57P01, or the server shutting
// down), the keepalive's when the connection went quiet. A keepalive query
// every few seconds notices a dead connection even when no notice comes.
func (s *Store) receive(ctx context.Context, conn *pgx.Conn, listening int32) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := conn.WaitForNotification(wctx)
		// Read before cancel, which ends wctx too: read after it, every
		// failure looked idle, and the keepalive then sent on the dead
		// connection gave its own "conn closed" for PostgreSQL's error.
		idle := errors.Is(wctx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case err == nil:
			s.deliver(n.Payload)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !idle:
			return err
		}
		// Idle for 5 s: check the connection is alive, and still on the
		// session that LISTENs (a pooler switched to transaction mode
		// would hand it another: ErrSharedSessions, and it reconnects).
		pctx, pcancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
		var pid int32
		err = scanSimple(pctx, conn, "SELECT pg_backend_pid()", &pid)
		pcancel()
		if err != nil {
			return fmt.Errorf("keepalive: %w", err)
		}
		if pid != listening {
			return fmt.Errorf("%w: the listener's connection LISTENs on server process %d and now runs on %d", ErrSharedSessions, listening, pid)
		}
	}
}

func (s *Store) deliver(payload string) {
	if payload == "" {
		s.waiters.wakeAll()
		return
	}
	name, err := hex.DecodeString(payload)
	if err != nil {
		s.waiters.wakeAll()
		return
	}
	s.waiters.wake(string(name))
}
