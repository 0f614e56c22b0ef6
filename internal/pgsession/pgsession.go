// Package pgsession starts the PostgreSQL sessions of the spool server's
// connections, the store's (internal/spool/pgstore) and the users table's
// (internal/userdb), so that they work the same on PostgreSQL itself and
// through PgBouncer in session mode (docs/POSTGRES.md, "Through
// PgBouncer").
//
// Implementation notes:
//
//   - Startup message: it carries only the parameters PgBouncer tracks
//     (startupParams: application_name, client_encoding, DateStyle,
//     TimeZone, standard_conforming_strings, options, and replication).
//     PgBouncer refuses a connection whose startup message carries any
//     other ("FATAL: unsupported startup parameter"), unless told to ignore
//     it, and then drops it without a word. Every other parameter of the
//     DSN (search_path, ...) and the caller's own are set by SQL instead.
//   - Session start: each new connection first runs DISCARD ALL. A pooler
//     in session mode whose server_reset_query is empty hands a new client
//     the session of the last one as it was: its prepared statements,
//     which collide with pgx's, its settings, LISTENs and advisory locks.
//     Then one statement, SELECT set_config(name, value, false), ..., sets
//     the session's parameters: the DSN's first, the caller's last, so the
//     caller's win. With none to set, it is not run.
//   - application_name is "cspool" unless the DSN names another.
package pgsession

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// startupParams are the parameters that stay in the startup message.
var startupParams = map[string]bool{
	"application_name": true, "client_encoding": true, "datestyle": true, "timezone": true,
	"standard_conforming_strings": true, "options": true, "replication": true,
}

// Configure makes every new connection of cc start its session afresh and
// set by SQL the runtime parameters of cc that do not go in the startup
// message (it takes them out of cc.RuntimeParams), then set, name and
// value pairs, which win over cc's. It runs after cc's own AfterConnect,
// if any. A failure of either statement fails the connection, with an
// error saying which.
func Configure(cc *pgx.ConnConfig, set ...string) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "cspool"
	}
	var kv []string
	for k, v := range cc.RuntimeParams {
		if !startupParams[strings.ToLower(k)] {
			kv = append(kv, k, v)
			delete(cc.RuntimeParams, k)
		}
	}
	kv = append(kv, set...)
	after := cc.AfterConnect
	cc.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		if after != nil {
			if err := after(ctx, pc); err != nil {
				return err
			}
		}
		return start(ctx, pc, kv)
	}
}

// start starts pc's session afresh (DISCARD ALL) and sets the session's
// parameters, name and value pairs in kv, in one statement.
func start(ctx context.Context, pc *pgconn.PgConn, kv []string) error {
	if _, err := pc.Exec(ctx, "DISCARD ALL").ReadAll(); err != nil {
		return fmt.Errorf("starting the session afresh: %w", err)
	}
	if len(kv) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString("SELECT ")
	for i := 0; i < len(kv); i += 2 {
		if i > 0 {
			q.WriteString(", ")
		}
		fmt.Fprintf(&q, "set_config(%s, %s, false)", quote(kv[i]), quote(kv[i+1]))
	}
	if _, err := pc.Exec(ctx, q.String()).ReadAll(); err != nil {
		return fmt.Errorf("setting the session's parameters: %w", err)
	}
	return nil
}

// quote returns s as an SQL string literal (standard_conforming_strings
// on, as in every PostgreSQL since 9.1).
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
