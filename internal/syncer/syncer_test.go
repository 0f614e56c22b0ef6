package syncer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

type rig struct {
	t                 *testing.T
	log               spool.Store
	user, spool, evil *keys.SecretKey
	dir               string
	earlier           []keys.Succession // the statements serve gives after its first (vouched_test.go)
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlitestore.Open(filepath.Join(dir, "spool"), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	gen := func() *keys.SecretKey {
		k, err := keys.Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return &rig{t: t, log: st, user: gen(), spool: gen(), evil: gen(), dir: dir}
}

// device opens a fresh mail store and a syncer on it.
func (r *rig) device(name string, src Source, onApplied func(*mailstore.Result)) (*Syncer, *mailstore.Store) {
	r.t.Helper()
	return r.deviceWith(name, Config{Source: src, OnApplied: onApplied})
}

// deviceWith is device with more of the syncer's settings: cfg's user,
// keys and store are the rig's, its source the rig's log when nil, and
// its long-poll wait and backoff short unless set.
func (r *rig) deviceWith(name string, cfg Config) (*Syncer, *mailstore.Store) {
	r.t.Helper()
	ms, err := mailstore.Open(filepath.Join(r.dir, name+".db"), mimeform.Parser{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { ms.Close() })
	if cfg.Source == nil {
		cfg.Source = StoreSource{Store: r.log, User: "alice"}
	}
	cfg.User, cfg.UserKey, cfg.SpoolKey, cfg.Store = "alice", r.user, r.spool.Public(), ms
	if cfg.Wait == 0 {
		cfg.Wait = 2 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return s, ms
}

// deliver appends a delivery sealed by author (normally the spool).
// strangers returns n entries for alice signed by a stranger's key
// (r.evil), each a delivery of msg(i): what a flooding spool serves.
func (r *rig) strangers(n int) [][]byte {
	r.t.Helper()
	bs := make([][]byte, 0, n)
	for i := range n {
		b, _, err := entry.Seal(msg(i), r.evil, r.user.Public(), "alice", nil)
		if err != nil {
			r.t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}

func (r *rig) deliver(author *keys.SecretKey, c *command.Command) uint64 {
	r.t.Helper()
	b, _, err := entry.Seal(c, author, r.user.Public(), "alice", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	pos, err := r.log.Append(context.Background(), "alice", [][]byte{b})
	if err != nil {
		r.t.Fatal(err)
	}
	return pos
}

// seal appends c sealed by author and returns its position and id.
func (r *rig) seal(author *keys.SecretKey, c *command.Command) (uint64, command.ID) {
	r.t.Helper()
	b, id, err := entry.Seal(c, author, r.user.Public(), "alice", nil)
	if err != nil {
		r.t.Fatal(err)
	}
	pos, err := r.log.Append(context.Background(), "alice", [][]byte{b})
	if err != nil {
		r.t.Fatal(err)
	}
	return pos, id
}

func msg(i int) *command.Command {
	return &command.Command{Kind: command.Deliver, Date: 1764000000000 + int64(i),
		Body: fmt.Appendf(nil, "Subject: message %d\r\n\r\nbody %d\x00\r\n", i, i)}
}

func run(t *testing.T, s *Syncer) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	}
}

func inbox(t *testing.T, ms *mailstore.Store) (*mailstore.Mailbox, []*mailstore.Message) {
	t.Helper()
	ctx := context.Background()
	mb, err := ms.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*mailstore.Message
	err = ms.Scan(ctx, mb.ID, mailstore.WantRaw, func(m *mailstore.Message) error {
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return mb, msgs
}

func TestSyncDeliveriesAndSubmit(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	for i := 0; i < 5; i++ {
		r.deliver(r.spool, msg(i))
	}
	var mu sync.Mutex
	added := 0
	s, ms := r.device("a", nil, func(res *mailstore.Result) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range res.Changes {
			if c.Kind == mailstore.MessageAdded {
				added++
			}
		}
	})
	stop := run(t, s)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitApplied(ctx, 5); err != nil {
		t.Fatal(err)
	}
	// A delivery made while the loop long-polls is picked up.
	pos := r.deliver(r.spool, msg(5))
	if err := s.WaitApplied(ctx, pos); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != 6 {
		t.Fatalf("INBOX has %d messages, want 6", len(msgs))
	}
	for i, m := range msgs {
		if !bytes.Equal(m.Raw, msg(i).Body) || m.UID != mailstore.UID(i+1) {
			t.Fatalf("message %d: uid %d, body %q", i, m.UID, m.Raw)
		}
	}
	mu.Lock()
	if added != 6 {
		t.Errorf("OnApplied reported %d added messages, want 6", added)
	}
	mu.Unlock()

	// The device's own change goes through the log and comes back applied.
	outs, err := s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[0].ID, msgs[1].ID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 || outs[0].Status != mailstore.Applied {
		t.Fatalf("outcome %+v, want applied", outs)
	}
	_, msgs = inbox(t, ms)
	if len(msgs[0].Flags) != 1 || msgs[0].Flags[0] != `\Seen` || len(msgs[2].Flags) != 0 {
		t.Fatalf("flags after submit: %v %v", msgs[0].Flags, msgs[2].Flags)
	}
	if st := s.Status(); st.Position != pos+1 || !st.Connected || st.Applied != 7 {
		t.Fatalf("status %+v, want position %d, connected, 7 applied", st, pos+1)
	}
}

func TestRejectedEntriesDoNotStopSync(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.spool, msg(0))
	r.deliver(r.evil, msg(1)) // unknown author
	if _, err := r.log.Append(ctx, "alice", [][]byte{[]byte("garbage")}); err != nil {
		t.Fatal(err)
	}
	r.deliver(r.spool, &command.Command{Kind: command.CreateMailbox, Mailbox: "Evil"}) // spool beyond its rights
	other, _, _ := entry.Seal(msg(2), r.spool, r.evil.Public(), "alice", nil)          // sealed to another key
	if _, err := r.log.Append(ctx, "alice", [][]byte{other}); err != nil {
		t.Fatal(err)
	}
	last := r.deliver(r.spool, msg(3))

	s, ms := r.device("a", nil, nil)
	n, err := s.SyncOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 || s.Status().Position != last {
		t.Fatalf("synced %d entries to position %d, want 6 to %d", n, s.Status().Position, last)
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != 2 {
		t.Fatalf("INBOX has %d messages, want the 2 good deliveries", len(msgs))
	}
	if _, err := ms.MailboxByName(ctx, "Evil"); err == nil {
		t.Fatal("the spool key created a mailbox")
	}
	rej, err := ms.Rejected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 4 || s.Status().Rejected != 4 {
		t.Fatalf("rejected list has %d entries, status counts %d; want 4 and 4: %+v", len(rej), s.Status().Rejected, rej)
	}
	reasons := map[uint64]string{}
	for _, x := range rej {
		reasons[x.Pos] = string(x.Reason)
	}
	want := map[uint64]string{2: entry.ErrUnknownAuthor.Error(), 3: entry.ErrCorrupt.Error(), 4: string(mailstore.ReasonForbidden), 5: entry.ErrNotForUser.Error()}
	for pos, reason := range want {
		if reasons[pos] != reason {
			t.Errorf("position %d rejected as %q, want %q", pos, reasons[pos], reason)
		}
	}
}

// TestRejectionsCommitWithTheirBatch: the entries of a batch that do not
// open are recorded as rejected in the batch's own transaction, so the
// batch is one commit however many of its entries are rejected, and a
// batch that does not commit (here refused: it contradicts an append this
// device recorded) leaves none of its rejections behind.
func TestRejectionsCommitWithTheirBatch(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	garbage := func() {
		if _, err := r.log.Append(ctx, "alice", [][]byte{[]byte("garbage")}); err != nil {
			t.Fatal(err)
		}
	}
	// A new device reads its first entry alone (it learns whether there
	// is a checkpoint); the batch after it is the one this test is about.
	first := r.deliver(r.spool, msg(9))
	r.deliver(r.spool, msg(0))
	garbage()
	r.deliver(r.evil, msg(1)) // unknown author
	garbage()
	last := r.deliver(r.spool, msg(2))
	rejected := func(ms *mailstore.Store) []uint64 {
		t.Helper()
		rej, err := ms.Rejected(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		var pos []uint64
		for _, x := range rej {
			pos = append(pos, x.Pos)
		}
		return pos
	}

	t.Run("one commit", func(t *testing.T) {
		s, ms := r.device("a", nil, nil)
		before := ms.Commits()
		if n, err := s.SyncOnce(ctx); err != nil || n != int(last) {
			t.Fatalf("SyncOnce: %d entries, %v; want %d", n, err, last)
		}
		if got := ms.Commits() - before; got != 2 {
			t.Errorf("the first entry, then a batch of %d entries, 3 of them unopened, took %d commits; want 2", last-first, got)
		}
		if got := rejected(ms); fmt.Sprint(got) != "[5 4 3]" || s.Status().Rejected != 3 {
			t.Errorf("rejected positions %v, status counts %d; want [5 4 3] and 3", got, s.Status().Rejected)
		}
	})

	t.Run("none when the batch does not commit", func(t *testing.T) {
		s, ms := r.device("b", nil, nil)
		// The spool answered an append of this device with the last
		// position, where the log holds another entry: the batch reaching
		// it is refused, whole.
		if err := ms.RecordAppended(ctx, []mailstore.Appended{{ID: command.ID{1, 2, 3}, Pos: last}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SyncOnce(ctx); !errors.Is(err, ErrIntegrity) {
			t.Fatalf("SyncOnce over a dropped append: %v, want an integrity alarm", err)
		}
		if pos, err := ms.Position(ctx); err != nil || pos != first {
			t.Errorf("position %d, %v after a refused batch; want %d", pos, err, first)
		}
		if got := rejected(ms); len(got) != 0 || s.Status().Rejected != 0 {
			t.Errorf("rejected positions %v, status counts %d after a refused batch; want none", got, s.Status().Rejected)
		}
	})
}

// flaky fails every call while down is set.
type flaky struct {
	Source
	mu   sync.Mutex
	down bool
}

func (f *flaky) set(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }
func (f *flaky) isDown() bool  { f.mu.Lock(); defer f.mu.Unlock(); return f.down }

// errDown is what a flaky source answers while down: temporary, as the
// API client's errors for a spool that does not answer are.
var errDown = fmt.Errorf("connection refused: %w", spool.ErrUnavailable)

func (f *flaky) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	if f.isDown() {
		return spool.LogRead{}, errDown
	}
	return f.Source.ReadLog(ctx, after, n, b, min(wait, 200*time.Millisecond))
}

func (f *flaky) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	if f.isDown() {
		return 0, errDown
	}
	return f.Source.Append(ctx, user, batch)
}

func (f *flaky) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	if f.isDown() {
		return 0, errDown
	}
	return f.Source.(HeadSource).AppendAt(ctx, user, head, batch)
}

func TestSpoolDown(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	src := &flaky{Source: StoreSource{Store: r.log, User: "alice"}}
	s, ms := r.device("a", src, nil)
	r.deliver(r.spool, msg(0))
	src.set(true)
	stop := run(t, s)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A change made while the spool cannot be reached waits on the
	// device, shown at once (offline_test.go has the rest).
	outs, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Offline"})
	if err != nil || len(outs) != 1 || outs[0].Status != mailstore.Applied {
		t.Fatalf("submit while down: %+v, %v; want it applied provisionally", outs, err)
	}
	if _, err := ms.MailboxByName(ctx, "Offline"); err != nil {
		t.Fatalf("the change made offline is not shown: %v", err)
	}
	for s.Status().LastError == "" {
		if ctx.Err() != nil {
			t.Fatal("status never showed the failure")
		}
		time.Sleep(10 * time.Millisecond)
	}
	src.set(false)
	if err := s.WaitApplied(ctx, 2); err != nil {
		t.Fatalf("sync did not resume: %v", err)
	}
	if _, err := s.Submit(ctx, &command.Command{Kind: command.CreateMailbox, Mailbox: "Online"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"Offline", "Online"} {
		if _, err := ms.MailboxByName(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if head, _ := r.log.Head(ctx, "alice"); head != 3 || s.Status().Queued != 0 {
		t.Fatalf("head %d with %d queued, want 3 and none", head, s.Status().Queued)
	}
}

// Two devices on one log end in the same state.
func TestTwoDevicesConverge(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, msa := r.device("a", nil, nil)
	b, msb := r.device("b", nil, nil)
	stopA, stopB := run(t, a), run(t, b)
	defer stopA()
	defer stopB()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		r.deliver(r.spool, msg(i))
	}
	if err := a.WaitApplied(ctx, 3); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if _, err := a.Submit(ctx, &command.Command{Kind: command.Move, Mailbox: "Archive", IDs: []command.ID{msgs[0].ID}}); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		if _, err := b.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{"$Work"}, IDs: []command.ID{msgs[0].ID, msgs[1].ID}}); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	head, _ := r.log.Head(ctx, "alice")
	if err := a.WaitApplied(ctx, head); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitApplied(ctx, head); err != nil {
		t.Fatal(err)
	}
	da, err := msa.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := msb.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := mailstore.Diff(da, db, 10); len(d) > 0 {
		t.Fatalf("devices differ: %v", d)
	}
	if da.Checksum() != db.Checksum() {
		t.Fatal("devices' checksums differ")
	}
}
