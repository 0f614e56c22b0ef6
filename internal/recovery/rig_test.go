package recovery

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/devicetest"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/syncer"
)

const user = "alice"

// rig is a real spool (package devicetest's): the SQLite store in a
// directory behind the HTTP API on a loopback port that stays the same
// across restarts, so that it can be restored from a backup as an
// operator would.
type rig struct {
	t        testing.TB
	sp       *devicetest.Spool
	dir      string
	userKey  *keys.SecretKey
	spoolKey *keys.SecretKey
	addr     string
	store    *sqlitestore.Store
	api      *devicetest.API
	spool    *api.Client
	quiet    *slog.Logger
	sent     int
}

func newRig(t testing.TB) *rig {
	t.Helper()
	sp := devicetest.NewSpool(t)
	r := &rig{t: t, sp: sp, dir: sp.Dir, userKey: sp.UserKey, spoolKey: sp.SpoolKey, quiet: slog.New(slog.DiscardHandler)}
	r.start()
	t.Cleanup(r.stop)
	r.spool = sp.Client("http://"+r.addr, r.spoolKey)
	return r
}

func (r *rig) spoolDir() string { return r.sp.StoreDir() }

// start opens the store (again, after stop) and serves it on the rig's
// address.
func (r *rig) start() {
	r.t.Helper()
	if r.sp.Store == nil {
		r.sp.Reopen()
	}
	r.store = r.sp.Store
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	r.api = r.sp.ServeAPI(addr)
	r.addr = r.api.Addr
}

// stop stops serving and closes the store (a second stop does nothing).
func (r *rig) stop() {
	if r.api == nil {
		return
	}
	r.api.Close()
	r.sp.Close()
	r.api = nil
}

// backup copies the spool's database while it runs, consistently, as
// SQLite's online backup does.
func (r *rig) backup() string {
	r.t.Helper()
	path := filepath.Join(r.t.TempDir(), "spool-backup.db")
	db, err := sql.Open("sqlite", filepath.Join(r.spoolDir(), sqlitestore.DBName))
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("VACUUM INTO ?", path); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// restore stops the spool, puts the backup in place and starts it again.
func (r *rig) restore(backup string) {
	r.t.Helper()
	r.stop()
	db := filepath.Join(r.spoolDir(), sqlitestore.DBName)
	for _, f := range []string{db + "-wal", db + "-shm"} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			r.t.Fatal(err)
		}
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		r.t.Fatal(err)
	}
	r.start()
}

func message(i int) []byte {
	return fmt.Appendf(nil, "From: s%d@example.org\r\nTo: alice@example.org\r\nSubject: test %d\r\nMessage-ID: <%d@recovery>\r\n\r\nbody %d\r\n", i, i, i, i)
}

// deliver appends n deliveries, as cspool deliver does, and returns their
// ids.
func (r *rig) deliver(n int) []command.ID {
	r.t.Helper()
	var ids []command.ID
	for range n {
		r.sent++
		b, id, err := entry.Seal(&command.Command{Kind: command.Deliver, Date: 1700000000000 + int64(r.sent), Body: message(r.sent)},
			r.spoolKey, r.userKey.Public(), user, nil)
		if err != nil {
			r.t.Fatal(err)
		}
		if _, err := r.spool.Append(context.Background(), user, [][]byte{b}); err != nil {
			r.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// device is one of the user's devices: a mail store on disk and a syncer.
type device struct {
	name   string
	r      *rig
	ms     *mailstore.Store
	st     *countingStore // ms, as the syncer has it
	s      *syncer.Syncer
	client *api.Client
}

func (r *rig) device(name string) *device {
	r.t.Helper()
	d := &device{name: name, r: r, ms: devicetest.OpenStore(r.t, filepath.Join(r.dir, name+".db"))}
	d.st = &countingStore{Store: d.ms}
	d.start()
	return d
}

// start makes the device's syncer anew, as a daemon starting does (with
// the device's client, made on the first start).
func (d *device) start() {
	d.r.t.Helper()
	if d.client == nil {
		d.client = d.r.sp.Client("http://"+d.r.addr, d.r.userKey)
	}
	s, err := syncer.New(syncer.Config{User: user, UserKey: d.r.userKey, SpoolKey: d.r.spoolKey.Public(), Store: d.st,
		Source: d.client, Logger: d.r.quiet, CheckpointMin: -1, Wait: time.Second, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		d.r.t.Fatal(err)
	}
	d.s = s
}

// countingStore is the device's store counting how its syncer adopts a
// restoration: with the state decoded whole (Adopt) or read as it is
// decoded (AdoptFrom).
type countingStore struct {
	*mailstore.Store
	whole, streamed atomic.Int32
}

func (c *countingStore) Adopt(ctx context.Context, sn *mailstore.Snapshot, fetch mailstore.BodyFetcher) (*mailstore.Result, *mailstore.Adoption, error) {
	c.whole.Add(1)
	return c.Store.Adopt(ctx, sn, fetch)
}

func (c *countingStore) AdoptFrom(ctx context.Context, r io.Reader, check func(*mailstore.Restored) error,
	fetch mailstore.BodyFetcher) (*mailstore.Result, *mailstore.Adoption, *mailstore.Restored, error) {
	c.streamed.Add(1)
	return c.Store.AdoptFrom(ctx, r, check, fetch)
}

// sync applies what the spool has; an integrity alarm is returned, other
// failures end the test.
func (d *device) sync() error {
	d.r.t.Helper()
	_, err := d.s.SyncOnce(context.Background())
	if err != nil && !errors.Is(err, syncer.ErrIntegrity) {
		d.r.t.Fatalf("%s: sync: %v", d.name, err)
	}
	return err
}

// mustSync syncs and requires no alarm.
func (d *device) mustSync() {
	d.r.t.Helper()
	if err := d.sync(); err != nil {
		d.r.t.Fatalf("%s: sync: %v", d.name, err)
	}
}

// change writes cmds as the device's own commands and applies them.
func (d *device) change(cmds ...*command.Command) {
	d.r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	if _, err := d.s.Submit(ctx, cmds...); err != nil {
		d.r.t.Fatalf("%s: submit: %v", d.name, err)
	}
	cancel()
	<-done
}

// recover runs the recovery on the device.
func (d *device) recover() (*Report, error) {
	return Recover(context.Background(), Config{User: user, UserKey: d.r.userKey, SpoolKey: d.r.spoolKey.Public(),
		Source: d.client, Store: d.ms, Logger: d.r.quiet})
}

func (d *device) dump() *mailstore.State {
	d.r.t.Helper()
	st, err := d.ms.Dump(context.Background())
	if err != nil {
		d.r.t.Fatal(err)
	}
	return st
}
