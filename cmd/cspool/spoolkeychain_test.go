package main

import (
	"context"
	"database/sql"
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
