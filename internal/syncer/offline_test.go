package syncer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
)

// offlineSource is the spool as a device reaches it: it can be switched
// off, when every call fails as a stopped server's would (errDown), and it
// can lose the answers of the next appends (the entries land, the caller
// hears errDown).
type offlineSource struct {
	StoreSource
	mu          sync.Mutex
	down        bool
	loseAnswers int
	maxBatch    int           // larger appends are refused as too large (0: any)
	probes      int           // calls of Health
	slowHealth  time.Duration // Health answers after this long (a server busy with all its devices' return)
}

func (f *offlineSource) set(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func (f *offlineSource) probed() int { f.mu.Lock(); defer f.mu.Unlock(); return f.probes }

func (f *offlineSource) isDown() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.down }

// lost reports whether the answer of an append that landed is lost.
func (f *offlineSource) lost() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.loseAnswers > 0 {
		f.loseAnswers--
		return true
	}
	return false
}

func (f *offlineSource) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	if f.isDown() {
		return spool.LogRead{}, errDown
	}
	return f.StoreSource.ReadLog(ctx, after, n, b, wait)
}

func (f *offlineSource) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	if f.isDown() {
		return 0, errDown
	}
	first, err := f.StoreSource.Append(ctx, user, batch)
	if err == nil && f.lost() {
		return 0, errDown
	}
	return first, err
}

func (f *offlineSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	if f.isDown() {
		return 0, errDown
	}
	f.mu.Lock()
	most := f.maxBatch
	f.mu.Unlock()
	if most > 0 && len(batch) > most {
		return 0, fmt.Errorf("appending %d entries: %w", len(batch), spool.ErrTooLarge)
	}
	first, err := f.StoreSource.AppendAt(ctx, user, head, batch)
	if err == nil && f.lost() {
		return 0, errDown
	}
	return first, err
}

func (f *offlineSource) Health(ctx context.Context) error {
	f.mu.Lock()
	f.probes++
	slow := f.slowHealth
	f.mu.Unlock()
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-ctx.Done():
			return fmt.Errorf("probe: %w", errors.Join(errDown, ctx.Err()))
		}
	}
	if f.isDown() {
		return errDown
	}
	return nil
}

// syncLog is a log handler that keeps what it is given, for tests that
// look for a line.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// offlineDevice opens (or opens again) device name's store and a syncer
// on it that reaches the spool through src. Its backoff after a failure
// starts at backoff: the loop must notice the spool's return by asking it,
// not by waiting that out.
func (r *rig) offlineDevice(name string, src Source, backoff time.Duration, log *syncLog) (*Syncer, *mailstore.Store) {
	r.t.Helper()
	ms, err := mailstore.Open(filepath.Join(r.dir, name+".db"), mimeform.Parser{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { ms.Close() })
	var logger *slog.Logger
	if log != nil {
		logger = slog.New(slog.NewTextHandler(log, nil))
	}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: ms, Logger: logger,
		Wait: 2 * time.Second, MaxBackoff: time.Hour, ProbeInterval: 50 * time.Millisecond,
		Unreachable: func(err error) bool { return errors.Is(err, errDown) }})
	if err != nil {
		r.t.Fatal(err)
	}
	s.firstBackoff = backoff
	return s, ms
}

// waitFor polls cond every 10 ms until it holds or d has passed.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sameDump fails unless both stores hold the same state.
func sameDump(t *testing.T, a, b *mailstore.Store) {
	t.Helper()
	ctx := context.Background()
	da, err := a.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := mailstore.Diff(da, db, 10); len(d) > 0 {
		t.Fatalf("devices differ:\n%s", strings.Join(d, "\n"))
	}
}

// submitOne submits c and requires it applied (provisionally or not).
func submitOne(t *testing.T, s *Syncer, c *command.Command) mailstore.Outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	outs, err := s.Submit(ctx, c)
	if err != nil {
		t.Fatalf("%s: %v", c.Kind, err)
	}
	if len(outs) != 1 || outs[0].Status == mailstore.Rejected {
		t.Fatalf("%s: outcomes %+v, want one applied", c.Kind, outs)
	}
	return outs[0]
}

