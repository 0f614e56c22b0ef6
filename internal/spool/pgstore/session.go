package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrSharedSessions means the DSN leads to a pooler that hands its server
// sessions out per transaction or per statement (PgBouncer's pool_mode =
// transaction or statement): a session's state then does not last from one
// transaction of a connection to the next, and is seen by other clients.
// The store needs sessions of its own: the spool key's hold is a
// session-level advisory lock (it would stay held on a pooled session, by
// no process, or be shared with another server's check, which would then
// record another key over the running servers'), the listener's LISTEN
// would be forgotten, and the session's statement_timeout and
// synchronous_commit would apply to other clients' transactions and not
// surely to ours. Open refuses such a DSN.
var ErrSharedSessions = errors.New("pgstore: the connections' sessions are shared between transactions or clients (a pooler in transaction or statement mode)")

// probeParam is the custom setting checkSessions sets on one connection's
// session and looks for afterwards.
const probeParam = "cspool.session_probe"

// probeConns is how many connections of its own checkSessions opens.
const probeConns = 3

// checkSessions makes sure that connections made with cfg have sessions
// of their own that last across transactions, as with PostgreSQL or a pooler
// in session mode. It opens probeConns connections (closed on return:
// the Store's pool may be smaller) and sets a random value
// of probeParam on each one's session (one transaction each), then, in two
// rounds in different orders, has each read the setting back (one
// transaction each): each must find its own value. A pooler that assigns
// a server session per transaction gives whoever asks next an idle one:
// PgBouncer by default the one released last, so the second connection
// runs on the first one's session and finds the first's value; with
// server_round_robin the sessions rotate, and a connection finds another's
// value or none. Either way Open fails with ErrSharedSessions.
func checkSessions(ctx context.Context, cfg *pgx.ConnConfig) error {
	conns := make([]*pgx.Conn, probeConns)
	tokens := make([]string, probeConns)
	pids := make([]int32, probeConns)
	for i := range conns {
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer closeConn(c)
		conns[i] = c
		tokens[i] = newToken()
	}
	// Simple protocol: no prepared statement, so that a pooler per
	// transaction answers these as PostgreSQL does, and only the session
	// tells.
	for i, c := range conns {
		var set string
		q := fmt.Sprintf("SELECT pg_backend_pid(), set_config('%s', '%s', false)", probeParam, tokens[i])
		if err := scanSimple(ctx, c, q, &pids[i], &set); err != nil {
			return err
		}
	}
	read := fmt.Sprintf("SELECT pg_backend_pid(), coalesce(current_setting('%s', true), '')", probeParam)
	for round := 0; round < 2; round++ {
		for k := range conns {
			i := k
			if round == 1 {
				i = len(conns) - 1 - k
			}
			var pid int32
			var seen string
			if err := scanSimple(ctx, conns[i], read, &pid, &seen); err != nil {
				return err
			}
			if seen == tokens[i] && pid == pids[i] {
				continue
			}
			for j := range tokens {
				if j != i && seen == tokens[j] {
					return fmt.Errorf("%w: one connection's transaction ran on another one's session (server process %d)", ErrSharedSessions, pid)
				}
			}
			return fmt.Errorf("%w: a connection's session setting was gone at its next transaction (server process %d, then %d)", ErrSharedSessions, pids[i], pid)
		}
	}
	return nil
}

// scanSimple runs q with the simple protocol on c and scans its one row's
// text columns into dst (*int32 or *string).
func scanSimple(ctx context.Context, c *pgx.Conn, q string, dst ...any) error {
	res, err := c.PgConn().Exec(ctx, q).ReadAll()
	if err != nil {
		return err
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) != len(dst) {
		return fmt.Errorf("%s: unexpected result (%d results)", q, len(res))
	}
	for i, d := range dst {
		v := string(res[0].Rows[0][i])
		switch d := d.(type) {
		case *string:
			*d = v
		case *int32:
			if _, err := fmt.Sscan(v, d); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
	}
	return nil
}

// newToken returns 32 random hex digits.
func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
