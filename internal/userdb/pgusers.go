package userdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"cspool/internal/keys"
	"cspool/internal/pgsession"
	"cspool/internal/spool"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// UsersTable is the PostgreSQL table PG reads users from.
const UsersTable = "cspool_users"

// usersLockKey is the pg_advisory_xact_lock key held while the users table
// is created ("cSu1" in ASCII).
const usersLockKey int64 = 0x63537531

const usersTableSQL = `CREATE TABLE IF NOT EXISTS cspool_users (
    name       text NOT NULL PRIMARY KEY,   -- user name (keys.CheckUserName)
    public_key text NOT NULL                -- cspool-pub-1:... as printed by cspool gen-keys
);
CREATE INDEX IF NOT EXISTS cspool_users_public_key ON cspool_users (public_key)`

// usersKeyOnceSQL makes PostgreSQL refuse a row that gives a second user a
// key already listed (keys.ErrSharedKey): the text form of a key is
// canonical (docs/FORMAT.md), so equal keys are equal text once the
// whitespace Lookup ignores is trimmed.
const usersKeyOnceSQL = `CREATE UNIQUE INDEX IF NOT EXISTS cspool_users_public_key_once
    ON cspool_users (btrim(public_key, E' \t\r\n\v\f'))`

// trimmedKey is the expression of usersKeyOnceSQL's index.
const trimmedKey = `btrim(public_key, E' \t\r\n\v\f')`

// usersKeysSQL keeps, in cspool_user_keys, the user each key was last
// given (the key as usersKeyOnceSQL's index compares it), and makes
// PostgreSQL refuse a row that gives a user the key another user still
// listed was given last: two users' keys swapped in three UPDATEs, or
// bob's old key pasted on alice's row as bob's got a new one
// (ErrKeyMoved, as a users file's reload). The unique index sees only
// the keys listed now, and both left each key in one row alone. A key
// moves with its user renamed (UPDATE ... SET name, or bob's row gone
// and robert's holding its key). The trigger runs after the statement's
// row, so a renamed user is no longer listed under its old name; its
// function runs as the table's owner (SECURITY DEFINER), so an operator
// of another role may edit cspool_users without rights on
// cspool_user_keys. A key listed before the table of keys was made is
// taken as its row's. Servers of the store that read users files record
// theirs too (DB.UseLedger, through LastUsers and RecordUsers).
const usersKeysSQL = `CREATE TABLE IF NOT EXISTS cspool_user_keys (
    public_key text NOT NULL PRIMARY KEY,   -- as cspool_users_public_key_once compares it
    name       text NOT NULL                -- the user the key was last given
);
CREATE OR REPLACE FUNCTION cspool_users_key_moved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    k   text := btrim(NEW.public_key, E' \t\r\n\v\f');
    had text;
BEGIN
    SELECT name INTO had FROM cspool_user_keys WHERE public_key = k;
    IF had IS NOT NULL AND had <> NEW.name AND EXISTS (SELECT 1 FROM cspool_users WHERE name = had) THEN
        RAISE EXCEPTION 'user % has the key user % had, and % is still listed: ` + keyMovedText + `', quote_literal(NEW.name), quote_literal(had), quote_literal(had)
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'cspool_users_key_moved',
                  HINT = 'give each user the public key its own gen-keys printed, on its own row: UPDATE cspool_users SET public_key = ''cspool-pub-1:...'' WHERE name = ''NAME'' (docs/POSTGRES.md, Users)';
    END IF;
    INSERT INTO cspool_user_keys VALUES (k, NEW.name)
        ON CONFLICT (public_key) DO UPDATE SET name = EXCLUDED.name;
    RETURN NULL;
END
$$;
INSERT INTO cspool_user_keys SELECT btrim(public_key, E' \t\r\n\v\f'), name FROM cspool_users
    ON CONFLICT (public_key) DO NOTHING`

// usersKeysTriggerSQL puts cspool_users_key_moved on cspool_users, once
// (CREATE OR REPLACE TRIGGER needs PostgreSQL 14), and enables it when it
// is there but does not fire (disabled, as for a load of rows with
// pg_restore --disable-triggers or by hand, and left so, which a restore
// of the database keeps): the guard was then gone without a word.
const usersKeysTriggerSQL = `DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'cspool_users_key_moved' AND tgrelid = 'cspool_users'::regclass) THEN
        CREATE TRIGGER cspool_users_key_moved AFTER INSERT OR UPDATE ON cspool_users
            FOR EACH ROW EXECUTE FUNCTION cspool_users_key_moved();
    ELSIF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'cspool_users_key_moved' AND tgrelid = 'cspool_users'::regclass
            AND tgenabled IN ('O', 'A')) THEN
        ALTER TABLE cspool_users ENABLE TRIGGER cspool_users_key_moved;
    END IF;
END $$`

// keyMovedText is ErrKeyMoved's text, which the trigger's refusal ends with.
const keyMovedText = "a key moves to another user only when its user is renamed (its line gone); with the other user still listed, it is a mix-up"

