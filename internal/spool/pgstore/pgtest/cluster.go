package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a PostgreSQL server of one test's own, for tests that stop
// and start the server under load. It runs from a fresh data directory on
// a loopback port of its own, so stopping it never disturbs the tests of
// other packages that share the machine's server (go test runs packages in
// parallel).
type Cluster struct {
	t    testing.TB
	bin  string // PostgreSQL's bin directory
	dir  string // data directory, also the socket directory
	port int
	as   []string // runuser prefix when running as root, else empty
}

// PrivateCluster initialises and starts a server of the test's own, or
// skips the test when that cannot be done here (no PostgreSQL binaries, or
// CSPOOL_TEST_PG_RESTART=0); under CI a machine with the binaries that
// fails to start one is a failure. The server is stopped and its files
// removed when the test ends.
func PrivateCluster(t testing.TB) *Cluster {
	t.Helper()
	if os.Getenv("CSPOOL_TEST_PG_RESTART") == "0" {
		t.Skip("CSPOOL_TEST_PG_RESTART=0: not starting a PostgreSQL server to stop")
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("no PostgreSQL binaries in /usr/lib/postgresql/*/bin: install Debian's postgresql")
		}
		t.Skip("no PostgreSQL binaries in /usr/lib/postgresql/*/bin")
	}
	c := &Cluster{t: t, bin: filepath.Dir(bins[len(bins)-1])}
	dir, err := os.MkdirTemp("", "cspool-pg-")
	if err != nil {
		t.Fatal(err)
	}
	c.dir = dir
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root: run it as its own account.
		uid, gid := postgresAccount(t, "a server")
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		c.as = []string{"runuser", "-u", "postgres", "--"}
	}
	c.run("initdb", "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	t.Cleanup(func() {
		if c.Running() {
			c.pgctl("stop", "-m", "immediate")
		}
	})
	c.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		t.Fatalf("connecting to the test's PostgreSQL server: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE test"); err != nil {
		t.Fatalf("creating the test database: %v", err)
	}
	return c
}

func (c *Cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// DSN is the server's database "test".
func (c *Cluster) DSN() string { return c.dsn("test") }

func (c *Cluster) run(prog string, args ...string) {
	c.t.Helper()
	argv := append(append(append([]string{}, c.as...), filepath.Join(c.bin, prog)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.dir
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

func (c *Cluster) pgctl(action string, extra ...string) {
	c.t.Helper()
	args := append([]string{action, "-D", filepath.Join(c.dir, "data"), "-w", "-t", "60"}, extra...)
	c.run("pg_ctl", args...)
}

// Stop stops the server (fast mode: sessions are ended, as on a crash of
// the clients' connections).
func (c *Cluster) Stop() { c.t.Helper(); c.pgctl("stop", "-m", "fast") }

// Crash stops the server in immediate mode: no shutdown checkpoint, the
// closest to kill -9; the next start recovers from the WAL.
func (c *Cluster) Crash() { c.t.Helper(); c.pgctl("stop", "-m", "immediate") }

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s", c.port, c.dir)
	c.pgctl("start", "-l", filepath.Join(c.dir, "log"), "-o", opts)
}

// Running reports whether the server is up.
func (c *Cluster) Running() bool {
	argv := append(append(append([]string{}, c.as...), filepath.Join(c.bin, "pg_ctl")), "status", "-D", filepath.Join(c.dir, "data"))
	return exec.Command(argv[0], argv[1:]...).Run() == nil
}

// postgresAccount is the user and group ids of the postgres account, which
// runs what refuses to run as root (the server, PgBouncer) when the tests
// do; what names what it is for, in the failure without one.
func postgresAccount(t testing.TB, what string) (uid, gid int) {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("running as root, and no postgres account to run %s as: %v", what, err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}
