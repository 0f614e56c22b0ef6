package syncer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// gatedSource holds the first conditional append until released, counts
// the append requests and the entries they carried, and refuses as too
// large a request with an entry above maxEntry bytes (0: any size).
type gatedSource struct {
	StoreSource
	maxEntry  int
	failFirst bool // the first append fails as an unreachable spool's (errDown)

	entered chan struct{} // closed when the first append arrives
	release chan struct{} // closed to let it go on

	mu       sync.Mutex
	requests int
	entries  int
	gated    bool
}

func newGatedSource(src StoreSource) *gatedSource {
	return &gatedSource{StoreSource: src, entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gatedSource) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	g.mu.Lock()
	first := !g.gated
	g.gated = true
	g.requests++
	g.mu.Unlock()
	if first {
		close(g.entered)
		select {
		case <-g.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if first && g.failFirst {
		return 0, errDown
	}
	for _, b := range batch {
		if g.maxEntry > 0 && len(b) > g.maxEntry {
			return 0, fmt.Errorf("an entry of %d bytes: %w", len(b), spool.ErrTooLarge)
		}
	}
	pos, err := g.StoreSource.AppendAt(ctx, user, head, batch)
	if err == nil {
		g.mu.Lock()
		g.entries += len(batch)
		g.mu.Unlock()
	}
	return pos, err
}

func (g *gatedSource) counts() (requests, entries int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests, g.entries
}

// waiting is how many submissions wait for the next group.
func (s *Syncer) waiting() int {
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	return len(s.groupWaiting)
}

// submitResult is what one session's Submit returned.
type submitResult struct {
	outs []mailstore.Outcome
	err  error
}

// startDevice delivers n messages, starts device "a" on cfg (its Source
// the test's) until the test ends, and waits until it applied them: the
// syncer, its store, INBOX's messages, and a context of 60 s for the test.
func startDevice(t *testing.T, r *rig, n int, cfg Config) (*Syncer, *mailstore.Store, *mailstore.Mailbox, []*mailstore.Message, context.Context) {
	t.Helper()
	for i := 0; i < n; i++ {
		r.deliver(r.spool, msg(i))
	}
	s, ms := r.deviceWith("a", cfg)
	t.Cleanup(run(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	if err := s.WaitApplied(ctx, uint64(n)); err != nil {
		t.Fatal(err)
	}
	mb, msgs := inbox(t, ms)
	return s, ms, mb, msgs, ctx
}

// TestGroupCommit: changes submitted by many sessions while an append is
// on its way share the next one: one append request to the spool, one
// record and one apply on the device, not one of each per change (the
// counts say so, not the clock). Each session still gets its own outcome,
// in order, once applied; one change refused by the apply (a mailbox that
// exists already) is refused alone; every change is in the store, and on
// another device.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const n = 12
	src := newGatedSource(StoreSource{Store: r.log, User: "alice"})
	s, ms, _, msgs, ctx := startDevice(t, r, n, Config{Source: src})

	// Session i sets keyword $ki on message i; session n-1 sends two
	// changes at once; session n-2 creates INBOX, which the apply refuses.
	cmdsOf := func(i int) []*command.Command {
		switch i {
		case n - 2:
			return []*command.Command{{Kind: command.CreateMailbox, Mailbox: "INBOX"}}
		case n - 1:
			return []*command.Command{
				{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$k%d", i)}, IDs: []command.ID{msgs[i].ID}},
				{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[i].ID}},
			}
		}
		return []*command.Command{{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$k%d", i)}, IDs: []command.ID{msgs[i].ID}}}
	}
	results := make([]submitResult, n)
	var wg sync.WaitGroup
	submit := func(i int) {
		defer wg.Done()
		outs, err := s.Submit(ctx, cmdsOf(i)...)
		results[i] = submitResult{outs, err}
	}
	// Session 0's append is held on its way; the others come meanwhile.
	wg.Add(n)
	go submit(0)
	<-src.entered
	for i := 1; i < n; i++ {
		go submit(i)
	}
	waitFor(t, 30*time.Second, "every other session's change waiting", func() bool { return s.waiting() == n-1 })
	commits := ms.Commits()
	close(src.release)
	wg.Wait()
	changes := n + 1

	requests, entries := src.counts()
	applyCommits := ms.Commits() - commits
	t.Logf("%d changes from %d sessions: %d append requests, %d device commits", changes, n, requests, applyCommits)
	if requests != 2 || entries != changes {
		t.Errorf("%d append requests carried %d entries, want 2 requests (the held one, then the %d others together) carrying %d",
			requests, entries, n-1, changes)
	}
	// The held change alone, then the group: each a record of its
	// positions and at most one apply.
	if applyCommits > 4 || applyCommits >= int64(changes) {
		t.Errorf("%d device commits for %d changes, want at most 4", applyCommits, changes)
	}

	var positions []uint64
	for i, res := range results {
		want := len(cmdsOf(i))
		if res.err != nil || len(res.outs) != want {
			t.Fatalf("session %d: %d outcomes, err %v; want %d", i, len(res.outs), res.err, want)
		}
		for j, o := range res.outs {
			switch {
			case i == n-2:
				if o.Status != mailstore.Rejected || o.Reason != mailstore.ReasonMailboxExists {
					t.Errorf("session %d: outcome %+v, want rejected: the mailbox exists", i, o)
				}
			case o.Status != mailstore.Applied:
				t.Errorf("session %d, change %d: outcome %+v, want applied", i, j, o)
			}
			if j > 0 && o.Pos != res.outs[j-1].Pos+1 {
				t.Errorf("session %d: its changes at positions %d and %d, want them in order, together", i, res.outs[j-1].Pos, o.Pos)
			}
			positions = append(positions, o.Pos)
		}
	}
	slices.Sort(positions)
	if positions = slices.Compact(positions); len(positions) != changes || positions[0] != n+1 || positions[changes-1] != n+uint64(changes) {
		t.Errorf("the changes are at positions %v, want each at its own, %d to %d", positions, n+1, n+changes)
	}

	// Every session's change is in the store, and reaches another device.
	_, msgs = inbox(t, ms)
	for i := 0; i < n; i++ {
		if i == n-2 {
			continue
		}
		if kw := fmt.Sprintf("$k%d", i); !slices.Contains(msgs[i].Flags, kw) {
			t.Errorf("message %d has flags %v, want %s", i, msgs[i].Flags, kw)
		}
	}
	if !slices.Contains(msgs[n-1].Flags, `\Flagged`) {
		t.Errorf("message %d has flags %v, want \\Flagged too", n-1, msgs[n-1].Flags)
	}
	b, msb := r.device("b", nil, nil)
	syncAll(t, b)
	sameState(t, ms, msb)
}

// TestGroupRefusalIsOnesOwn: when the spool refuses a group's request for
// something one member did (an entry too large), the others are sent
// again without it and applied; only that member is told the refusal.
func TestGroupRefusalIsOnesOwn(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const n = 6
	src := newGatedSource(StoreSource{Store: r.log, User: "alice"})
	src.maxEntry = 4096
	s, ms, mb, msgs, ctx := startDevice(t, r, n, Config{Source: src})
	big := &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: mb.ID, Date: 1764000000000,
		Body: []byte("Subject: big\r\n\r\n" + string(make([]byte, 8192)))}
	const bigOne = 3
	results := make([]submitResult, n)
	var wg sync.WaitGroup
	submit := func(i int) {
		defer wg.Done()
		c := &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[i].ID}}
		if i == bigOne {
			c = big
		}
		outs, err := s.Submit(ctx, c)
		results[i] = submitResult{outs, err}
	}
	wg.Add(n)
	go submit(0)
	<-src.entered
	for i := 1; i < n; i++ {
		go submit(i)
	}
	waitFor(t, 30*time.Second, "every other session's change waiting", func() bool { return s.waiting() == n-1 })
	close(src.release)
	wg.Wait()
	for i, res := range results {
		if i == bigOne {
			if !errors.Is(res.err, spool.ErrTooLarge) {
				t.Errorf("session %d (too large): outcomes %+v, err %v; want the spool's refusal", i, res.outs, res.err)
			}
			continue
		}
		if res.err != nil || len(res.outs) != 1 || res.outs[0].Status != mailstore.Applied {
			t.Errorf("session %d: outcomes %+v, err %v; want applied", i, res.outs, res.err)
		}
	}
	_, msgs = inbox(t, ms)
	if len(msgs) != n {
		t.Errorf("INBOX has %d messages, want %d (the large one was refused)", len(msgs), n)
	}
	for i, m := range msgs {
		if i != bigOne && !slices.Contains(m.Flags, `\Seen`) {
			t.Errorf("message %d has flags %v, want \\Seen", i, m.Flags)
		}
	}
	if st := s.Status(); st.Queued != 0 {
		t.Errorf("%d changes queued, want none", st.Queued)
	}
}

// TestGroupQueuedInOrder: a group whose request failed (the spool could
// not be reached) is queued before the next group goes, so the sessions
// that waited meanwhile queue behind it instead of passing it: once the
// spool answers, the first session's change is first in the log, and
// every change lands exactly once. Each session hears its provisional
// outcome.
func TestGroupQueuedInOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const n = 8
	for i := 0; i < n; i++ {
		r.deliver(r.spool, msg(i))
	}
	src := newGatedSource(StoreSource{Store: r.log, User: "alice"})
	src.failFirst = true
	a, msa := r.offlineDevice("a", src, 50*time.Millisecond, nil)
	b, msb := r.device("b", nil, nil)
	stopA, stopB := run(t, a), run(t, b)
	defer stopB()
	defer stopA()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.WaitApplied(ctx, n); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, msa)
	setKeyword := func(i int) *command.Command {
		return &command.Command{Kind: command.SetFlags, Flags: []string{fmt.Sprintf("$k%d", i)}, IDs: []command.ID{msgs[i].ID}}
	}
	results := make([]submitResult, n)
	var wg sync.WaitGroup
	submit := func(i int) {
		defer wg.Done()
		outs, err := a.Submit(ctx, setKeyword(i))
		results[i] = submitResult{outs, err}
	}
	wg.Add(n)
	go submit(0)
	<-src.entered
	for i := 1; i < n; i++ {
		go submit(i)
	}
	waitFor(t, 30*time.Second, "every other session's change waiting", func() bool { return a.waiting() == n-1 })
	close(src.release)
	wg.Wait()
	for i, res := range results {
		if res.err != nil || len(res.outs) != 1 || res.outs[0].Status != mailstore.Applied {
			t.Errorf("session %d: outcomes %+v, err %v; want applied (provisionally)", i, res.outs, res.err)
		}
	}
	head := r.converged(t, a, b, msa, msb)
	if head != 2*n {
		t.Errorf("the log's head is %d, want %d: each change once", head, 2*n)
	}
	if st := a.Status(); st.Alarm != "" {
		t.Errorf("alarm %q, want none", st.Alarm)
	}
	es, err := r.log.Read(ctx, "alice", n, 1, 1<<20)
	if err != nil || len(es) != 1 {
		t.Fatalf("reading position %d: %d entries, %v", n+1, len(es), err)
	}
	o, err := entry.Open(es[0].Data, r.user, "alice", r.user.Public(), r.spool.Public())
	if err != nil {
		t.Fatal(err)
	}
	if o.Cmd.Kind != command.SetFlags || !slices.Equal(o.Cmd.Flags, []string{"$k0"}) {
		t.Errorf("position %d holds %s %v, want the first session's change ($k0): a later group passed the queued one", n+1, o.Cmd.Kind, o.Cmd.Flags)
	}
	_, got := inbox(t, msb)
	for i, m := range got {
		if kw := fmt.Sprintf("$k%d", i); !slices.Contains(m.Flags, kw) {
			t.Errorf("message %d on the other device has flags %v, want %s", i, m.Flags, kw)
		}
	}
}