// PG is the user database kept in the PostgreSQL table cspool_users
// (name, public_key), shared by every server process on the database.
//
// Every lookup queries the table, so a row inserted, changed or deleted with
// SQL takes effect at once in every process; Reload has nothing to do. A row
// whose key does not parse makes lookups of that name fail (and is logged),
// never authorizes anything. When the database cannot answer, lookups fail
// with an error wrapping spool.ErrUnavailable (LMTP 451).
type PG struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	timeout time.Duration

	mu      sync.Mutex
	refused map[string]string // key text -> what the key is (Refuse)
}

// OpenPG connects to the database at dsn and creates the users table if it
// is missing. timeout bounds each lookup (zero: 10 s).
func OpenPG(ctx context.Context, dsn string, timeout time.Duration, log *slog.Logger) (*PG, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("users table: parsing the PostgreSQL DSN: %w", err)
	}
	cfg.MaxConns = 4
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	// Parameters set by SQL, not in the startup message, after a DISCARD
	// ALL, as the store's (docs/POSTGRES.md, "Through PgBouncer").
	pgsession.Configure(cfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("users table: connecting: %w", pgUnavailable(err))
	}
	p := &PG{pool: pool, log: log, timeout: timeout}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = pgx.BeginFunc(cctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(cctx, "SELECT pg_advisory_xact_lock($1)", usersLockKey); err != nil {
			return err
		}
		if _, err := tx.Exec(cctx, usersTableSQL); err != nil {
			return err
		}
		// A table made before the unique index may list a key twice:
		// name the users rather than let the index's creation fail.
		if err := sharedKeyRows(cctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(cctx, usersKeyOnceSQL); err != nil {
			return err
		}
		if _, err := tx.Exec(cctx, usersKeysSQL); err != nil {
			return err
		}
		_, err := tx.Exec(cctx, usersKeysTriggerSQL)
		return err
	})
	if errors.Is(err, keys.ErrSharedKey) {
		pool.Close()
		return nil, err
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("users table: creating %s: %w", UsersTable, pgUnavailable(err))
	}
	n := p.Len()
	log.Info("users table opened", "table", UsersTable, "users", n)
	return p, nil
}

// Close closes the connection pool.
func (p *PG) Close() { p.pool.Close() }

// TestMode is always false: the table lists the users.
func (p *PG) TestMode() bool { return false }

// Path names the source of users, for logs.
func (p *PG) Path() string { return "postgres table " + UsersTable }

// Len counts the users, or returns -1 when the database cannot answer.
func (p *PG) Len() int {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	var n int
	if err := p.pool.QueryRow(ctx, "SELECT count(*) FROM "+UsersTable).Scan(&n); err != nil {
		return -1
	}
	return n
}

// sharedKeyRows returns an error wrapping keys.ErrSharedKey naming two users
// the table gives one key, if any.
func sharedKeyRows(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	var a, b string
	err := q.QueryRow(ctx, `SELECT min(name), max(name) FROM `+UsersTable+
		` GROUP BY `+trimmedKey+` HAVING count(*) > 1 ORDER BY 1 LIMIT 1`).Scan(&a, &b)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("users table %s: users %q and %q have one public key: %w", UsersTable, a, b, keys.ErrSharedKey)
}

// Refuse makes p refuse key as any user's key, what naming it in errors
// ("the spool's public key"): it returns an error wrapping ErrRefusedKey if
// a row gives it to a user now; from then on a Lookup of a user whose row
// holds it fails (and is logged), so a row inserted later authorizes
// nothing and no mail is sealed to it, and Reload reports such a row.
func (p *PG) Refuse(key keys.PublicKey, what string) error {
	p.mu.Lock()
	if p.refused == nil {
		p.refused = map[string]string{}
	}
	p.refused[key.String()] = what
	p.mu.Unlock()
	return p.checkRefused()
}

// checkRefused returns an error naming a user whose row holds a refused key.
func (p *PG) checkRefused() error {
	p.mu.Lock()
	texts := make([]string, 0, len(p.refused))
	for t := range p.refused {
		texts = append(texts, t)
	}
	p.mu.Unlock()
	if len(texts) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	var name, text string
	err := p.pool.QueryRow(ctx, `SELECT name, `+trimmedKey+` FROM `+UsersTable+
		` WHERE `+trimmedKey+` = ANY($1) ORDER BY name LIMIT 1`, texts).Scan(&name, &text)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("users table: checking for refused keys: %w", pgUnavailable(err))
	}
	return fmt.Errorf("%s: user %q has %s: %w", p.Path(), name, p.refusedWhat(text), ErrRefusedKey)
}

// refusedWhat names the refused key whose text is text, or "".
func (p *PG) refusedWhat(text string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused[text]
}

