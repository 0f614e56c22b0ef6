package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"cspool/internal/spool/pgstore/pgtest"
)

// TestPostgresSetupRecipe runs docs/POSTGRES.md, "Setting it up", as
// printed: the role and database made with createuser and createdb, the
// server started on them with --users-table, and alice's row inserted
// from her .pub file with psql. Only the names (a role and database of the
// test's own for "cspool"), the PostgreSQL server's address and user (the
// tests', 127.0.0.1:5432 as postgres by default), the spool key's path
// and the ports differ. Alice's mail is then taken over LMTP, and a user
// without a row refused.
func TestPostgresSetupRecipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, tool := range []string{"psql", "createuser", "createdb"} {
		needTool(t, tool, "postgresql-client")
	}
	base, err := url.Parse(pgtest.BaseDSN())
	if err != nil {
		t.Fatal(err)
	}
	name := pgScratchName(t)

	blocks := docShellBlocks(t, "docs/POSTGRES.md", "## Setting it up")
	starts := []string{"createuser ", "cspool server ", "key="}
	if len(blocks) != len(starts) {
		t.Fatalf("docs/POSTGRES.md, Setting it up: %d sh blocks, want %d (the role and database, the server, the user's row)", len(blocks), len(starts))
	}
	for i, s := range starts {
		if !strings.HasPrefix(blocks[i], s) {
			t.Fatalf("docs/POSTGRES.md, Setting it up: sh block %d starts %q, want %q", i+1, blocks[i], s)
		}
	}
	roleDB, server, row := blocks[0], blocks[1], blocks[2]

	bin := buildServerBinary(t)
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc/cspool")
	if err := os.MkdirAll(etc, 0o700); err != nil {
		t.Fatal(err)
	}
	env := recipeEnv(bin, dir)
	runCmd(t, etc, env, "", bin, "gen-keys", "spool.sec", "spool.pub")
	runCmd(t, dir, env, "", bin, "gen-keys", "alice.sec", "alice.pub")

	host, port := base.Hostname(), base.Port()
	if port == "" {
		port = "5432"
	}
	su := base.User.Username()
	replace := []string{
		"-h 127.0.0.1 -U postgres cspool", fmt.Sprintf("-h %s -p %s -U %s %s", host, port, su, name),
		"-h 127.0.0.1 -U postgres --owner cspool cspool", fmt.Sprintf("-h %s -p %s -U %s --owner %s %s", host, port, su, name, name),
		"postgres://cspool@127.0.0.1:5432/cspool", fmt.Sprintf("postgres://%s@%s/%s", name, net.JoinHostPort(host, port), name),
		"/etc/cspool", etc,
	}
	runRecipe(t, roleDB, dir, env, replace, func(l string) { t.Fatalf("unexpected %q in the role's recipe", l) })

	httpPort, lmtpPort := freePort(t), freePort(t)
	lmtp := fmt.Sprintf("127.0.0.1:%d", lmtpPort)
	srv := startRecipe(t, "cspool server", server, dir, env, append(replace,
		"127.0.0.1:2424", lmtp,
		"cspool server ", fmt.Sprintf("cspool server --port %d ", httpPort)))
	waitHealthy(t, fmt.Sprintf("http://127.0.0.1:%d", httpPort), srv)

	runRecipe(t, row, dir, env, replace, func(l string) { t.Fatalf("unexpected %q in the row's recipe", l) })
	lmtpSendOne(t, lmtp, "alice@example.org", 0)
	lmtpSendOne(t, lmtp, "bob@example.org", 550)
	srv.stop(t, syscall.SIGTERM, 40*time.Second)
	if log := srv.stderr.String(); !strings.Contains(log, `msg="lmtp delivered"`) || !strings.Contains(log, "user=alice") {
		t.Errorf("the server's log has no delivery to alice:\n%s", log)
	}
}

// pgScratchName returns a name for a role and a database of the test's
// own, both dropped at its end, once the tests' PostgreSQL answers; a test
// outside CI is skipped when it does not.
func pgScratchName(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	admin, err := pgx.Connect(ctx, pgtest.BaseDSN())
	cancel()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at $CSPOOL_TEST_POSTGRES (or %s) is required under CI: %v", pgtest.DefaultDSN, err)
		}
		t.Skipf("no PostgreSQL server answers (set CSPOOL_TEST_POSTGRES): %v", err)
	}
	admin.Close(context.Background())
	name := pgtest.Name("cspool_test_")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, pgtest.BaseDSN())
		if err != nil {
			t.Errorf("dropping the test's database and role %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "DROP ROLE IF EXISTS " + name} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	return name
}
