package imapd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"cspool/internal/mailstore"
	"cspool/internal/testproc"
)

// waitOnline waits until every device has applied the spool's head with
// no change of its own left to send.
func waitOnline(t *testing.T, r *rig, devs ...*device) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		head := r.Head()
		done := true
		for _, d := range devs {
			st := d.sync.Status()
			done = done && st.Queued == 0 && st.Position == head
		}
		if done {
			return head
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for i, d := range devs {
				st := d.sync.Status()
				fmt.Fprintf(&b, " device %d at %d with %d queued (%s);", i, st.Position, st.Queued, st.LastError)
			}
			t.Fatalf("not converged within 30 s: head %d,%s", head, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sameStores fails unless every device's store holds what the first's does.
func sameStores(t *testing.T, devs ...*device) *mailstore.State {
	t.Helper()
	ctx := context.Background()
	first, err := devs[0].store.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range devs[1:] {
		st, err := d.store.Dump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := mailstore.Diff(first, st, 10); diff != nil {
			t.Fatalf("device %d differs from device 0:\n%s", i+1, strings.Join(diff, "\n"))
		}
	}
	return first
}

// TestOffline: while the spool cannot be reached, STORE, the \Seen a FETCH
// of a body sets, CREATE, COPY, APPEND, MOVE and EXPUNGE answer OK at once
// and the device's other sessions see them; when the spool answers again
// they reach the other device, and both hold the same.
func TestOffline(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.device("a"), r.device("b")
	deliverAll(r, a)
	b.synced(r.Head())
	c := a.client(nil)
	mustSelect(t, c, "INBOX")
	var mu sync.Mutex
	var heard []string
	other := a.client(&imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { mu.Lock(); heard = append(heard, fmt.Sprint("expunge ", seq)); mu.Unlock() },
		Fetch: func(m *imapclient.FetchMessageData) {
			if buf, err := m.Collect(); err == nil {
				mu.Lock()
				heard = append(heard, fmt.Sprint("flags ", buf.SeqNum, " ", withoutRecent(buf.Flags)))
				mu.Unlock()
			}
		},
	})
	mustSelect(t, other, "INBOX")

	a.src.set(true)
	deadline := time.Now().Add(10 * time.Second)
	for a.sync.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("the device never noticed the spool was down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Fatalf("STORE with the spool down: %v", err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(2), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 || string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})) != messages["multipart"] {
		t.Fatalf("FETCH with the spool down: %v %v", msgs, err)
	}
	if !slices.Contains(msgs[0].Flags, imap.FlagSeen) {
		t.Errorf("FETCH BODY[] with the spool down: flags %v, want \\Seen set", msgs[0].Flags)
	}
	// The device's other session hears it at once (the client hands
	// unilateral FETCH data to its handler in a goroutine of its own).
	heardAll := func(want ...string) {
		t.Helper()
		if err := other.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			got := strings.Join(heard, "; ")
			mu.Unlock()
			missing := ""
			for _, w := range want {
				if !strings.Contains(got, w) {
					missing = w
				}
			}
			if missing == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the other session heard %q, want %q in it", got, missing)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		mu.Lock()
		heard = nil
		mu.Unlock()
	}
	heardAll(`flags 1 [\Flagged]`, `flags 2 [\Seen]`)
	if err := c.Create("Offline", nil).Wait(); err != nil {
		t.Fatalf("CREATE with the spool down: %v", err)
	}
	if cd, err := c.Copy(imap.SeqSetNum(3), "Offline").Wait(); err != nil || len(cd.DestUIDs) != 1 {
		t.Fatalf("COPY with the spool down: %+v, %v", cd, err)
	}
	body := "Subject: written on the train\r\n\r\nno network here\r\n"
	ac := c.Append("Offline", int64(len(body)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft}})
	if _, err := ac.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := ac.Close(); err != nil {
		t.Fatal(err)
	}
	if ad, err := ac.Wait(); err != nil || ad.UID == 0 {
		t.Fatalf("APPEND with the spool down: %+v, %v", ad, err)
	}
	if _, err := c.Move(imap.SeqSetNum(4), "Offline").Wait(); err != nil {
		t.Fatalf("MOVE with the spool down: %v", err)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatalf("EXPUNGE with the spool down: %v", err)
	}
	heardAll("expunge 4", "expunge 1")
	if q := a.sync.Status().Queued; q != 8 {
		t.Errorf("%d changes queued, want 8", q)
	}
	sel, err := b.client(nil).Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 4 {
		t.Fatalf("the other device's INBOX while this one is offline: %+v, %v; want the 4 messages", sel, err)
	}

	a.src.set(false)
	waitOnline(t, r, a, b)
	sameStores(t, a, b)
	view := imapView(t, b.client(nil))
	for _, want := range []string{
		"INBOX uidvalidity=1 exists=2\n  2 [\\Seen]\n  3 []\n",
		"exists=3\n  1 []\n  2 [\\Draft]\n  3 []\n",
	} {
		if !strings.Contains(view, want) {
			t.Errorf("the other device shows\n%s\nwant in it\n%s", view, want)
		}
	}
}