// converged waits until both syncers have applied the spool's head and a
// has no queued change left, then compares the stores.
func (r *rig) converged(t *testing.T, a, b *Syncer, msa, msb *mailstore.Store) uint64 {
	t.Helper()
	var head uint64
	waitFor(t, 30*time.Second, "both devices at the spool's head with an empty queue", func() bool {
		head, _ = r.log.Head(context.Background(), "alice")
		sa, sb := a.Status(), b.Status()
		return sa.Queued == 0 && sa.Position == head && sb.Position == head
	})
	sameDump(t, msa, msb)
	return head
}

// TestOfflineChangesWait: while the spool cannot be reached, changes are
// queued on the device, shown at once, kept across a restart, and sent in
// order when the spool answers again, though the loop's backoff would
// make it wait an hour; the other device then shows them, and each landed
// once.
func TestOfflineChangesWait(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		r.deliver(r.spool, msg(i))
	}
	log := &syncLog{}
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, msa := r.offlineDevice("a", src, time.Hour, log)
	b, msb := r.device("b", nil, nil)
	stopB := run(t, b)
	defer stopB()
	stopA := run(t, a)
	if err := a.WaitApplied(ctx, 4); err != nil {
		t.Fatal(err)
	}
	submitOne(t, a, &command.Command{Kind: command.CreateMailbox, Mailbox: "Kept"})
	_, msgs := inbox(t, msa)

	src.set(true)
	waitFor(t, 10*time.Second, "the status showing the spool unreachable", func() bool { return a.Status().LastError != "" })
	changes := []*command.Command{
		{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[0].ID}},
		{Kind: command.Move, Mailbox: "Kept", IDs: []command.ID{msgs[1].ID}},
		{Kind: command.Expunge, IDs: []command.ID{msgs[2].ID}},
		{Kind: command.CreateMailbox, Mailbox: "Offline"},
		{Kind: command.Append, Mailbox: "Offline", Date: 1764000000000, Flags: []string{`\Seen`}, Body: []byte("Subject: written offline\r\n\r\nhi\r\n")},
	}
	for _, c := range changes {
		submitOne(t, a, c)
	}
	// Shown at once.
	_, got := inbox(t, msa)
	if len(got) != 2 || got[0].ID != msgs[0].ID || len(got[0].Flags) != 1 || got[0].Flags[0] != `\Flagged` {
		t.Fatalf("INBOX while offline: %d messages (%+v), want 2 with the first flagged", len(got), got)
	}
	if _, err := msa.MailboxByName(ctx, "Offline"); err != nil {
		t.Fatalf("mailbox created offline not shown: %v", err)
	}
	if n := a.Status().Queued; n != len(changes) {
		t.Fatalf("status shows %d queued, want %d", n, len(changes))
	}

	// A restart of the daemon keeps the queue.
	stopA()
	msa.Close()
	a, msa = r.offlineDevice("a", src, time.Hour, log)
	if n := a.Status().Queued; n != len(changes) {
		t.Fatalf("after a restart the status shows %d queued, want %d", n, len(changes))
	}
	stopA = run(t, a)
	defer func() { stopA() }()
	waitFor(t, 10*time.Second, "the status showing the spool unreachable", func() bool { return a.Status().LastError != "" })
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{"$Later"}, IDs: []command.ID{msgs[0].ID}})
	if _, err := b.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[3].ID}}); err != nil {
		t.Fatal(err)
	}

	src.set(false)
	head := r.converged(t, a, b, msa, msb)
	if want := uint64(4 + 1 + len(changes) + 1 + 1); head != want {
		t.Errorf("the log's head is %d, want %d: each change once", head, want)
	}
	_, got = inbox(t, msb)
	if len(got) != 2 || !equal(got[0].Flags, []string{`\Flagged`, "$Later"}) || !equal(got[1].Flags, []string{`\Seen`}) {
		t.Errorf("the other device's INBOX: %+v", got)
	}
	mb, err := msb.MailboxByName(ctx, "Offline")
	if err != nil || mb.Messages != 1 {
		t.Errorf("the other device's Offline: %+v, %v; want one message", mb, err)
	}
	if st := a.Status(); st.Alarm != "" || st.Rejected != 0 {
		t.Errorf("status %+v, want no alarm and nothing rejected", st)
	}
	if !strings.Contains(log.String(), "spool reachable again") {
		t.Errorf("the log does not say the spool is reachable again:\n%s", log)
	}
}

