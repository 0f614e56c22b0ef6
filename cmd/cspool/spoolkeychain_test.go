package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

// TestSpoolKeyChainServed: the spool's key replaced twice as
// docs/OPERATING.md says (old by new, then new by third), the server
// running with the third key serves the whole succession, newest first:
// third's statement that it replaced new, then new's that it replaced
// old, each verifying under the key before it in the chain; and keeps
// serving it after a restart without --previous-spool-key. A statement in
// the store that does not verify under the key that should have made it
// (signed by another key) is not served, nor anything before it. Before,
// the server served third's statement alone, and a device given the third
// key could learn no key before new.
func TestSpoolKeyChainServed(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r := newSpoolKeyRig(t)
	bin, path, plant := r.bin, r.path, r.plant
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("old.sec"))
	srv.stop(t)
	plant(r.old, "one")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"),
		"--previous-spool-key", path("old.pub"))
	srv.stop(t)
	plant(r.nw, "two")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("third.sec"),
		"--previous-spool-key", path("new.pub"))
	srv.stop(t)
	plant(r.third, "three")
	chain := func(want int) []keys.Succession {
		t.Helper()
		srv := startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("third.sec"))
		defer srv.stop(t)
		c, err := api.NewClient(srv.url, "alice", r.alice, nil)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := c.SpoolKeyChain(ctx)
		if err != nil || len(ch) != want {
			t.Fatalf("the spool keys served by the server of the third key: %d statements (%v), want %d", len(ch), err, want)
		}
		// A device of the release before reads the first alone.
		first, ok, err := c.SpoolKeySuccession(ctx)
		if err != nil || !ok || !first.Key.Equal(r.third.Public()) || !first.Previous.Equal(r.nw.Public()) {
			t.Fatalf("the first statement: %v, %v, want the third key's naming new", ok, err)
		}
		return ch
	}
	ch := chain(2)
	for i, w := range []struct{ key, previous *keys.SecretKey }{{r.third, r.nw}, {r.nw, r.old}} {
		if !ch[i].Key.Equal(w.key.Public()) || !ch[i].Previous.Equal(w.previous.Public()) {
			t.Fatalf("statement %d names the key with id %x replacing %x, want %x replacing %x", i+1,
				ch[i].Key.KeyID(), ch[i].Previous.KeyID(), w.key.Public().KeyID(), w.previous.Public().KeyID())
		}
		if err := ch[i].Verify(w.key.Public()); err != nil {
			t.Fatalf("statement %d: %v", i+1, err)
		}
	}

	// new's statement replaced by one another key signed: not served.
	forged := keys.Succession{Key: r.nw.Public(), Previous: r.old.Public(), Signature: r.other.Sign(keys.SuccessionMessage(r.nw.Public(), r.old.Public()))}
	db, err := sql.Open("sqlite", "file:"+path("spool")+"/"+sqlitestore.DBName)
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.ExecContext(ctx, "UPDATE spool_key_replaced SET sig = ? WHERE replaced_by = ?", forged.Signature, r.nw.Public().Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("forging new's statement in the store: %v, %d rows", err, n)
	}
	db.Close()
	chain(1)
}

