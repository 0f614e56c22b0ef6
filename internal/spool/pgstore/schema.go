package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SchemaLockKey is the pg_advisory_xact_lock key held while the schema is
// created or migrated ("cSp1" in ASCII).
const SchemaLockKey int64 = 0x63537031

//go:embed schema/*.sql
var schemaFS embed.FS

// migration is one step: the SQL taking the schema to version.
type migration struct {
	version int
	sql     string
}

// migrations returns the embedded steps in order. Files are named NNNN.sql,
// NNNN being the version they produce; versions are 1, 2, 3... without gaps.
// A released file is never edited.
func migrations() ([]migration, error) {
	names, err := fs.Glob(schemaFS, "schema/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var ms []migration
	for i, name := range names {
		v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "schema/"), ".sql"))
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("embedded schema file %s: want version %d", name, i+1)
		}
		b, err := schemaFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{v, string(b)})
	}
	return ms, nil
}

// LatestVersion is the newest schema version this program knows.
func LatestVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate brings the schema in the connection's search_path to the newest
// version, in one transaction under the schema advisory lock.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", SchemaLockKey); err != nil {
			return classify(err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS cspool_schema (
			version integer NOT NULL CHECK (version >= 0),
			singleton boolean NOT NULL DEFAULT true PRIMARY KEY CHECK (singleton))`); err != nil {
			return classify(err)
		}
		var have int
		err := tx.QueryRow(ctx, "SELECT version FROM cspool_schema").Scan(&have)
		switch {
		case err == pgx.ErrNoRows:
			if _, err := tx.Exec(ctx, "INSERT INTO cspool_schema (version) VALUES (0)"); err != nil {
				return classify(err)
			}
		case err != nil:
			return classify(err)
		}
		latest := ms[len(ms)-1].version
		if have > latest {
			return fmt.Errorf("schema version %d, this program knows up to %d (upgrade cspool): %w", have, latest, ErrNewerSchema)
		}
		for _, m := range ms[have:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				var pe *pgconn.PgError
				if errors.As(err, &pe) && pe.Code == compactedLogCode {
					return fmt.Errorf("applying schema step %d: %s: %w", m.version, pe.Message, ErrCompactedLog)
				}
				return fmt.Errorf("applying schema step %d: %w", m.version, classify(err))
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE cspool_schema SET version = $1", latest); err != nil {
			return classify(err)
		}
		return checkTriggers(ctx, tx)
	})
}

// schemaTriggers are the triggers of the newest schema version, by table:
// the rules the store's guarantees rest on (a log never deleted, its head
// never back, a chain hash never changed, a deleted entry's hash kept).
// The migrations make them once; a database restored without them (a
// pg_restore of some sections only, a psql run that went on past a failed
// CREATE TRIGGER) or with them disabled took appends and compactions
// without a word, a compaction then losing the hashes of the entries it
// deleted.
var schemaTriggers = [][2]string{
	{"cspool_logs", "cspool_logs_head_never_decreases"},
	{"cspool_logs", "cspool_logs_kept"},
	{"cspool_logs", "cspool_logs_no_truncate"},
	{"cspool_chain", "cspool_chain_immutable"},
	{"cspool_chain", "cspool_chain_no_truncate"},
	{"cspool_entries", "cspool_entries_chain_immutable"},
	{"cspool_entries", "cspool_entries_no_truncate"},
	{"cspool_entries", "cspool_entries_keep_chain"},
}

// checkTriggers returns an error wrapping ErrMissingTriggers naming the
// schemaTriggers missing from the tables of the search_path, or there
// but disabled (they fire in the origin role, 'O', or always, 'A').
func checkTriggers(ctx context.Context, tx pgx.Tx) error {
	var tables, names []string
	for _, tr := range schemaTriggers {
		tables, names = append(tables, tr[0]), append(names, tr[1])
	}
	rows, err := tx.Query(ctx, `SELECT w.t || '.' || w.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w (t, n, i)
		WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g
			WHERE g.tgrelid = to_regclass(w.t) AND g.tgname = w.n AND g.tgenabled IN ('O', 'A'))
		ORDER BY w.i`, tables, names)
	if err != nil {
		return classify(err)
	}
	missing, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return classify(err)
	}
	if len(missing) > 0 {
		return fmt.Errorf("triggers missing or disabled: %s: %w", strings.Join(missing, ", "), ErrMissingTriggers)
	}
	return nil
}
