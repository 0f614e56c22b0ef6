package syncer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/chain"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/spool/sqlitestore"
)

// chainRig records the rig's spool key a on its store, replaces it by b
// and then b by c, and returns the keys and the statements the servers
// make: c's of b, b's of a.
func chainRig(t *testing.T, r *rig) (a, b, c *keys.SecretKey, chain []keys.Succession) {
	t.Helper()
	ctx := context.Background()
	a, b = r.spool, r.evil
	c, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Each change of key through a handle of its own, closed after it:
	// the rig's handle, which appends, holds none.
	for _, k := range [][2]*keys.SecretKey{{nil, a}, {a, b}, {b, c}} {
		h, err := sqlitestore.Open(filepath.Join(r.dir, "spool"), sqlitestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if k[0] == nil {
			err = h.KeepSpoolKey(ctx, k[1].Public().Bytes())
		} else {
			_, err = h.ReplaceSpoolKey(ctx, k[0].Public().Bytes(), k[1].Public().Bytes())
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cb, err := keys.SignSuccession(c, b.Public())
	if err != nil {
		t.Fatal(err)
	}
	ba, err := keys.SignSuccession(b, a.Public())
	if err != nil {
		t.Fatal(err)
	}
	return a, b, c, []keys.Succession{cb, ba}
}

// chainDevice is a syncer given c alone on the mail store ms, through the
// API at url, logging to w.
func chainDevice(t *testing.T, r *rig, url string, ms Store, c keys.PublicKey, batch int, w *bytes.Buffer) *Syncer {
	t.Helper()
	client, err := api.NewClient(url, "alice", r.user, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: c, Source: client, Store: ms, BatchCount: batch,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, RecheckPermanent: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(w, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSpoolKeyChainVouched: the spool's key replaced twice (a by b, then b
// by c) with deliveries under each, a new device given c alone, served
// the chain of statements (c's of b, then b's of a), has every message
// however the log is cut into reads, and rejects a's delivery placed after
// b's first entry and b's and a's placed after c's first. Before, a's
// deliveries were a stranger's to it and never showed.
func TestSpoolKeyChainVouched(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 2, 1000} {
		r := newRig(t)
		a, b, c, chain := chainRig(t, r)
		r.deliver(a, msg(0))
		r.deliver(a, msg(1))
		r.deliver(b, msg(2))
		p1 := r.deliver(a, msg(3))
		r.deliver(b, msg(4))
		r.deliver(c, msg(5))
		p2 := r.deliver(b, msg(6))
		p3 := r.deliver(a, msg(7))
		r.deliver(c, msg(8))
		r.earlier = chain[1:]
		url := r.serve(c.Public(), &chain[0])
		var logs bytes.Buffer
		s, ms := r.vouchedDeviceLogging(url, "d", c.Public(), batch, &logs)
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{0, 1, 2, 4, 5, 8}; !slices.Equal(got, want) {
			t.Errorf("batch %d: INBOX holds messages %v, want %v\n%s", batch, got, want, logs.String())
		}
		for _, p := range []uint64{p1, p2, p3} {
			untrustedAt(t, ms, p)
		}
	}
}

// TestSpoolKeyChainCutoverKept: a device given c alone that applied b's
// first delivery, started again, still rejects a delivery a signed after
// it: the database records a's cutover. Before, a's deliveries were a
// stranger's, and no cutover of a key before the previous one was kept.
func TestSpoolKeyChainCutoverKept(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b, c, chain := chainRig(t, r)
	r.deliver(a, msg(0))
	r.deliver(b, msg(1))
	r.earlier = chain[1:]
	url := r.serve(c.Public(), &chain[0])
	var logs bytes.Buffer
	s, ms := r.vouchedDeviceLogging(url, "d", c.Public(), 0, &logs)
	syncAll(t, s)
	if got, want := inboxDates(t, ms), []int{0, 1}; !slices.Equal(got, want) {
		t.Fatalf("INBOX holds messages %v, want %v\n%s", got, want, logs.String())
	}
	planted := r.deliver(a, msg(2))
	r.deliver(c, msg(3))
	again := chainDevice(t, r, url, ms, c.Public(), 0, &logs)
	syncAll(t, again)
	if got, want := inboxDates(t, ms), []int{0, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("after a restart: INBOX holds messages %v, want %v\n%s", got, want, logs.String())
	}
	untrustedAt(t, ms, planted)
}

// TestSpoolKeyChainForged: a chain whose second statement is not signed by
// the key the first names (another key signed it), or that names a key
// twice, is refused whole, the log saying which statement and why: a new
// device given c alone trusts neither a nor b, and has c's deliveries
// alone. Before, the second statement was never read: the device trusted
// b from the first, and showed b's mail.
func TestSpoolKeyChainForged(t *testing.T) {
	t.Parallel()
	for name, earlier := range map[string]func(a, b, c *keys.SecretKey) keys.Succession{
		"signed by another key": func(a, b, c *keys.SecretKey) keys.Succession {
			stranger, err := keys.Generate(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return keys.Succession{Key: b.Public(), Previous: a.Public(), Signature: stranger.Sign(keys.SuccessionMessage(b.Public(), a.Public()))}
		},
		"a loop": func(a, b, c *keys.SecretKey) keys.Succession {
			s, err := keys.SignSuccession(b, c.Public())
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	} {
		r := newRig(t)
		a, b, c, chain := chainRig(t, r)
		r.deliver(a, msg(0))
		r.deliver(b, msg(1))
		r.deliver(c, msg(2))
		r.earlier = []keys.Succession{earlier(a, b, c)}
		url := r.serve(c.Public(), &chain[0])
		var logs bytes.Buffer
		s, ms := r.vouchedDeviceLogging(url, "d", c.Public(), 0, &logs)
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{2}; !slices.Equal(got, want) {
			t.Errorf("%s: INBOX holds messages %v, want %v\n%s", name, got, want, logs.String())
		}
		if !strings.Contains(logs.String(), "statement 2 of the spool key succession") {
			t.Errorf("%s: the log does not name the statement refused:\n%s", name, logs.String())
		}
	}
}

// TestSpoolKeyChainCheckpoint: a new device given c alone restores a
// checkpoint that keeps a delivery signed by a and one signed by b after
// it, and none by c: it records a's cutover at b's kept delivery, so a
// delivery a signed after the checkpoint is rejected. Before, the restore
// recorded no cutover of a key before the previous one, and that delivery
// showed.
func TestSpoolKeyChainCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, b, c, chain := chainRig(t, r)
	r.deliver(a, msg(0))
	r.deliver(b, msg(1))
	r.earlier = chain[1:]
	url := r.serve(c.Public(), &chain[0])
	var logs bytes.Buffer
	w, _ := r.vouchedDeviceLogging(url, "w", c.Public(), 0, &logs)
	w.cfg.CheckpointMin = -1
	syncAll(t, w)
	if _, _, err := w.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	d, ms := r.vouchedDeviceLogging(url, "d", c.Public(), 0, &logs)
	if _, err := d.SyncOnce(ctx); err != nil {
		t.Fatalf("restoring the checkpoint: %v\n%s", err, logs.String())
	}
	if st := d.Status(); st.Restores != 1 {
		t.Errorf("%d restores, want 1", st.Restores)
	}
	planted := r.deliver(a, msg(2))
	r.deliver(c, msg(3))
	syncAll(t, d)
	if got, want := inboxDates(t, ms), []int{0, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v\n%s", got, want, logs.String())
	}
	untrustedAt(t, ms, planted)
}

// failingApply is a device's store whose applies fail while fail is set,
// nothing applied: a device that stops (a crash, a power cut) between
// what the loop records of a batch and the batch's own commit.
type failingApply struct {
	*mailstore.Store
	fail atomic.Bool
}

func (f *failingApply) ApplyChained(ctx context.Context, entries []mailstore.Entry, unopened []mailstore.Rejection, newPos uint64, h []chain.Hash) (*mailstore.Result, error) {
	if f.fail.Load() {
		return nil, errors.New("the device stopped before the batch's commit")
	}
	return f.Store.ApplyChained(ctx, entries, unopened, newPos, h)
}

// TestSpoolKeyChainCutoverBeforeApply: a device that has applied a's
// deliveries reads b's first one, and stops before that batch commits.
// The earlier key's cutover is in the database already, so that once the
// batch is applied, after any stop, a's delivery placed after it is
// refused. Before, the cutover was recorded after the batch's commit, in
// a write of its own: a stop between the two left a trusted up to the
// next entry signed by a later key.
func TestSpoolKeyChainCutoverBeforeApply(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b, c, chain := chainRig(t, r)
	r.deliver(a, msg(0))
	r.earlier = chain[1:]
	url := r.serve(c.Public(), &chain[0])
	var logs bytes.Buffer
	s, ms := r.vouchedDeviceLogging(url, "d", c.Public(), 0, &logs)
	syncAll(t, s)
	first := r.deliver(b, msg(1))
	fa := &failingApply{Store: ms}
	fa.fail.Store(true)
	crashing := chainDevice(t, r, url, fa, c.Public(), 0, &logs)
	if _, err := crashing.SyncOnce(context.Background()); err == nil {
		t.Fatal("a sync whose apply fails: no error")
	}
	ek, err := ms.EarlierSpoolKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ek, func(k mailstore.EarlierSpoolKey) bool { return bytes.Equal(k.Key, a.Public().Bytes()) })
	if i < 0 || ek[i].Cutover != first {
		t.Fatalf("after a stop before the batch holding b's first delivery (at %d) committed: the earlier keys recorded %+v; want a's cutover at %d\n%s", first, ek, first, logs.String())
	}
	planted := r.deliver(a, msg(2))
	r.deliver(c, msg(3))
	again := chainDevice(t, r, url, ms, c.Public(), 0, &logs)
	syncAll(t, again)
	if got, want := inboxDates(t, ms), []int{0, 1, 3}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v\n%s", got, want, logs.String())
	}
	untrustedAt(t, ms, planted)
}
