package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool"
)

// HoldLockClass is the first key of the advisory lock (the two-key form)
// that a Store holding its spool key (HoldSpoolKey) keeps, shared, on a
// connection of its own for as long as it is open ("cSp3" in ASCII). The
// second key is the OID of the schema's cspool_spool_key table, so that
// stores in other schemas of one database never meet on it. Recording a
// key other than the one recorded takes the lock exclusively, with a try
// that fails while any session holds it shared: that is how a server
// started with another key finds the running ones.
const HoldLockClass int32 = 0x63537033

// keyState is what the key's transaction reads: the recorded key, whether
// any log exists, and the second key of the hold's lock (and the same OID
// as a bigint, for pg_locks).
const keyState = `SELECT (SELECT key FROM cspool_spool_key), EXISTS (SELECT 1 FROM cspool_logs),
	'cspool_spool_key'::regclass::oid::int, 'cspool_spool_key'::regclass::oid::bigint`

// holders counts the sessions of this database holding the hold's lock
// shared.
const holders = `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock'
	AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
	AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2`

// keepKey is KeepSpoolKey's and HoldSpoolKey's transaction, on tx: it
// first takes SpoolKeyLockKey exclusively (every process recording or
// holding a key, and the appends in flight, are serialised by it), reads
// the key and, to record another, takes the hold's lock exclusively for
// the transaction, which fails while any session holds it (a
// *spool.LiveKeyError). With hold, the key is then held: the session's
// lock, shared, kept after the transaction ends, until the connection
// closes. previous not nil: the rule is spool.ReplaceKey's, not
// spool.KeepKey's. record: pub was recorded.
func keepKey(ctx context.Context, tx pgx.Tx, pub, previous []byte, hold bool) (record bool, err error) {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", SpoolKeyLockKey); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE cspool_spool_key IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return false, err
	}
	var recorded []byte
	var logs bool
	var obj int32
	var obj64 int64
	if err := tx.QueryRow(ctx, keyState).Scan(&recorded, &logs, &obj, &obj64); err != nil {
		return false, err
	}
	if previous != nil {
		record, err = spool.ReplaceKey(recorded, previous, pub)
	} else {
		record, err = spool.KeepKey(recorded, pub, logs)
	}
	if err != nil {
		return false, err
	}
	if previous != nil && record {
		// Not back to a key a replacement took out (spool.ReplacedBeforeError).
		var by []byte
		switch err := tx.QueryRow(ctx, "SELECT replaced_by FROM cspool_spool_key_replaced WHERE key = $1 ORDER BY seq DESC LIMIT 1", pub).Scan(&by); {
		case err == nil:
			return false, &spool.ReplacedBeforeError{Key: bytes.Clone(pub), ReplacedBy: by}
		case !errors.Is(err, pgx.ErrNoRows):
			return false, err
		}
	}
	if record {
		var free bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1, $2)", HoldLockClass, obj).Scan(&free); err != nil {
			return false, err
		}
		if !free {
			live := &spool.LiveKeyError{Live: recorded}
			if err := tx.QueryRow(ctx, holders, int64(HoldLockClass), obj64).Scan(&live.Holders); err != nil {
				return false, err
			}
			return false, live
		}
		if _, err := tx.Exec(ctx, `INSERT INTO cspool_spool_key (singleton, key) VALUES (true, $1)
			ON CONFLICT (singleton) DO UPDATE SET key = excluded.key`, pub); err != nil {
			return false, err
		}
	}
	if previous != nil && recorded != nil {
		// The replacement, or its record when the store's was made
		// before the store kept the keys replaced (spool.KeyHistory).
		if _, err := tx.Exec(ctx, `INSERT INTO cspool_spool_key_replaced (key, replaced_by)
			SELECT $1, $2 WHERE $3 OR NOT EXISTS (SELECT 1 FROM cspool_spool_key_replaced WHERE replaced_by = $2)`, previous, pub, record); err != nil {
			return false, err
		}
	}
	if !hold {
		return record, nil
	}
	// Only a transaction holding SpoolKeyLockKey takes the hold's lock
	// exclusively, and this one holds it: the try cannot meet one.
	var held bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_lock_shared($1, $2)", HoldLockClass, obj).Scan(&held); err != nil {
		return false, err
	}
	if !held {
		return false, errors.New("the spool key's hold lock is taken exclusively by another session")
	}
	return record, nil
}