func equal(a, b []string) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestOfflineConflict: another device changes the same messages while this
// one is offline; the log's order decides, and both end the same.
func TestOfflineConflict(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	for i := 0; i < 4; i++ {
		r.deliver(r.spool, msg(i))
	}
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, msa := r.offlineDevice("a", src, 250*time.Millisecond, nil)
	b, msb := r.device("b", nil, nil)
	stopB := run(t, b)
	defer stopB()
	for _, n := range []string{"A", "B"} {
		submitOne(t, b, &command.Command{Kind: command.CreateMailbox, Mailbox: n})
	}
	if _, err := a.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	src.set(true)
	stopA := run(t, a)
	defer stopA()
	waitFor(t, 10*time.Second, "the status showing the spool unreachable", func() bool { return a.Status().LastError != "" })

	// Offline on a.
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[0].ID}})
	submitOne(t, a, &command.Command{Kind: command.Move, Mailbox: "A", IDs: []command.ID{msgs[1].ID}})
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{"$Mine"}, IDs: []command.ID{msgs[2].ID}})
	submitOne(t, a, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[3].ID}})
	submitOne(t, a, &command.Command{Kind: command.CreateMailbox, Mailbox: "Both"})
	// Meanwhile on b, on the same messages.
	submitOne(t, b, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[0].ID}})
	submitOne(t, b, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[1].ID}})
	submitOne(t, b, &command.Command{Kind: command.Move, Mailbox: "B", IDs: []command.ID{msgs[2].ID}})
	submitOne(t, b, &command.Command{Kind: command.SetFlags, Flags: []string{`\Answered`}, IDs: []command.ID{msgs[3].ID}})
	submitOne(t, b, &command.Command{Kind: command.CreateMailbox, Mailbox: "Both"})

	src.set(false)
	r.converged(t, a, b, msa, msb)
	// b's changes came first: a's flag on the expunged message does
	// nothing, its move takes the message b flagged, its keyword follows
	// the message into B, its expunge wins over b's flag, its CREATE of a
	// name b took is refused.
	where := func(id command.ID) (string, []string) {
		for _, n := range []string{"INBOX", "A", "B", "Both"} {
			mb, err := msb.MailboxByName(ctx, n)
			if err != nil {
				t.Fatalf("mailbox %s: %v", n, err)
			}
			var found []string
			ok := false
			err = msb.Scan(ctx, mb.ID, 0, func(m *mailstore.Message) error {
				if m.ID == id {
					found, ok = m.Flags, true
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				return n, found
			}
		}
		return "", nil
	}
	for i, want := range []struct {
		box   string
		flags []string
	}{
		{"", nil},
		{"A", []string{`\Seen`}},
		{"B", []string{"$Mine"}},
		{"", nil},
	} {
		box, flags := where(msgs[i].ID)
		if box != want.box || !equal(flags, want.flags) {
			t.Errorf("message %d: in %q with %v, want in %q with %v", i, box, flags, want.box, want.flags)
		}
	}
}

// TestOfflineLostAnswers: appends whose answers are lost (the entries
// landed, the device heard an error) are neither lost nor applied twice,
// whether Submit made them or the loop sending the queue.
func TestOfflineLostAnswers(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		r.deliver(r.spool, msg(i))
	}
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, msa := r.offlineDevice("a", src, 250*time.Millisecond, nil)
	b, msb := r.device("b", nil, nil)
	stopA, stopB := run(t, a), run(t, b)
	defer stopB()
	defer stopA()
	if err := a.WaitApplied(ctx, 3); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)

	src.mu.Lock()
	src.loseAnswers = 1
	src.mu.Unlock()
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[0].ID}})
	r.converged(t, a, b, msa, msb)

	src.set(true)
	waitFor(t, 10*time.Second, "the status showing the spool unreachable", func() bool { return a.Status().LastError != "" })
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{"$One"}, IDs: []command.ID{msgs[1].ID}})
	submitOne(t, a, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[2].ID}})
	src.mu.Lock()
	src.loseAnswers = 1
	src.down = false
	src.mu.Unlock()
	head := r.converged(t, a, b, msa, msb)
	if head != 6 {
		t.Errorf("the log's head is %d, want 6: each change once", head)
	}
	if st := a.Status(); st.Alarm != "" {
		t.Errorf("alarm %q, want none", st.Alarm)
	}
	_, got := inbox(t, msb)
	if len(got) != 2 || !equal(got[0].Flags, []string{`\Flagged`}) || !equal(got[1].Flags, []string{"$One"}) {
		t.Errorf("the other device's INBOX: %+v", got)
	}
}

