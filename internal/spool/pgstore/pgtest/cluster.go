package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Cluster controls the local PostgreSQL cluster (Debian's pg_ctlcluster)
// for tests that stop and start the server under load.
type Cluster struct {
	t       testing.TB
	version string
	name    string
}

// LocalCluster returns the local cluster, or skips the test when it cannot
// be controlled from here (no pg_ctlcluster, not root, a non-default
// CSPOOL_TEST_POSTGRES, or CSPOOL_TEST_PG_RESTART=0). The cluster is started
// again when the test ends, whatever happened.
func LocalCluster(t testing.TB) *Cluster {
	t.Helper()
	switch {
	case os.Getenv("CSPOOL_TEST_PG_RESTART") == "0":
		t.Skip("CSPOOL_TEST_PG_RESTART=0: not stopping PostgreSQL")
	case BaseDSN() != DefaultDSN:
		t.Skip("CSPOOL_TEST_POSTGRES names another server: not stopping it")
	case os.Geteuid() != 0:
		t.Skip("stopping PostgreSQL needs root")
	}
	if _, err := exec.LookPath("pg_ctlcluster"); err != nil {
		t.Skip("no pg_ctlcluster: cannot stop and start PostgreSQL")
	}
	versions, _ := filepath.Glob("/etc/postgresql/*/main")
	if len(versions) != 1 {
		t.Skipf("want exactly one cluster named main in /etc/postgresql, found %v", versions)
	}
	c := &Cluster{t: t, version: filepath.Base(filepath.Dir(versions[0])), name: "main"}
	t.Cleanup(func() {
		if !c.Running() {
			c.Start()
		}
	})
	return c
}

func (c *Cluster) ctl(action string, extra ...string) {
	c.t.Helper()
	args := append([]string{"--skip-systemctl-redirect", c.version, c.name, action}, extra...)
	out, err := exec.Command("pg_ctlcluster", args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("pg_ctlcluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Stop stops the server (fast mode: sessions are ended, as on a crash of
// the clients' connections).
func (c *Cluster) Stop() { c.t.Helper(); c.ctl("stop", "-m", "fast") }

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() { c.t.Helper(); c.ctl("start") }

// Running reports whether the cluster is up.
func (c *Cluster) Running() bool {
	err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", c.version, c.name, "status").Run()
	return err == nil
}
