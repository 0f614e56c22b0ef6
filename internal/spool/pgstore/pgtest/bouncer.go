package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Bouncer is a PgBouncer of one test's own, in front of the PostgreSQL
// server of BaseDSN, on a loopback port of its own.
type Bouncer struct {
	Port int
	dir  string
}

// BouncerConfig is what a test's PgBouncer is given.
type BouncerConfig struct {
	// Mode is the default pool_mode: "session", "transaction" or
	// "statement".
	Mode string
	// Databases are lines of the [databases] section before the wildcard
	// entry "* = host=... port=...", which leads every other database
	// name to the server of BaseDSN.
	Databases []string
	// Settings are more lines of the [pgbouncer] section.
	Settings []string
}

// StartBouncer runs Debian's pgbouncer as configured, trusting every user,
// or skips the test when pgbouncer is not installed; under CI that is a
// failure. It is stopped when the test ends.
func StartBouncer(t testing.TB, cfg BouncerConfig) *Bouncer {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("pgbouncer is not installed: install Debian's pgbouncer")
			}
			t.Skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
		}
	}
	base, err := url.Parse(BaseDSN())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cspool-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Bouncer{Port: ln.Addr().(*net.TCPAddr).Port, dir: dir}
	ln.Close()
	ini := fmt.Sprintf(`[databases]
%s
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = %s
max_client_conn = 200
default_pool_size = 20
logfile = %s
admin_users = postgres
%s
`, strings.Join(cfg.Databases, "\n"), base.Hostname(), base.Port(), b.Port, filepath.Join(dir, "userlist.txt"), cfg.Mode,
		filepath.Join(dir, "pgbouncer.log"), strings.Join(cfg.Settings, "\n"))
	if err := os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(`"postgres" ""`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	if os.Geteuid() == 0 {
		// PgBouncer refuses to run as root.
		uid, gid := postgresAccount(t, "pgbouncer")
		for _, f := range []string{"", "pgbouncer.ini", "userlist.txt"} {
			if err := os.Chown(filepath.Join(dir, f), uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		// Not through runuser, which would not pass on the signal
		// that stops it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	out, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) // immediate shutdown
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", b.Port))
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			errs, _ := os.ReadFile(filepath.Join(dir, "stderr"))
			t.Fatalf("pgbouncer exited at start:\n%s%s", errs, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgbouncer did not listen on 127.0.0.1:%d within 20 s", b.Port)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return b
}

// DSN returns dsn (a URL on the server of BaseDSN) with its host and port
// replaced by the bouncer's.
func (b *Bouncer) DSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		panic("pgtest: DSN must be a URL: " + err.Error())
	}
	u.Host = fmt.Sprintf("127.0.0.1:%d", b.Port)
	return u.String()
}

// Reload rewrites the default pool_mode of the bouncer's configuration to
// mode and has it reload (RELOAD on its admin console), as an operator
// does on a running PgBouncer.
func (b *Bouncer) Reload(t testing.TB, mode string) {
	t.Helper()
	ini := filepath.Join(b.dir, "pgbouncer.ini")
	old, err := os.ReadFile(ini)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(old), "\n") {
		if strings.HasPrefix(l, "pool_mode = ") {
			l = "pool_mode = " + mode
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(ini, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/pgbouncer?sslmode=disable&default_query_exec_mode=simple_protocol", b.Port))
	if err != nil {
		t.Fatalf("connecting to the bouncer's admin console: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "RELOAD"); err != nil {
		t.Fatalf("RELOAD: %v", err)
	}
}

// Log returns what the bouncer logged so far.
func (b *Bouncer) Log() string {
	log, _ := os.ReadFile(filepath.Join(b.dir, "pgbouncer.log"))
	return string(log)
}

// SetDatabase runs ALTER DATABASE ... SET name = value on the database of
// dsn, connecting to the server directly: a default the store must override.
func SetDatabase(t testing.TB, dsn, name, value string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s SET %s = %s",
		pgx.Identifier{c.Config().Database}.Sanitize(), pgx.Identifier{name}.Sanitize(), value)); err != nil {
		t.Fatal(err)
	}
}