// HoldSpoolKey implements spool.KeyHolder: keepKey on a connection of the
// Store's own, which then keeps the hold's lock shared until Close. A
// session's advisory locks end with it, so the hold ends when the process
// does, or when the connection is lost: the Store then refuses its appends
// (a *spool.HoldLostError, unavailable) until it has reconnected and taken
// the hold again, the same way, which it tries on its own (keepHold).
func (s *Store) HoldSpoolKey(ctx context.Context, pub []byte) error {
	if _, err := spool.KeepKey(nil, pub, false); err != nil {
		return err
	}
	_, err := s.hold(ctx, pub, nil)
	return err
}

// ReplaceSpoolKey implements spool.KeyReplacer: HoldSpoolKey, with
// spool.ReplaceKey's rule for keepKey's record. Recording pub over
// previous takes the hold's lock exclusively for its transaction first,
// as recording any other key does, so it is refused while any session
// holds a key. Once the hold is taken, a hold lost and taken again is
// HoldSpoolKey's: the store records pub by then.
func (s *Store) ReplaceSpoolKey(ctx context.Context, previous, pub []byte) (bool, error) {
	if _, err := spool.ReplaceKey(previous, previous, pub); err != nil {
		return false, err
	}
	return s.hold(ctx, pub, previous)
}

// hold is HoldSpoolKey's and ReplaceSpoolKey's work (previous nil: no
// replacement); replaced: pub was recorded over previous.
func (s *Store) hold(ctx context.Context, pub, previous []byte) (bool, error) {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.isClosed {
		return false, spool.ErrClosed
	}
	if s.stopH != nil {
		return false, errors.New("pgstore: the store holds a spool key already")
	}
	held, recorded, err := s.takeHold(ctx, pub, previous, false)
	if err != nil {
		if errors.As(err, new(*spool.OtherKeyError)) || errors.As(err, new(*spool.LiveKeyError)) ||
			errors.As(err, new(*spool.NotPreviousKeyError)) || errors.As(err, new(*spool.ReplacedBeforeError)) {
			return false, err
		}
		return false, callErr(ctx, "holding the spool key", err)
	}
	k := bytes.Clone(pub)
	s.spoolKey.Store(&k)
	hctx, stop := context.WithCancel(context.Background())
	s.stopH, s.hDone = stop, make(chan struct{})
	go s.keepHold(hctx, held, k)
	return recorded && previous != nil, nil
}

// heldSession is the connection holding the key, its server process and
// the random value of probeParam set on its session, which watch checks.
type heldSession struct {
	conn  *pgx.Conn
	pid   int32
	token string
}

// takeHold connects and runs keepKey with hold on the new connection; on
// success the connection holds the key, and recorded says keepKey
// recorded pub. With check, checkSessions runs first (the Store's start
// ran it already).
func (s *Store) takeHold(ctx context.Context, pub, previous []byte, check bool) (_ *heldSession, recorded bool, err error) {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return nil, false, err
	}
	configure(cfg, s.opts)
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout+s.opts.StatementTimeout)
	defer cancel()
	if check {
		if err := checkSessions(cctx, cfg); err != nil {
			return nil, false, err
		}
	}
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, false, err
	}
	err = pgx.BeginFunc(cctx, conn, func(tx pgx.Tx) (err error) {
		recorded, err = keepKey(cctx, tx, pub, previous, true)
		return err
	})
	if err != nil {
		closeConn(conn)
		return nil, false, err
	}
	h := &heldSession{conn: conn, token: newToken()}
	var set string
	if err := scanSimple(cctx, conn, fmt.Sprintf("SELECT pg_backend_pid(), set_config('%s', '%s', false)", probeParam, h.token), &h.pid, &set); err != nil {
		closeConn(conn)
		return nil, false, err
	}
	return h, recorded, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
}

