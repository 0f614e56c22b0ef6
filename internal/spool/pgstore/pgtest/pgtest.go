// Package pgtest gives tests a fresh PostgreSQL database or schema of their
// own, dropped when the test ends.
//
// The server is found at $CSPOOL_TEST_POSTGRES (a libpq URL), by default
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable. When no server
// answers, the test is skipped, except under CI (the CI environment
// variable set), where that is a failure: a backend that silently stops
// being tested is worse than a red build.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultDSN is used when CSPOOL_TEST_POSTGRES is unset.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// BaseDSN returns the DSN of the administrative database tests create their
// databases from.
func BaseDSN() string {
	if d := os.Getenv("CSPOOL_TEST_POSTGRES"); d != "" {
		return d
	}
	return DefaultDSN
}

// Name returns prefix and 16 random hex digits, a valid unquoted identifier.
func Name(prefix string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// connect connects to the base database or skips/fails the test.
func connect(t testing.TB) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, BaseDSN())
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at $CSPOOL_TEST_POSTGRES (or %s) is required under CI: %v", DefaultDSN, err)
		}
		t.Skipf("no PostgreSQL server answers (set CSPOOL_TEST_POSTGRES): %v", err)
	}
	return c
}

// Database creates a fresh database and returns its DSN; the database is
// dropped (with any remaining connections) when the test ends.
func Database(t testing.TB) string {
	t.Helper()
	c := connect(t)
	defer c.Close(context.Background())
	name := Name("cspool_test_")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		c := connect(t)
		defer c.Close(context.Background())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database %s: %v", name, err)
		}
	})
	return WithParam(BaseDSN(), "dbname", name)
}

// Schema creates a fresh schema in the database at dsn and returns a DSN
// whose connections use it (search_path). It is dropped when the test ends.
func Schema(t testing.TB, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	defer c.Close(context.Background())
	name := Name("s_")
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		t.Fatalf("creating schema %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return // the database may already be gone
		}
		defer c.Close(context.Background())
		c.Exec(ctx, "DROP SCHEMA IF EXISTS "+name+" CASCADE")
	})
	return WithParam(dsn, "search_path", name)
}

// WithParam returns the URL dsn with one connection parameter set; dbname
// replaces the path.
func WithParam(dsn, key, value string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic("pgtest: DSN must be a URL: " + err.Error())
	}
	if key == "dbname" {
		u.Path = "/" + value
		return u.String()
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}