// TestAppendsPaced: sessions making changes as fast as the device takes
// them do not append faster than Config.AppendRate once the burst is
// spent: the changes made while a group waits for its turn go in it. The
// device appended each group as soon as the one before was answered, and
// with a read after each, a mail client storing flags on 10 sessions spent
// the user key's request budget on the spool in 20 s (429 for minutes
// after). Every change is still applied, each session's in order.
func TestAppendsPaced(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const sessions, each = 8, 25
	src := newGatedSource(StoreSource{Store: r.log, User: "alice"})
	close(src.release)
	const rate, burst = 40, 5
	s, ms, _, msgs, ctx := startDevice(t, r, sessions, Config{Source: src, AppendRate: rate, AppendBurst: burst})
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := 0; i < sessions; i++ {
		wg.Go(func() {
			for j := 0; j < each; j++ {
				kw := fmt.Sprintf("$s%dn%d", i, j)
				outs, err := s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{kw}, IDs: []command.ID{msgs[i].ID}})
				if err == nil && (len(outs) != 1 || outs[0].Status != mailstore.Applied) {
					err = fmt.Errorf("session %d, change %d: outcomes %+v", i, j, outs)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	requests, entries := src.counts()
	t.Logf("%d changes from %d sessions: %d append requests in %v", sessions*each, sessions, requests, elapsed)
	if entries != sessions*each {
		t.Errorf("%d entries appended, want %d", entries, sessions*each)
	}
	// A token bucket allows burst, then rate a second (one more for the
	// token that refills while the first waits).
	if most := burst + 1 + int(rate*elapsed.Seconds()); requests > most {
		t.Errorf("%d append requests in %v, want at most %d (%d a second after a burst of %d)", requests, elapsed, most, rate, burst)
	}
	_, msgs = inbox(t, ms)
	for i := 0; i < sessions; i++ {
		for j := 0; j < each; j++ {
			if kw := fmt.Sprintf("$s%dn%d", i, j); !slices.Contains(msgs[i].Flags, kw) {
				t.Fatalf("message %d lacks %s", i, kw)
			}
		}
	}
}
