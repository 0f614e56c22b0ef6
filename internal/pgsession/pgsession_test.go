package pgsession

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"cspool/internal/spool/pgstore/pgtest"
)

// TestConfigure: the DSN's parameters that PgBouncer does not take leave
// the startup message and are set by SQL, the caller's after them (so they
// win), a quote in a value included; the startup message keeps the rest.
func TestConfigure(t *testing.T) {
	dsn := pgtest.WithParam(pgtest.WithParam(pgtest.WithParam(pgtest.Database(t),
		"search_path", `"it's",public`), "lock_timeout", "1234"), "statement_timeout", "5000")
	dsn = pgtest.WithParam(dsn, "TimeZone", "Europe/Paris")
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	Configure(cc, "statement_timeout", "7000")
	for k := range cc.RuntimeParams {
		if !startupParams[strings.ToLower(k)] {
			t.Errorf("startup message carries %s", k)
		}
	}
	for _, want := range [][2]string{{"application_name", "cspool"}, {"TimeZone", "Europe/Paris"}} {
		if got := cc.RuntimeParams[want[0]]; got != want[1] {
			t.Errorf("startup parameter %s = %q, want %q", want[0], got, want[1])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, want := range [][2]string{
		{"search_path", `"it's",public`},
		{"lock_timeout", "1234ms"},
		{"statement_timeout", "7s"},
		{"application_name", "cspool"},
		{"TimeZone", "Europe/Paris"},
	} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", want[0]).Scan(&got); err != nil || got != want[1] {
			t.Errorf("%s: got %q (%v), want %q", want[0], got, err, want[1])
		}
	}
}

// TestConfigureRefusedValue: a value PostgreSQL refuses fails the
// connection with its error, saying which statement failed.
func TestConfigureRefusedValue(t *testing.T) {
	cc, err := pgx.ParseConfig(pgtest.WithParam(pgtest.Database(t), "lock_timeout", "bogus"))
	if err != nil {
		t.Fatal(err)
	}
	Configure(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err == nil {
		conn.Close(context.Background())
		t.Fatal("connected with lock_timeout=bogus")
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "22023" || !strings.Contains(err.Error(), "setting the session's parameters") {
		t.Errorf("connecting with lock_timeout=bogus: %v, want invalid_parameter_value (22023) from setting the session's parameters", err)
	}
}