// TestSyncOnceSendsQueue: the one-shot sync (cspool sync --once, with the
// daemon stopped) sends the changes queued on the device too.
func TestSyncOnceSendsQueue(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.spool, msg(0))
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, msa := r.offlineDevice("a", src, 250*time.Millisecond, nil)
	if _, err := a.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	src.set(true)
	submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[0].ID}})
	submitOne(t, a, &command.Command{Kind: command.CreateMailbox, Mailbox: "Later"})
	if q := a.Status().Queued; q != 2 {
		t.Fatalf("%d queued, want 2", q)
	}
	src.set(false)
	if _, err := a.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if head, _ := r.log.Head(ctx, "alice"); head != 3 || a.Status().Queued != 0 || a.Status().Position != 3 {
		t.Fatalf("head %d, position %d, %d queued; want 3, 3 and none", head, a.Status().Position, a.Status().Queued)
	}
}

// TestOfflineQueueTooLarge: a spool that refuses the queue's batch as too
// large (HTTP 413) gets it in smaller batches; nothing is lost or doubled.
func TestOfflineQueueTooLarge(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.spool, msg(0))
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}, maxBatch: 2}
	a, msa := r.offlineDevice("a", src, 250*time.Millisecond, nil)
	if _, err := a.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	src.set(true)
	for i := 0; i < 7; i++ {
		submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$K%d", i)}, IDs: []command.ID{msgs[0].ID}})
	}
	src.set(false)
	stop := run(t, a)
	defer stop()
	waitFor(t, 30*time.Second, "the queue sent", func() bool { return a.Status().Queued == 0 && a.Status().Position == 8 })
	if head, _ := r.log.Head(ctx, "alice"); head != 8 {
		t.Fatalf("head %d, want 8: each change once", head)
	}
}

// TestOfflineSentBeforeRestart: the daemon sent its queue and was killed
// before applying it; when it starts again, more entries than one read
// takes follow them in the log. The queue must not be sent again before
// the loop has read them: nothing lands twice.
func TestOfflineSentBeforeRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	r.deliver(r.spool, msg(0))
	src := &offlineSource{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	a, msa := r.offlineDevice("a", src, 250*time.Millisecond, nil)
	if _, err := a.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	src.set(true)
	for i := 0; i < 3; i++ {
		submitOne(t, a, &command.Command{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$K%d", i)}, IDs: []command.ID{msgs[0].ID}})
	}
	// What the killed run sent: the queue, sealed under its ids.
	q, err := msa.Queue(ctx)
	if err != nil || len(q) != 3 {
		t.Fatalf("queue %d, %v", len(q), err)
	}
	var batch [][]byte
	for _, e := range q {
		b, _, err := entry.Seal(e.Cmd, r.user, r.user.Public(), "alice", &entry.Options{ID: e.ID})
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, b)
	}
	if _, err := r.log.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		r.deliver(r.spool, msg(i))
	}
	msa.Close()
	ms, err := mailstore.Open(filepath.Join(r.dir, "a.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	src.set(false)
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: ms,
		BatchCount: 2, Wait: time.Second, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	defer stop()
	waitFor(t, 30*time.Second, "the queue empty at the head", func() bool { return s.Status().Queued == 0 && s.Status().Position == 10 })
	if head, _ := r.log.Head(ctx, "alice"); head != 10 {
		t.Fatalf("head %d, want 10: the queue was sent twice", head)
	}
	if st := s.Status(); st.Alarm != "" {
		t.Fatalf("alarm %q", st.Alarm)
	}
}
