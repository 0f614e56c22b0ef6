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
// closes.
func keepKey(ctx context.Context, tx pgx.Tx, pub []byte, hold bool) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", SpoolKeyLockKey); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE cspool_spool_key IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return err
	}
	var recorded []byte
	var logs bool
	var obj int32
	var obj64 int64
	if err := tx.QueryRow(ctx, keyState).Scan(&recorded, &logs, &obj, &obj64); err != nil {
		return err
	}
	record, err := spool.KeepKey(recorded, pub, logs)
	if err != nil {
		return err
	}
	if record {
		var free bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1, $2)", HoldLockClass, obj).Scan(&free); err != nil {
			return err
		}
		if !free {
			live := &spool.LiveKeyError{Live: recorded}
			if err := tx.QueryRow(ctx, holders, int64(HoldLockClass), obj64).Scan(&live.Holders); err != nil {
				return err
			}
			return live
		}
		if _, err := tx.Exec(ctx, `INSERT INTO cspool_spool_key (singleton, key) VALUES (true, $1)
			ON CONFLICT (singleton) DO UPDATE SET key = excluded.key`, pub); err != nil {
			return err
		}
	}
	if !hold {
		return nil
	}
	// Only a transaction holding SpoolKeyLockKey takes the hold's lock
	// exclusively, and this one holds it: the try cannot meet one.
	var held bool
	if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_lock_shared($1, $2)", HoldLockClass, obj).Scan(&held); err != nil {
		return err
	}
	if !held {
		return errors.New("the spool key's hold lock is taken exclusively by another session")
	}
	return nil
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
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.isClosed {
		return spool.ErrClosed
	}
	if s.stopH != nil {
		return errors.New("pgstore: the store holds a spool key already")
	}
	conn, err := s.takeHold(ctx, pub)
	if err != nil {
		if errors.As(err, new(*spool.OtherKeyError)) || errors.As(err, new(*spool.LiveKeyError)) {
			return err
		}
		return callErr(ctx, "holding the spool key", err)
	}
	k := bytes.Clone(pub)
	s.spoolKey.Store(&k)
	hctx, stop := context.WithCancel(context.Background())
	s.stopH, s.hDone = stop, make(chan struct{})
	go s.keepHold(hctx, conn, k)
	return nil
}

// takeHold connects and runs keepKey with hold on the new connection; on
// success the connection holds the key.
func (s *Store) takeHold(ctx context.Context, pub []byte) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.dsn)
	if err != nil {
		return nil, err
	}
	configure(cfg, s.opts)
	cctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout+s.opts.StatementTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, err
	}
	err = pgx.BeginFunc(cctx, conn, func(tx pgx.Tx) error { return keepKey(cctx, tx, pub, true) })
	if err != nil {
		closeConn(conn)
		return nil, err
	}
	return conn, nil
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
func (s *Store) keepHold(ctx context.Context, conn *pgx.Conn, key []byte) {
	defer close(s.hDone)
	for {
		err := s.watch(ctx, conn)
		closeConn(conn)
		if ctx.Err() != nil {
			return
		}
		s.holdLost.Store(&spool.HoldLostError{})
		s.log.Error("the connection holding the spool key was lost: appends refused until it is held again (LMTP 451, HTTP 503)",
			"spool_key_id", spool.KeyID(key), "dsn", Redact(s.dsn), "err", err)
		backoff, said := 100*time.Millisecond, ""
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			conn, err = s.takeHold(ctx, key)
			if err == nil {
				s.holdLost.Store(nil)
				s.log.Info("the spool key is held again: appends go on", "spool_key_id", spool.KeyID(key))
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.holdLost.Store(&spool.HoldLostError{Cause: err})
			if err.Error() != said {
				said = err.Error()
				var live *spool.LiveKeyError
				var other *spool.OtherKeyError
				switch {
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
			}
		}
	}
}

// watch returns when the connection fails or ctx ends. Nothing is sent to
// the connection but a keepalive query every few seconds; an ended session
// (the server stopped, or pg_terminate_backend) tells so at once.
func (s *Store) watch(ctx context.Context, conn *pgx.Conn) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := conn.WaitForNotification(wctx)
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
		err = conn.Ping(pctx)
		pcancel()
		if err != nil {
			return fmt.Errorf("keepalive: %w", err)
		}
	}
}
