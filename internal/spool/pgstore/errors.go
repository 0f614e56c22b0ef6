package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"cspool/internal/pgsession"
	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNewerSchema means the database was migrated by a newer cspool: this
// version cannot know what its schema means, so it refuses to touch it.
var ErrNewerSchema = errors.New("pgstore: database schema is newer than this program")

// ErrMissingTriggers means the schema is at the newest version but some of
// the triggers that version makes are missing or disabled, as in a
// database restored in part: the store refuses to run without the rules
// they keep (docs/POSTGRES.md, "Schema").
var ErrMissingTriggers = errors.New("pgstore: the schema lacks triggers the store relies on")

// ErrCompactedLog means a log lost entries to compaction before this
// version kept chain hashes: its chain cannot be computed, so the migration
// to schema version 2 refuses to run and changes nothing (docs/POSTGRES.md).
var ErrCompactedLog = errors.New("pgstore: a log compacted before schema version 2 cannot be chained")

// compactedLogCode is the SQLSTATE schema/0002.sql raises for such a log.
const compactedLogCode = "CSP01"

// ErrDSNRefused means what the DSN names is refused, which trying again
// does not change: the DSN cannot be parsed, PostgreSQL refuses its user's
// login (SQLSTATE class 28: no such role, a wrong password) or has no
// database of its name (3D000). Open's error wraps it without changing its
// text.
var ErrDSNRefused = errors.New("pgstore: the DSN is refused")

// dsnRefusedError is err, also matching ErrDSNRefused.
type dsnRefusedError struct{ err error }

func (e *dsnRefusedError) Error() string   { return e.err.Error() }
func (e *dsnRefusedError) Unwrap() []error { return []error{e.err, ErrDSNRefused} }

// refusedDSN marks err, a failure to connect, with ErrDSNRefused when
// PostgreSQL refused the login or the database.
func refusedDSN(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "28") || pe.Code == "3D000") {
		return &dsnRefusedError{err}
	}
	return err
}

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
		q, changed := u.Query(), false
		for k := range q {
			// password, and sslpassword (the client key's passphrase),
			// in any case.
			if strings.Contains(strings.ToLower(k), "password") {
				q.Set(k, "xxxxx")
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	if i := strings.Index(dsn, "://"); i >= 0 {
		// A URL url.Parse refuses (a port mistyped, a password holding
		// "/" unescaped): its name and password, and its query, left
		// out whole.
		rest := dsn[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = "xxxxx@" + rest[at+1:]
		}
		if q := strings.IndexByte(rest, '?'); q >= 0 {
			rest = rest[:q] + "?xxxxx"
		}
		return dsn[:i+3] + rest
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// configure sets what every connection of a Store needs: its session
// started afresh with statement_timeout and synchronous_commit = on set by
// SQL (internal/pgsession), and a connect timeout no longer than Options'.
func configure(cc *pgx.ConnConfig, o Options) {
	pgsession.Configure(cc, "statement_timeout", strconv.FormatInt(o.StatementTimeout.Milliseconds(), 10),
		"synchronous_commit", "on")
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > o.ConnectTimeout {
		cc.ConnectTimeout = o.ConnectTimeout
	}
}
