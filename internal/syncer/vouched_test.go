package syncer

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
	"cspool/internal/testproc"
	"cspool/internal/userdb"
)

// replaceOnStore records old as the rig's spool key, has it sign the
// deliveries of dates before, replaces it by nw on the store
// (spool.KeyReplacer), as `cspool server --spool-key new.sec
// --previous-spool-key old.pub` does, and returns the statement the
// server then makes from the store's history (spool.KeyHistory).
func (r *rig) replaceOnStore(old, nw *keys.SecretKey, before []int) *keys.Succession {
	r.t.Helper()
	ctx := context.Background()
	kr := r.log.(spool.KeyReplacer)
	if err := kr.KeepSpoolKey(ctx, old.Public().Bytes()); err != nil {
		r.t.Fatal(err)
	}
	for _, d := range before {
		r.deliver(old, msg(d))
	}
	if replaced, err := kr.ReplaceSpoolKey(ctx, old.Public().Bytes(), nw.Public().Bytes()); err != nil || !replaced {
		r.t.Fatalf("replacing the spool key on the store: replaced %v, %v", replaced, err)
	}
	prev, err := r.log.(spool.KeyHistory).PreviousSpoolKey(ctx, nw.Public().Bytes())
	if err != nil {
		r.t.Fatal(err)
	}
	pub, err := keys.PublicKeyFromBytes(prev)
	if err != nil {
		r.t.Fatalf("the store's previous key for the new one: %x, %v", prev, err)
	}
	s, err := keys.SignSuccession(nw, pub)
	if err != nil {
		r.t.Fatal(err)
	}
	return &s
}

// serve serves the rig's log over HTTP on a loopback port, alice's key
// registered, with spoolKey and the statement stated; it returns the
// server's base URL.
func (r *rig) serve(spoolKey keys.PublicKey, stated *keys.Succession) string {
	r.t.Helper()
	return r.serveThrough(spoolKey, stated, nil)
}

