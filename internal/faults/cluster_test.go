package faults

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/devicedb"
	"cspool/internal/keys"
)

const (
	userName = "alice"
	password = "fault-test-password"
)

// cluster is a spool server and two device daemons for one user, all
// subprocesses on loopback ports that stay the same across restarts.
type cluster struct {
	t                  *testing.T
	dir                string
	userKey            *keys.SecretKey
	spoolKey           *keys.SecretKey
	httpPort, lmtpPort int
	serverArgs         []string
	server             *proc
	devices            []*device
}

// device is one `cspool imap-server` and its database.
type device struct {
	name  string
	db    string
	port  int
	p     *proc
	spool string   // the spool server's URL for this device; "" = the cluster's
	extra []string // more flags for the daemon
}

func (d *device) addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

func (d *device) spoolURL(c *cluster) string {
	if d.spool != "" {
		return d.spool
	}
	return c.url()
}

// clusterOptions changes where the state lives.
type clusterOptions struct {
	spoolDir string   // default DIR/spool
	dbDirs   []string // per device; default DIR
	store    []string // extra server flags, e.g. --store postgres --dsn ...
}

func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), httpPort: freePort(t), lmtpPort: freePort(t)}
	var err error
	if c.userKey, err = keys.Generate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if c.spoolKey, err = keys.Generate(rand.Reader); err != nil {
		t.Fatal(err)
	}
	path := func(n string) string { return filepath.Join(c.dir, n) }
	if err := keys.WriteFiles(c.userKey, path("user.sec"), path("user.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFiles(c.spoolKey, path("spool.sec"), path("spool.pub"), keys.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("%s %s\n", userName, c.userKey.Public())
	if err := os.WriteFile(path("users"), []byte(users), 0o600); err != nil {
		t.Fatal(err)
	}
	if o.spoolDir == "" {
		o.spoolDir = path("spool")
	}
	c.serverArgs = append([]string{"server", "--port", fmt.Sprint(c.httpPort), "--spool-dir", o.spoolDir,
		"--users", path("users"), "--spool-key", path("spool.sec"),
		"--lmtp", fmt.Sprintf("127.0.0.1:%d", c.lmtpPort), "--lmtp-domains", "example.org"}, o.store...)
	for i, name := range []string{"a", "b"} {
		dbDir := c.dir
		if i < len(o.dbDirs) && o.dbDirs[i] != "" {
			dbDir = o.dbDirs[i]
		}
		c.devices = append(c.devices, &device{name: name, db: filepath.Join(dbDir, name+".db"), port: freePort(t)})
	}
	c.startServer()
	for _, d := range c.devices {
		c.startDevice(d)
	}
	return c
}

func (c *cluster) url() string      { return fmt.Sprintf("http://127.0.0.1:%d", c.httpPort) }
func (c *cluster) lmtpAddr() string { return fmt.Sprintf("127.0.0.1:%d", c.lmtpPort) }

// startServer starts the spool server and waits for /v1/health.
func (c *cluster) startServer() {
	c.t.Helper()
	c.server = startProc(c.t, "cspool server", c.serverArgs...)
	cl, err := api.NewClient(c.url(), "", c.spoolKey, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := cl.Health(ctx)
		cancel()
		if err == nil {
			return
		}
		if c.server.exited() {
			c.t.Fatalf("server exited (%v) before answering", c.server.err)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("server not healthy after 30 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDevice starts a daemon on its database and waits for its listener.
func (c *cluster) startDevice(d *device) {
	c.t.Helper()
	c.launchDevice(d)
	d.p.waitOutput(c.t, "IMAP settings", 30*time.Second)
	conn, err := net.DialTimeout("tcp", d.addr(), 5*time.Second)
	if err != nil {
		c.t.Fatalf("device %s not listening: %v", d.name, err)
	}
	conn.Close()
}

// launchDevice starts a daemon on its database and does not wait for it.
func (c *cluster) launchDevice(d *device) {
	c.t.Helper()
	args := []string{"imap-server", "--user", userName,
		"--user-key", filepath.Join(c.dir, "user.sec"), "--user-public-key", filepath.Join(c.dir, "user.pub"),
		"--spool-key", filepath.Join(c.dir, "spool.pub"), "--db", d.db, "--spool-server", d.spoolURL(c),
		"--port", fmt.Sprint(d.port), "--password", password,
		// No status page: these daemons must not hold the default port
		// that cmd/cspool's TestStatusWithSquatter squats on.
		"--status-addr", ""}
	d.p = startProc(c.t, "cspool imap-server "+d.name, append(args, d.extra...)...)
}

// head is the spool's head position for the user.
func (c *cluster) head(ctx context.Context) (uint64, error) {
	cl, err := api.NewClient(c.url(), userName, c.userKey, nil)
	if err != nil {
		return 0, err
	}
	return cl.Head(ctx)
}

// progress reads the log position a device's database has applied and how
// many changes made on the device wait in its queue, from a read-only
// connection of its own (the daemon keeps running), with the key the
// daemon encrypts it with.
func (c *cluster) progress(db string) (pos uint64, queued int, err error) {
	key := devicedb.Key(c.userKey.DatabaseKey("mailstore"))
	h, err := devicedb.Open(db, devicedb.Options{Key: &key, NoMigrate: true, Params: "mode=ro&_pragma=busy_timeout(5000)"})
	if err != nil {
		return 0, 0, err
	}
	defer h.Close()
	var p int64
	if err := h.QueryRow("SELECT position, (SELECT count(*) FROM queue) FROM state").Scan(&p, &queued); err != nil {
		return 0, 0, fmt.Errorf("reading the position of %s: %w", db, err)
	}
	return uint64(p), queued, nil
}

// waitConverged waits (up to d) until the spool's head has stopped moving
// and both devices have applied it with nothing of their own left to send,
// and returns it.
func (c *cluster) waitConverged(d time.Duration) uint64 {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		head, err := c.head(ctx)
		cancel()
		ok := err == nil
		last = fmt.Sprintf("head %d (%v)", head, err)
		for _, dv := range c.devices {
			if dv.p.exited() {
				c.t.Fatalf("device %s exited (%v) before converging", dv.name, dv.p.err)
			}
			pos, queued, err := c.progress(dv.db)
			last += fmt.Sprintf(", %s at %d with %d queued (%v)", dv.name, pos, queued, err)
			ok = ok && err == nil && pos == head && queued == 0
		}
		if ok {
			return head
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("devices did not reach the spool's head within %v: %s", d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