// Reload has nothing to re-read (every lookup reads the table); it checks
// the table against the rules the users file keeps (one key per user, no
// refused key) and reports what breaks them. Lookups enforce both anyway.
func (p *PG) Reload() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	err := sharedKeyRows(ctx, p.pool)
	if err != nil && !errors.Is(err, keys.ErrSharedKey) {
		err = fmt.Errorf("users table: checking for shared keys: %w", pgUnavailable(err))
	}
	if err == nil {
		err = p.checkRefused()
	}
	if err != nil {
		p.log.Error("users table check failed", "table", UsersTable, "err", err)
		return err
	}
	p.log.Info("users table is read on every lookup; nothing to reload", "table", UsersTable)
	return nil
}

// LastUsers returns, of each key given, the user cspool_user_keys says it
// was last given (keys it knows nothing of are absent): the Ledger of a
// users file read by servers of this database.
func (p *PG) LastUsers(ctx context.Context, ks []keys.PublicKey) (map[string]string, error) {
	texts := make([]string, len(ks))
	for i, k := range ks {
		texts[i] = k.String()
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	rows, err := p.pool.Query(cctx, "SELECT public_key, name FROM cspool_user_keys WHERE public_key = ANY($1)", texts)
	if err != nil {
		return nil, fmt.Errorf("reading cspool_user_keys: %w", pgUnavailable(err))
	}
	last := map[string]string{}
	var k, name string
	_, err = pgx.ForEachRow(rows, []any{&k, &name}, func() error {
		last[k] = name
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading cspool_user_keys: %w", pgUnavailable(err))
	}
	return last, nil
}

// RecordUsers records in cspool_user_keys that each key of users was last
// given to its user.
func (p *PG) RecordUsers(ctx context.Context, users keys.Users) error {
	names := make([]string, 0, len(users))
	texts := make([]string, 0, len(users))
	for n, k := range users {
		names, texts = append(names, n), append(texts, k.String())
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	_, err := p.pool.Exec(cctx, `INSERT INTO cspool_user_keys SELECT * FROM unnest($1::text[], $2::text[])
		ON CONFLICT (public_key) DO UPDATE SET name = EXCLUDED.name`, texts, names)
	if err != nil {
		return fmt.Errorf("recording in cspool_user_keys: %w", pgUnavailable(err))
	}
	return nil
}

// Lookup returns user's public key, or an error wrapping keys.ErrUnknownUser,
// or spool.ErrUnavailable when the database cannot answer.
func (p *PG) Lookup(ctx context.Context, user string) (keys.PublicKey, error) {
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var text string
	err := p.pool.QueryRow(cctx, "SELECT public_key FROM "+UsersTable+" WHERE name = $1", user).Scan(&text)
	if errors.Is(err, pgx.ErrNoRows) {
		return keys.PublicKey{}, fmt.Errorf("looking up user %q: %w", user, keys.ErrUnknownUser)
	}
	if err != nil {
		if ctx.Err() != nil {
			return keys.PublicKey{}, ctx.Err()
		}
		return keys.PublicKey{}, fmt.Errorf("looking up user %q in %s: %w", user, UsersTable, pgUnavailable(err))
	}
	k, err := keys.ParsePublic(strings.TrimSpace(text))
	if err != nil {
		p.log.Error("users table: bad public key", "user", user, "err", err)
		return keys.PublicKey{}, fmt.Errorf("users table: key of user %q: %w", user, err)
	}
	if what := p.refusedWhat(k.String()); what != "" {
		err := fmt.Errorf("%s: user %q has %s: %w", p.Path(), user, what, ErrRefusedKey)
		p.log.Error("users table: refused key", "user", user, "err", err)
		return keys.PublicKey{}, err
	}
	return k, nil
}

// Authorize reports whether key may act as user: nil, or an error wrapping
// ErrUnknownKey, keys.ErrForbidden, or spool.ErrUnavailable.
func (p *PG) Authorize(ctx context.Context, user string, key keys.PublicKey) error {
	if err := keys.CheckUserName(user); err != nil {
		return fmt.Errorf("authorizing: %w", err)
	}
	k, err := p.Lookup(ctx, user)
	switch {
	case err == nil && k.Equal(key):
		return nil
	case err != nil && !errors.Is(err, keys.ErrUnknownUser):
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var other string
	err = p.pool.QueryRow(cctx, "SELECT name FROM "+UsersTable+" WHERE public_key = $1 LIMIT 1", key.String()).Scan(&other)
	switch {
	case err == nil:
		return fmt.Errorf("key %x acting as user %q: %w", key.KeyID(), user, keys.ErrForbidden)
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("key %x for user %q: %w", key.KeyID(), user, ErrUnknownKey)
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("authorizing user %q: %w", user, pgUnavailable(err))
}

// Check is Authorize: the table registers nobody on first use.
func (p *PG) Check(ctx context.Context, user string, key keys.PublicKey) error {
	return p.Authorize(ctx, user, key)
}

// pgUnavailable wraps database failures with spool.ErrUnavailable, except
// errors the server reports for a statement (a bug, not an outage), other
// than shutdowns, timeouts and resource shortages.
func pgUnavailable(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57", "58":
		default:
			return err
		}
	}
	return fmt.Errorf("%w: %w", spool.ErrUnavailable, err)
}
