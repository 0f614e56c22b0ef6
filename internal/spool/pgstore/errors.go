package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNewerSchema means the database was migrated by a newer cspool: this
// version cannot know what its schema means, so it refuses to touch it.
var ErrNewerSchema = errors.New("pgstore: database schema is newer than this program")

// ErrCompactedLog means a log lost entries to compaction before this
// version kept chain hashes: its chain cannot be computed, so the migration
// to schema version 2 refuses to run and changes nothing (docs/POSTGRES.md).
var ErrCompactedLog = errors.New("pgstore: a log compacted before schema version 2 cannot be chained")

// compactedLogCode is the SQLSTATE schema/0002.sql raises for such a log.
const compactedLogCode = "CSP01"

// classify wraps err with spool.ErrUnavailable when it is temporary and with
// spool.ErrTooLarge when PostgreSQL refused a value's size. Server errors
// with another SQLSTATE (bugs, constraint violations) are returned as they
// are.
func classify(err error) error {
	if err == nil || errors.Is(err, spool.ErrUnavailable) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "53100": // disk_full
			return fmt.Errorf("%w: %w: %w", spool.ErrUnavailable, spool.ErrFull, err)
		case pe.Code == "57014", // query_canceled: statement_timeout
			pe.Code == "40001", pe.Code == "40P01", // serialization failure, deadlock
			pe.Code == "55P03",  // lock_not_available
			pe.Code[:2] == "08", // connection exception
			pe.Code[:2] == "53", // insufficient resources: disk full, out of memory, too many connections
			pe.Code[:2] == "57", // operator intervention: admin/crash shutdown, cannot connect now
			pe.Code[:2] == "58", // system error: I/O
			pe.Code == "25006":  // read_only_sql_transaction: a standby during failover
			return fmt.Errorf("%w: %w", spool.ErrUnavailable, err)
		case pe.Code[:2] == "54": // program limit exceeded
			return fmt.Errorf("%w: %w", spool.ErrTooLarge, err)
		}
		return err
	}
	// Anything below SQL is temporary: refused or lost connections
	// ("conn closed", "unexpected EOF"), TLS, DNS, our own deadline, a pool
	// that cannot connect.
	return fmt.Errorf("%w: %w", spool.ErrUnavailable, err)
}

// callErr turns the error of a call that used ctx (the caller's) and cctx
// (bounded by the statement timeout) into the store's answer: the caller's
// own cancellation comes back as ctx.Err(), everything else classified.
func callErr(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return fmt.Errorf("%s: %w", op, classify(err))
}

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns dsn with its password replaced by "xxxxx", for logs and
// error messages.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// startupParams are the parameters sent in the startup message. PgBouncer
// refuses a connection whose startup message carries any other ("FATAL:
// unsupported startup parameter"), unless told to ignore it, and then it is
// lost without a word: every other parameter, ours (statement_timeout,
// synchronous_commit) and the DSN's (search_path, ...), is set by SET on
// the new connection instead (sessionSetup), which works the same on
// PostgreSQL and through a session pool.
var startupParams = map[string]bool{
	"application_name": true, "client_encoding": true, "datestyle": true, "timezone": true,
	"standard_conforming_strings": true, "options": true, "replication": true,
}

// configure sets what every connection of a Store needs.
func configure(cc *pgx.ConnConfig, o Options) {
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "cspool"
	}
	var set []string
	for k, v := range cc.RuntimeParams {
		if !startupParams[strings.ToLower(k)] {
			set = append(set, k, v)
			delete(cc.RuntimeParams, k)
		}
	}
	// Ours last: they win over the DSN's.
	set = append(set, "statement_timeout", strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10),
		"synchronous_commit", "on")
	after := cc.AfterConnect
	cc.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		if after != nil {
			if err := after(ctx, pc); err != nil {
				return err
			}
		}
		return sessionSetup(ctx, pc, set)
	}
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > o.ConnectTimeout {
		cc.ConnectTimeout = o.ConnectTimeout
	}
}

// sessionSetup starts the connection's session afresh (DISCARD ALL: a
// pooler in session mode whose server_reset_query is empty hands a new
// client the session of the last one, with its prepared statements, which
// collide with ours, its settings, LISTENs and advisory locks, the spool
// key's hold among them) and sets the session's parameters, name and value
// pairs in kv, in one statement.
func sessionSetup(ctx context.Context, pc *pgconn.PgConn, kv []string) error {
	if _, err := pc.Exec(ctx, "DISCARD ALL").ReadAll(); err != nil {
		return fmt.Errorf("starting the session afresh: %w", err)
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
