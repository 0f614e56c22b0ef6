package hostile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

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

// rig is a real spool (SQLite store behind the HTTP API on loopback,
// package devicetest's) with the hostile proxy in front of it.
type rig struct {
	t        testing.TB
	sp       *devicetest.Spool
	dir      string
	userKey  *keys.SecretKey
	spoolKey *keys.SecretKey
	store    *sqlitestore.Store
	upstream string
	proxy    *Proxy
	spool    *api.Client // the operator's own client, signing with the spool key
	sent     int         // deliveries so far, so that each body differs
}

func newRig(t testing.TB) *rig {
	t.Helper()
	sp := devicetest.NewSpool(t)
	r := &rig{t: t, sp: sp, dir: sp.Dir, userKey: sp.UserKey, spoolKey: sp.SpoolKey, store: sp.Store}
	r.upstream = sp.ServeAPI("127.0.0.1:0").URL()
	var err error
	if r.proxy, err = New(r.upstream, r.store, user); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.proxy.Close)
	r.spool = sp.Client(r.upstream, r.spoolKey)
	return r
}

// device is one of the user's devices: a mail store on disk and a syncer
// reaching the spool through its own listener of the proxy.
type device struct {
	name string
	base string // the spool's URL this device reaches
	s    *syncer.Syncer
	ms   *mailstore.Store
}

func (r *rig) device(name string) *device {
	r.t.Helper()
	base, err := r.proxy.Listen(name)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.deviceAt(name, base, false)
}

// A device's checkpoints keep no tail of the entries without a message
// (syncer.Config.CheckpointTail): the tests count on the holes a
// compaction leaves after a checkpoint, as when its writer was started
// after applying those entries.
func (r *rig) deviceAt(name, base string, noChecks bool) *device {
	r.t.Helper()
	d := r.sp.Device(name, syncer.Config{Source: r.sp.Client(base, r.userKey), Logger: slog.New(slog.DiscardHandler),
		CheckpointMin: -1, CheckpointTail: -1, Wait: time.Second, MaxBackoff: 100 * time.Millisecond, DisableIntegrity: noChecks})
	return &device{name: name, base: base, s: d.Sync, ms: d.Store}
}

// restart closes the device's mail store and starts it again on the same
// file, as a daemon restarted after a crash would.
func (r *rig) restart(d *device) *device {
	r.t.Helper()
	if err := d.ms.Close(); err != nil {
		r.t.Fatal(err)
	}
	return r.deviceAt(d.name, d.base, false)
}

func message(i int) []byte {
	return fmt.Appendf(nil, "From: s%d@example.org\r\nTo: alice@example.org\r\nSubject: test %d\r\nMessage-ID: <%d@hostile>\r\n\r\nbody %d\r\n", i, i, i, i)
}

// seal seals c as the spool would (the operator holds the spool key).
func (r *rig) seal(c *command.Command) []byte {
	r.t.Helper()
	b, _, err := entry.Seal(c, r.spoolKey, r.userKey.Public(), user, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// deliver appends n deliveries through the API with the spool key.
func (r *rig) deliver(n int) {
	r.t.Helper()
	var batch [][]byte
	for range n {
		r.sent++
		batch = append(batch, r.seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(r.sent)}))
	}
	if _, err := r.spool.Append(context.Background(), user, batch); err != nil {
		r.t.Fatal(err)
	}
}

// sync applies the log as the device sees it, up to its head.
func (d *device) sync(t testing.TB) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := d.s.SyncOnce(ctx)
	return err
}

func (d *device) mustSync(t testing.TB) {
	t.Helper()
	if err := d.sync(t); err != nil {
		t.Fatalf("device %s: sync: %v", d.name, err)
	}
	if a := d.s.Status().Alarm; a != "" {
		t.Fatalf("device %s: alarm %q", d.name, a)
	}
}

// submit runs the device's sync loop until cmds are appended and applied.
func (d *device) submit(t testing.TB, cmds ...*command.Command) []mailstore.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	done := make(chan error, 1)
	go func() { done <- d.s.Run(ctx) }()
	outs, err := d.s.Submit(ctx, cmds...)
	cancel()
	if rerr := <-done; rerr != nil && !errors.Is(rerr, context.Canceled) {
		t.Fatalf("device %s: sync loop: %v", d.name, rerr)
	}
	if err != nil {
		t.Fatalf("device %s: submit: %v", d.name, err)
	}
	return outs
}

// inbox returns the messages in the device's INBOX.
func (d *device) inbox(t testing.TB) []*mailstore.Message {
	t.Helper()
	ctx := context.Background()
	mb, err := d.ms.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var out []*mailstore.Message
	if err := d.ms.Scan(ctx, mb.ID, 0, func(m *mailstore.Message) error { out = append(out, m); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// state is the device's replicated state, for comparing devices.
func (d *device) state(t testing.TB) []byte {
	t.Helper()
	sn, err := d.ms.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, err := mailstore.EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// position is the device's applied position, from its store.
func (d *device) position(t testing.TB) uint64 {
	t.Helper()
	p, err := d.ms.Position(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}