// TestOfflineRenumberedWhileSelected: a COPY queued while the spool cannot
// be reached takes INBOX's UIDNEXT; a delivery takes that UID in the log
// first, so the device gives INBOX a new UIDVALIDITY of its own. A session
// that had INBOX selected all along gets NO [NONEXISTENT] for its next
// command, and selecting INBOX again shows it with the new UIDVALIDITY,
// greater and from 2^31 up (docs/IMAP.md, "Offline"; internal/faults
// relies on exactly this to tell the NO from any other).
func TestOfflineRenumberedWhileSelected(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	c := a.client(nil)
	before := mustSelect(t, c, "INBOX")
	other := a.client(nil)
	mustSelect(t, other, "INBOX")

	a.src.set(true)
	deadline := time.Now().Add(10 * time.Second)
	for a.sync.Status().LastError == "" {
		if time.Now().After(deadline) {
			t.Fatal("the device never noticed the spool was down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cd, err := other.Copy(imap.SeqSetNum(1), "INBOX").Wait()
	if err != nil || len(cd.DestUIDs) != 1 {
		t.Fatalf("COPY with the spool down: %+v, %v", cd, err)
	}
	r.Deliver(another("plain"))
	a.src.set(false)
	waitOnline(t, r, a)

	err = c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close()
	if imapCode(err) != imap.ResponseCodeNonExistent {
		t.Fatalf("STORE in the INBOX selected before it got a new UIDVALIDITY: %v, want NO [NONEXISTENT]", err)
	}
	after := mustSelect(t, c, "INBOX")
	if after.UIDValidity <= before.UIDValidity || after.UIDValidity < 1<<31 {
		t.Errorf("INBOX selected again: UIDVALIDITY %d (was %d), want a greater one from 2^31 up", after.UIDValidity, before.UIDValidity)
	}
	if after.NumMessages != before.NumMessages+2 {
		t.Errorf("INBOX selected again: %d messages, want %d (the copy and the delivery)", after.NumMessages, before.NumMessages+2)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
		t.Errorf("STORE once INBOX is selected again: %v", err)
	}
}

// uidValidity matches the UIDVALIDITY in an imapView: a device that
// showed a provisional UID the log gave to another message gives the
// mailbox a UIDVALIDITY of its own (docs/MAILSTORE.md), so only the rest
// must agree.
var uidValidity = regexp.MustCompile(`uidvalidity=\d+`)

// TestConvergenceOffline is TestConvergence with each device's spool
// connection going down and up at random while the clients work: every
// change answered OK while offline reaches the log once, and all devices
// end the same, UID for UID.
func TestConvergenceOffline(t *testing.T) {
	t.Parallel()
	seed := *convergeSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -converge.seed=%d)", seed, seed)
	// 120 operations a client with CSPOOL_HEAVY=1 (CI), else 40.
	ops := 40
	if testproc.Heavy() && !testing.Short() {
		ops = 120
	}
	r := newRig(t)
	devs := []*device{r.device("a"), r.device("b"), r.device("c")}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 40; i++ {
			r.Deliver([]byte(fmt.Sprintf("From: s%d@example.org\r\nSubject: delivery %d\r\n\r\nbody %d\r\n", i, i, i)))
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
		}
	}()
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 99))
		for {
			select {
			case <-stop:
				for _, d := range devs {
					d.src.set(false)
				}
				return
			case <-time.After(time.Duration(20+rng.IntN(150)) * time.Millisecond):
			}
			devs[rng.IntN(len(devs))].src.set(rng.IntN(2) == 0)
		}
	}()
	errs := make(chan error, len(devs))
	var work sync.WaitGroup
	for i, d := range devs {
		work.Add(1)
		go func() {
			defer work.Done()
			w := &worker{t: t, c: d.client(nil), rng: rand.New(rand.NewPCG(seed, uint64(i))), name: fmt.Sprintf("dev%d", i)}
			errs <- w.run(ops)
		}()
	}
	work.Wait()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	head := waitOnline(t, r, devs...)
	first := sameStores(t, devs...)
	if len(first.Messages) == 0 {
		t.Fatal("no messages at the end: the operations did nothing")
	}
	views := make([]string, len(devs))
	for i, d := range devs {
		views[i] = uidValidity.ReplaceAllString(imapView(t, d.client(nil)), "uidvalidity=*")
	}
	for i := range views[1:] {
		if views[i+1] != views[0] {
			t.Fatalf("IMAP views differ (seed %d):\n%s\n---\n%s", seed, views[0], views[i+1])
		}
	}
	t.Logf("converged: %d mailboxes, %d messages, log head %d", len(first.Mailboxes), len(first.Messages), head)
}
