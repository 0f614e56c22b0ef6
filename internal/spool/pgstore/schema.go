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
		return nil
	})
}
