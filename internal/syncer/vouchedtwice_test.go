package syncer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/keys"
	"cspool/internal/spool/sqlitestore"
)

// TestReplacedTwiceVouched: the spool's key replaced twice (first by
// second, second by third), a new device given only the third key trusts
// the second, which the spool vouches for, and applies its deliveries
// before the cutover; the first key's, two back, stay a stranger's
// (docs/OPERATING.md, "Replacing the spool key"), however the log is cut
// into reads. Before, a read that held an entry by the first key before
// those by the second asked the statement for the first key's author
// alone, found it named another, and stopped looking: the second key's
// deliveries in that read were passed by as a stranger's and never showed.
func TestReplacedTwiceVouched(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 2, 1000} {
		r := newRig(t)
		first := r.spool
		second, third := r.evil, mustGenerate(t)
		r.replaceOnStore(first, second, []int{0, 1})
		r.deliver(second, msg(2))
		r.deliver(second, msg(3))
		stated := r.replaceAgain(second, third)
		r.deliver(third, msg(4))
		url := r.serve(third.Public(), stated)
		s, ms := r.vouchedDevice(url, "b", third.Public(), batch)
		syncAll(t, s)
		if got, want := inboxDates(t, ms), []int{2, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("batch %d: INBOX holds messages %v, want %v", batch, got, want)
		}
		untrustedAt(t, ms, 1)
		untrustedAt(t, ms, 2)
	}
}

func mustGenerate(t *testing.T) *keys.SecretKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// replaceAgain replaces the store's spool key, prev, by nw, as a server
// started again with `--spool-key nw --previous-spool-key prev` does (on
// another handle on the store), and returns the statement the server then
// makes.
func (r *rig) replaceAgain(prev, nw *keys.SecretKey) *keys.Succession {
	r.t.Helper()
	ctx := context.Background()
	r.log.(*sqlitestore.Store).Close()
	st, err := sqlitestore.Open(filepath.Join(r.dir, "spool"), sqlitestore.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { st.Close() })
	r.log = st
	if replaced, err := st.ReplaceSpoolKey(ctx, prev.Public().Bytes(), nw.Public().Bytes()); err != nil || !replaced {
		r.t.Fatalf("replacing the spool key again: replaced %v, %v", replaced, err)
	}
	got, err := st.PreviousSpoolKey(ctx, nw.Public().Bytes())
	if err != nil || !bytes.Equal(got, prev.Public().Bytes()) {
		r.t.Fatalf("the store's previous key for the newest: %x, %v; want the one it replaced", got, err)
	}
	s, err := keys.SignSuccession(nw, prev.Public())
	if err != nil {
		r.t.Fatal(err)
	}
	return &s
}

// TestReplacedTwiceCheckpointRestored: the same two replacements, and a
// checkpoint written by a device that applied the deliveries of the first
// and second keys, none by the third yet: a new device given the third key
// alone restores it, the spool vouching for the third key. Before, the
// checkpoint's deliveries by two keys not trusted were not checked against
// the statement (it was asked only when they were all by one key), and the
// device stopped with an *UntrustedSpoolError telling to check
// --spool-key, until a delivery signed by the third key came.
func TestReplacedTwiceCheckpointRestored(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	first := r.spool
	second, third := r.evil, mustGenerate(t)
	r.replaceOnStore(first, second, []int{0, 1})
	r.deliver(second, msg(2))
	r.spool = second
	a, _ := r.deviceWith("a", Config{PreviousSpoolKey: first.Public()})
	a.cfg.CheckpointMin = -1
	syncAll(t, a)
	if _, _, err := a.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	stated := r.replaceAgain(second, third)
	url := r.serve(third.Public(), stated)
	b, ms := r.vouchedDevice(url, "b", third.Public(), 0)
	if _, err := b.SyncOnce(ctx); err != nil {
		t.Fatalf("restoring a checkpoint that keeps the deliveries of the two keys before, with the newest alone: %v", err)
	}
	if got, want := inboxDates(t, ms), []int{0, 1, 2}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
	r.deliver(third, msg(3))
	syncAll(t, b)
	if got, want := inboxDates(t, ms), []int{0, 1, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v, want %v", got, want)
	}
}

// TestSuccessionAskBounded: a spool (or a proxy before it) that takes the
// ask for its statement and never answers it: the ask fails within its
// bound, is logged, and the sync holds before the entries by the key not
// trusted, passing none by, until an ask is answered; then the old key's
// deliveries before the cutover are applied with the new key's. Before
// the bound, the ask held the sync loop, and every read after it, until
// the device stopped; with the bound and before the hold, the old key's
// deliveries were passed by as a stranger's for good, and never showed
// on the device (here message 0 of 0 and 1).
func TestSuccessionAskBounded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	old, nw := r.spool, r.evil
	stated := r.replaceOnStore(old, nw, []int{0})
	r.deliver(nw, msg(1))
	release := make(chan struct{})
	var answering atomic.Bool
	t.Cleanup(func() { close(release) })
	url := r.serveThrough(nw.Public(), stated, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if strings.HasSuffix(req.URL.Path, "/spool-keys") && !answering.Load() {
				select {
				case <-release:
				case <-req.Context().Done():
				}
				return
			}
			h.ServeHTTP(w, req)
		})
	})
	var logged lockedBuffer
	s, ms := r.vouchedDeviceLogging(url, "b", nw.Public(), 0, &logged)
	s.successionWait = 100 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := s.SyncOnce(ctx); !errors.Is(err, errSuccessionPending) {
		t.Fatalf("a sync whose ask for the statement is never answered: %v, want errSuccessionPending", err)
	}
	if got := inboxDates(t, ms); len(got) != 0 {
		t.Errorf("INBOX holds messages %v before the statement is had, want none (the old key's held, the new key's after them)", got)
	}
	if st := s.Status(); st.Rejected != 0 {
		t.Errorf("%d entries rejected while the statement is not had, want none", st.Rejected)
	}
	if !strings.Contains(logged.String(), "asking the spool which key its spool key replaced failed") {
		t.Errorf("the failed ask is not logged:\n%s", logged.String())
	}
	// Asked again only after strangerRecheck: held meanwhile.
	if _, err := s.SyncOnce(ctx); !errors.Is(err, errSuccessionPending) {
		t.Fatalf("a sync within a minute of the failed ask: %v, want errSuccessionPending", err)
	}
	answering.Store(true)
	s.succession.mu.Lock()
	s.succession.failedAt = time.Now().Add(-strangerRecheck)
	s.succession.mu.Unlock()
	syncAll(t, s)
	if got, want := inboxDates(t, ms), []int{0, 1}; !slices.Equal(got, want) {
		t.Errorf("INBOX holds messages %v once the statement is had, want %v", got, want)
	}
}