// keepHold watches the connection holding the key until ctx ends, and
// when it is lost refuses the Store's appends and takes the hold again,
// retrying with backoff: if another key was recorded meanwhile (no process
// held this one, so a server with another could start) the hold is refused
// and the appends stay refused, as the check inside every append would
// refuse them anyway.
func (s *Store) keepHold(ctx context.Context, held *heldSession, key []byte) {
	defer close(s.hDone)
	for {
		err := s.watch(ctx, held)
		closeConn(held.conn)
		if ctx.Err() != nil {
			s.awaitReleased(held.pid)
			return
		}
		shared := errors.Is(err, ErrSharedSessions)
		if shared {
			s.holdLost.Store(&spool.HoldLostError{Cause: err})
			// The pool's connections ran on shared sessions too: their
			// prepared statements and settings are not surely theirs.
			s.pool.Reset()
			s.log.Error("the session holding the spool key is shared with other connections (a pooler in transaction or statement mode): appends refused until it is held on a session of its own (LMTP 451, HTTP 503)",
				"spool_key_id", spool.KeyID(key), "dsn", Redact(s.dsn), "err", err,
				"hint", "point --dsn at PostgreSQL itself, or at a PgBouncer database with pool_mode = session (docs/POSTGRES.md, \"Through PgBouncer\")")
		} else {
			s.holdLost.Store(&spool.HoldLostError{})
			s.log.Error("the connection holding the spool key was lost: appends refused until it is held again (LMTP 451, HTTP 503)",
				"spool_key_id", spool.KeyID(key), "dsn", Redact(s.dsn), "err", err)
		}
		backoff, said := 100*time.Millisecond, ""
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			held, _, err = s.takeHold(ctx, key, nil, shared)
			if err == nil {
				if shared {
					s.pool.Reset() // connections made meanwhile shared sessions too
				}
				s.holdLost.Store(nil)
				s.log.Info("the spool key is held again: appends go on", "spool_key_id", spool.KeyID(key))
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.holdLost.Store(&spool.HoldLostError{Cause: err})
			var live *spool.LiveKeyError
			var other *spool.OtherKeyError
			switch {
			case errors.Is(err, ErrSharedSessions):
				// Said above; its detail (process ids) changes at every try.
				backoff = 5 * time.Second
			case err.Error() == said:
			case errors.As(err, &live):
				s.log.Error("the spool key cannot be held again: running processes hold another spool key on this store; appends stay refused",
					"spool_key_id", spool.KeyID(key), "live_key_id", spool.KeyID(live.Live), "holders", live.Holders,
					"hint", "stop the servers whose spool_key_id is not the one the devices trust, then restart the others with the right --spool-key")
			case errors.As(err, &other):
				s.log.Error("the spool key cannot be held again: the store records another spool key; appends stay refused",
					"spool_key_id", spool.KeyID(key), "recorded_key_id", spool.KeyID(other.Recorded))
			default:
				s.log.Warn("taking the spool key's hold again failed; retrying", "spool_key_id", spool.KeyID(key), "err", classify(err))
			}
			said = err.Error()
		}
	}
}

// awaitReleased waits, up to 5 s, until the session of server process pid
// holds no advisory lock any more. The hold's connection is closed by pgx
// in the background once its wait was cancelled, and PostgreSQL releases a
// session's locks only as its process ends: without the wait, a server
// started right after Close with another key found the old hold and was
// refused (TestCloseReleasesHold).
func (s *Store) awaitReleased(pid int32) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		var held bool
		err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory')", pid).Scan(&held)
		if err != nil || !held {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// watch returns when the connection fails or ctx ends, or when the
// session holding the key turns out to be shared (ErrSharedSessions: a
// pooler switched to transaction mode under the running server, or one
// the check at start did not catch). Nothing is sent to the connection
// but a keepalive every few seconds, which checks that the connection's
// transaction still runs on the session that took the hold (its server
// process and its value of probeParam) and that a connection of the pool
// does not see that value. An ended session (the server stopped, or
// pg_terminate_backend) tells so at once.
func (s *Store) watch(ctx context.Context, held *heldSession) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := held.conn.WaitForNotification(wctx)
		idle := errors.Is(wctx.Err(), context.DeadlineExceeded) // read before cancel sets it
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			continue
		case !idle:
			return err
		}
		pctx, pcancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
		err = s.checkHeld(pctx, held)
		pcancel()
		if err != nil {
			return err
		}
	}
}

// checkHeld is watch's keepalive.
func (s *Store) checkHeld(ctx context.Context, held *heldSession) error {
	read := fmt.Sprintf("SELECT pg_backend_pid(), coalesce(current_setting('%s', true), '')", probeParam)
	var pid int32
	var seen string
	if err := scanSimple(ctx, held.conn, read, &pid, &seen); err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	if pid != held.pid || seen != held.token {
		return fmt.Errorf("%w: the connection holding the spool key took it on server process %d and now runs on %d", ErrSharedSessions, held.pid, pid)
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil // the pool's own calls report it; the hold's session is fine
	}
	defer c.Release()
	if err := scanSimple(ctx, c.Conn(), read, &pid, &seen); err == nil && seen == held.token {
		return fmt.Errorf("%w: another connection ran on the session holding the spool key (server process %d)", ErrSharedSessions, pid)
	}
	return nil
}