// serveThrough is serve with the API server's handler given to wrap
// (nil: served as it is).
func (r *rig) serveThrough(spoolKey keys.PublicKey, stated *keys.Succession, wrap func(http.Handler) http.Handler) string {
	r.t.Helper()
	users := filepath.Join(r.dir, "users")
	if err := os.WriteFile(users, []byte("alice "+r.user.Public().String()+"\n"), 0o600); err != nil {
		r.t.Fatal(err)
	}
	db, err := userdb.Load(users, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	var h http.Handler = api.NewServer(api.Config{Store: r.log, Users: db, SpoolKey: spoolKey, SpoolKeySuccession: stated,
		SpoolKeyEarlier: r.earlier, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if wrap != nil {
		h = wrap(h)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	r.t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// vouchedDevice opens a new mail store name, records spoolKey alone in
// it as the device does at its start (TrustSpoolKey), and makes a syncer
// reading batch entries at a time through the API client at url.
func (r *rig) vouchedDevice(url, name string, spoolKey keys.PublicKey, batch int) (*Syncer, *mailstore.Store) {
	r.t.Helper()
	return r.vouchedDeviceLogging(url, name, spoolKey, batch, io.Discard)
}

// vouchedDeviceLogging is vouchedDevice with the syncer's log lines, as
// text, written to w.
func (r *rig) vouchedDeviceLogging(url, name string, spoolKey keys.PublicKey, batch int, w io.Writer) (*Syncer, *mailstore.Store) {
	r.t.Helper()
	ms, err := mailstore.Open(filepath.Join(r.dir, name+".db"), mimeform.Parser{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { ms.Close() })
	if err := ms.TrustSpoolKey(context.Background(), spoolKey.Bytes()); err != nil {
		r.t.Fatal(err)
	}
	client, err := api.NewClient(url, "alice", r.user, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: spoolKey, Source: client, Store: ms, BatchCount: batch,
		Wait: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, RecheckPermanent: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(w, nil))})
	if err != nil {
		r.t.Fatal(err)
	}
	return s, ms
}

// TestReplacedSpoolKeyVouched: the spool's key replaced on a real store,
// a new device given only the new key syncs through the API and has every
// message, the old key's deliveries before the cutover included, however
// the log is cut into reads: the server states, signed by the new key,
// which key it replaced (GET /v1/users/{user}/spool-keys). A delivery
// signed by the old key after the cutover is rejected still, and the
// database records the cutover and the previous key, as
// --previous-spool-key does. Before, the old key's deliveries were passed
// by as a stranger's, and never showed on that device.
func TestReplacedSpoolKeyVouched(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 2, 1000} {
		r := newRig(t)
		ctx := context.Background()
		old, nw := r.spool, r.evil
		stated := r.replaceOnStore(old, nw, []int{0, 1})
		cutover := r.deliver(nw, msg(2))
		r.deliver(nw, msg(3))
		planted := r.deliver(old, msg(4))
		r.deliver(nw, msg(5))
		url := r.serve(nw.Public(), stated)
		s, ms := r.vouchedDevice(url, "b", nw.Public(), batch)
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{0, 1, 2, 3, 5}; !slices.Equal(got, want) {
			t.Errorf("batch %d: INBOX holds messages %v, want %v", batch, got, want)
		}
		untrustedAt(t, ms, planted)
		if st := s.Status(); st.Rejected != 1 {
			t.Errorf("batch %d: status says %d rejected, want 1", batch, st.Rejected)
		}
		if c, err := ms.SpoolKeyCutover(ctx); err != nil || c != cutover {
			t.Errorf("batch %d: cutover recorded %d, %v; want %d", batch, c, err, cutover)
		}
		// The previous key is recorded: another one is refused as not
		// the one this database records as replaced.
		stranger, err := keys.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		var other *mailstore.OtherSpoolKeyError
		if _, err := ms.ReplaceSpoolKey(ctx, nw.Public().Bytes(), stranger.Public().Bytes()); !errors.As(err, &other) || !old.Public().Equal(mustPub(t, other.Replaced)) {
			t.Errorf("batch %d: the database's record of the previous key: %v, want an *OtherSpoolKeyError naming the old key as replaced", batch, err)
		}
		again := r.deliver(old, msg(6))
		syncAll(t, s)
		untrustedAt(t, ms, again)
	}
}

// TestReplacedSpoolKeyNotVouched: a statement the new key did not sign
// (another key's signature, the new key named as its maker), or one the
// new key signed that names another key than the old one, changes
// nothing: a new device given only the new key passes the old key's
// deliveries by as a stranger's, rejected, and has the new key's alone.
func TestReplacedSpoolKeyNotVouched(t *testing.T) {
	t.Parallel()
	forged := func(old, nw, stranger *keys.SecretKey) *keys.Succession {
		return &keys.Succession{Key: nw.Public(), Previous: old.Public(), Signature: stranger.Sign(keys.SuccessionMessage(nw.Public(), old.Public()))}
	}
	other := func(old, nw, stranger *keys.SecretKey) *keys.Succession {
		s, err := keys.SignSuccession(nw, stranger.Public())
		if err != nil {
			t.Fatal(err)
		}
		return &s
	}
	for name, statement := range map[string]func(old, nw, stranger *keys.SecretKey) *keys.Succession{"signed by another key": forged, "naming another key": other} {
		r := newRig(t)
		old, nw := r.spool, r.evil
		stranger, err := keys.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		r.replaceOnStore(old, nw, []int{0, 1})
		r.deliver(nw, msg(2))
		r.deliver(nw, msg(3))
		url := r.serve(nw.Public(), statement(old, nw, stranger))
		s, ms := r.vouchedDevice(url, "b", nw.Public(), 0)
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{2, 3}; !slices.Equal(got, want) {
			t.Errorf("%s: INBOX holds messages %v, want %v", name, got, want)
		}
		untrustedAt(t, ms, 1)
		untrustedAt(t, ms, 2)
	}
}

// mustPub parses a 64-byte public key.
func mustPub(t *testing.T, b []byte) keys.PublicKey {
	t.Helper()
	p, err := keys.PublicKeyFromBytes(b)
	if err != nil {
		t.Fatalf("%x: %v", b, err)
	}
	return p
}

// TestReplacedSpoolKeyVouchedCheckpoint: a new device given only the new
// key, on a log compacted by a checkpoint that keeps the old key's
// deliveries alone, with no delivery signed by the new key yet, restores
// it: the spool vouches for the old key. Before, it stopped with an
// *UntrustedSpoolError naming the checkpoint, as for a wrong key given.
func TestReplacedSpoolKeyVouchedCheckpoint(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	old, nw := r.spool, r.evil
	stated := r.replaceOnStore(old, nw, []int{0, 1, 2})
	a, _ := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	syncAll(t, a)
	if _, _, err := a.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	url := r.serve(nw.Public(), stated)
	b, ms := r.vouchedDevice(url, "b", nw.Public(), 0)
	if _, err := b.SyncOnce(ctx); err != nil {
		t.Fatalf("restoring a checkpoint that keeps the old key's deliveries, with the new key alone: %v", err)
	}
	if st := b.Status(); st.Restores != 1 {
		t.Errorf("%d restores, want 1", st.Restores)
	}
	if got, want := inboxDates(t, ms), []int{0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	cutover := r.deliver(nw, msg(3))
	planted := r.deliver(old, msg(4))
	r.deliver(nw, msg(5))
	syncAll(t, b)
	if got, want := inboxDates(t, ms), []int{0, 1, 2, 3, 5}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	untrustedAt(t, ms, planted)
	if c, err := ms.SpoolKeyCutover(ctx); err != nil || c != cutover {
		t.Errorf("cutover recorded %d, %v; want %d", c, err, cutover)
	}
}

// lockedBuffer is a log destination safe for the loop's goroutines.
type lockedBuffer = testproc.Buffer

// TestReplacedSpoolKeyNoRoute: a spool of a release without the
// spool-keys route answers it 404, as it answers any path it does not
// serve (the real server's answer to a path it has no route for): a new
// device given only the new key takes that as no statement, asked once,
// with one line of information and no warning; the old key's deliveries
// stay a stranger's, the new key's are applied. Before, every ask logged
// a warning and was tried again a minute later, all the run long.
func TestReplacedSpoolKeyNoRoute(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	old, nw := r.spool, r.evil
	stated := r.replaceOnStore(old, nw, []int{0, 1})
	r.deliver(nw, msg(2))
	var asked atomic.Int32
	url := r.serveThrough(nw.Public(), stated, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.HasSuffix(req.URL.Path, "/spool-keys") {
				asked.Add(1)
				req.URL.Path = strings.TrimSuffix(req.URL.Path, "/spool-keys") + "/no-such-route"
			}
			h.ServeHTTP(w, req)
		})
	})
	var logged lockedBuffer
	s, ms := r.vouchedDeviceLogging(url, "b", nw.Public(), 1, &logged)
	syncAll(t, s)
	r.deliver(nw, msg(3))
	syncAll(t, s)
	if got, want := inboxDates(t, ms), []int{2, 3}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	untrustedAt(t, ms, 1)
	untrustedAt(t, ms, 2)
	if n := asked.Load(); n != 1 {
		t.Errorf("the spool-keys route was asked %d times, want once", n)
	}
	lines := logged.String()
	warned := strings.Contains(lines, "level=WARN msg=\"asking the spool")
	if n := strings.Count(lines, "level=INFO msg=\"the spool states no key its spool key replaced"); n != 1 || warned {
		t.Errorf("a spool without the route: %d lines of information saying it states none (want 1), a warning of the ask %v:\n%s", n, warned, lines)
	}
}