// TestVouchedSpoolKeyChain: the spool's key replaced twice (old by new,
// then new by third), with deliveries under each key, a new device given
// the third key alone shows every message: it verifies the chain the
// server serves from the third key back to the old one, and trusts each
// earlier key up to its own cutover, so a delivery signed by the old key
// placed after new's first entry, and one signed by new after third's
// first, are rejected. A device whose database recorded the old key,
// started with the third key alone, moves its record down the chain and
// applies the rest the same way, and starts again with the third key. Before,
// the new device took the old key's deliveries as a stranger's (that mail
// never showed), and the old key's database was refused with the third
// key.
func TestVouchedSpoolKeyChain(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	r := newSpoolKeyRig(t)
	bin, dir, path, env, plant := r.bin, r.dir, r.path, r.env, r.plant
	var srv *serverProc
	sync := func(db, spoolKey string) (int, string, string) {
		t.Helper()
		var code int
		var stdout, stderr string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			code, stdout, stderr = runExit(t, dir, env, bin, "sync", "--user", "alice", "--db", db,
				"--spool-server", srv.url, "--user-key", "user.sec", "--user-public-key", "user.pub", "--spool-key", spoolKey)
			if code == 0 || strings.Contains(stderr, "spool-key") || time.Now().After(deadline) {
				return code, stdout, stderr
			}
		}
	}
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("old.sec"))
	srv.stop(t)
	plant(r.old, "one", "two")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("old.sec"))
	if code, out, stderr := sync("a.db", "old.pub"); code != 0 || !strings.Contains(out, "2 applied") {
		t.Fatalf("a.db synced with the old key: exit %d\n%s\n%s", code, out, stderr)
	}
	srv.stop(t)
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("new.sec"),
		"--previous-spool-key", path("old.pub"))
	srv.stop(t)
	plant(r.nw, "three")
	plant(r.old, "planted old after new")
	plant(r.nw, "four")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("third.sec"),
		"--previous-spool-key", path("new.pub"))
	srv.stop(t)
	plant(r.third, "five")
	plant(r.nw, "planted new after third")
	plant(r.old, "planted old after third")
	plant(r.third, "six")
	srv = startServer(t, bin, "--spool-dir", path("spool"), "--users", path("users"), "--spool-key", path("third.sec"))
	code, out, stderr := sync("new.db", "third.pub")
	if code != 0 || !strings.Contains(out, "6 applied, 3 rejected") {
		t.Fatalf("a new device given the third key alone: exit %d, want the six deliveries of the three keys applied, the three planted rejected\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"as the spool states under its signature", "deliveries signed by an earlier spool key are refused from here on",
		"the first entry signed by the new spool key is applied"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the new device's log does not say %q:\n%s", want, stderr)
		}
	}
	code, out, stderr = sync("a.db", "third.pub")
	if code != 0 || !strings.Contains(out, "4 applied, 3 rejected") {
		t.Fatalf("a device of the old key started with the third key alone: exit %d, want the four later deliveries applied, the three planted rejected\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "it is taken as --previous-spool-key") {
		t.Errorf("the record moved down the spool's chain is not logged:\n%s", stderr)
	}
	for _, db := range []string{"a.db", "new.db"} {
		if code, out, stderr := sync(db, "third.pub"); code != 0 || !strings.Contains(out, "synced to position 9 (head 9)") {
			t.Errorf("%s started again with the third key: exit %d\n%s\n%s", db, code, out, stderr)
		}
	}
}

// TestSpoolKeyChainServedPostgres: TestSpoolKeyChainServed's succession
// on a PostgreSQL store: a, then b, then c, the server of c serves c's
// statement of b, then b's of a, each verifying under its key.
func TestSpoolKeyChainServedPostgres(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildServerBinary(t)
	s := newPGSetup(t, "alice")
	ks := []*keys.SecretKey{s.spoolK, mustKey(t), mustKey(t)}
	sec, pub := make([]string, len(ks)), make([]string, len(ks))
	for i, k := range ks {
		sec[i], pub[i] = filepath.Join(s.dir, fmt.Sprintf("k%d.sec", i)), filepath.Join(s.dir, fmt.Sprintf("k%d.pub", i))
		if err := keys.WriteFiles(k, sec[i], pub[i], keys.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	start := func(extra ...string) *serverProc {
		return startServer(t, bin, append([]string{"--store", "postgres", "--dsn", s.dsn, "--spool-dir", s.dir}, extra...)...)
	}
	start("--spool-key", sec[0]).stop(t)
	start("--spool-key", sec[1], "--previous-spool-key", pub[0]).stop(t)
	start("--spool-key", sec[2], "--previous-spool-key", pub[1]).stop(t)
	srv := start("--spool-key", sec[2])
	defer srv.stop(t)
	c, err := api.NewClient(srv.url, "alice", s.users["alice"], nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ch, err := c.SpoolKeyChain(ctx)
	if err != nil || len(ch) != 2 {
		t.Fatalf("the spool keys served by the server of the third key: %d statements (%v), want 2", len(ch), err)
	}
	prev, err := keys.VerifyChain(ks[2].Public(), ch)
	if err != nil || !prev[0].Equal(ks[1].Public()) || !prev[1].Equal(ks[0].Public()) {
		t.Fatalf("the chain served: %v, want the second key, then the first", err)
	}
}
