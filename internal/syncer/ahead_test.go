package syncer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
	"weak"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
)

// readCounter counts a source's reads; reads never overlap (ahead.go).
type readCounter struct {
	Source
	mu       sync.Mutex
	reads    int
	inFlight int
	overlap  bool
}

func (c *readCounter) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	c.mu.Lock()
	c.reads++
	c.inFlight++
	c.overlap = c.overlap || c.inFlight > 1
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.inFlight--; c.mu.Unlock() }()
	return c.Source.ReadLog(ctx, after, n, b, wait)
}

// subjects lists the INBOX's messages by UID as "UID:Subject".
func subjects(t *testing.T, ms *mailstore.Store) []string {
	t.Helper()
	_, msgs := inbox(t, ms)
	var out []string
	for _, m := range msgs {
		subject, _, _ := strings.Cut(strings.TrimPrefix(string(m.Raw), "Subject: "), "\r\n")
		out = append(out, fmt.Sprintf("%d:%s", m.UID, subject))
	}
	return out
}

// TestReadAheadAppliesInLogOrder syncs, a few entries per read (so every
// read but the last is made ahead, while the batch before it applies), a
// log whose entries take very different times to open (300 KB and 100
// bytes), with entries that do not open and commands whose effect depends
// on coming after the delivery they name: every entry is applied once, in
// log order, and the state is the one the log gives.
func TestReadAheadAppliesInLogOrder(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	var want []string // the messages that stay, in log order
	var junk []uint64
	flagged := map[string]bool{}
	entries := 0
	for i := range 40 {
		c := msg(i)
		if i%3 == 0 {
			c.Body = append(c.Body, big...)
		}
		_, id := r.seal(r.spool, c)
		entries++
		if i%5 == 1 {
			pos, err := r.log.Append(ctx, "alice", [][]byte{[]byte(fmt.Sprintf("junk %d", i))})
			if err != nil {
				t.Fatal(err)
			}
			junk = append(junk, pos)
			entries++
		}
		if i%4 == 2 {
			r.seal(r.user, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}})
			entries++
			flagged[fmt.Sprintf("message %d", i)] = true
		}
		if i%7 == 3 {
			r.seal(r.user, &command.Command{Kind: command.Expunge, IDs: []command.ID{id}})
			entries++
			continue
		}
		want = append(want, fmt.Sprintf("%d:message %d", i+1, i)) // the i-th delivery takes UID i+1
	}

	src := &readCounter{Source: StoreSource{Store: r.log, User: "alice"}}
	var mu sync.Mutex
	var applied []uint64
	s, ms := r.device("a", src, func(res *mailstore.Result) {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range res.Outcomes {
			applied = append(applied, o.Pos)
		}
	})
	s.cfg.BatchCount = 3
	n, err := s.SyncOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	head, _ := r.log.Head(ctx, "alice")
	if n != entries || s.Status().Position != head {
		t.Fatalf("synced %d entries to position %d, want %d to %d", n, s.Status().Position, entries, head)
	}
	// Every position but the entries that did not open, once, in order.
	var wantApplied []uint64
	for p := uint64(1); p <= head; p++ {
		if !slices.Contains(junk, p) {
			wantApplied = append(wantApplied, p)
		}
	}
	if !slices.Equal(applied, wantApplied) {
		t.Fatalf("applied positions %v, want %v", applied, wantApplied)
	}
	if got := subjects(t, ms); !slices.Equal(got, want) {
		t.Fatalf("INBOX by UID:\n%v\nwant\n%v", got, want)
	}
	_, msgs := inbox(t, ms)
	for _, m := range msgs {
		subject, _, _ := strings.Cut(strings.TrimPrefix(string(m.Raw), "Subject: "), "\r\n")
		if got := slices.Contains(m.Flags, `\Flagged`); got != flagged[subject] {
			t.Errorf("%s: \\Flagged is %v, want %v", subject, got, flagged[subject])
		}
	}
	rej, err := ms.Rejected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var rejected []uint64
	for _, x := range rej {
		rejected = append(rejected, x.Pos)
	}
	slices.Sort(rejected)
	if !slices.Equal(rejected, junk) {
		t.Errorf("rejected positions %v, want %v", rejected, junk)
	}
	// One read per batch (the first, of one entry, tells whether there is
	// a checkpoint), none wasted, never two at once.
	if wantReads := 1 + (entries-1+2)/3; src.reads != wantReads || src.overlap {
		t.Errorf("%d reads (two at once: %v), want %d one after the other", src.reads, src.overlap, wantReads)
	}
}

// TestReadAheadStopsAtFailure: an entry k that fails a check (a replay of
// an earlier entry) in a read made ahead stops the sync at k: the entries
// before it are applied exactly once, none after it.
func TestReadAheadStopsAtFailure(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var replayed []byte
	for i := range 10 {
		b, _, err := entry.Seal(msg(i), r.spool, r.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 3 {
			replayed = b
		}
		if _, err := r.log.Append(ctx, "alice", [][]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	k, err := r.log.Append(ctx, "alice", [][]byte{replayed})
	if err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 20; i++ {
		r.seal(r.spool, msg(i))
	}
	s, ms := r.device("a", nil, nil)
	s.cfg.BatchCount = 3
	if _, err := s.SyncOnce(ctx); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("SyncOnce returned %v, want an integrity alarm", err)
	}
	st := s.Status()
	if st.Position != k-1 || st.Applied != int(k-1) || !strings.Contains(st.Alarm, fmt.Sprint(k)) {
		t.Fatalf("stopped at position %d with %d applied, alarm %q; want position %d, %d applied, an alarm at %d",
			st.Position, st.Applied, st.Alarm, k-1, k-1, k)
	}
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("%d:message %d", i+1, i))
	}
	if got := subjects(t, ms); !slices.Equal(got, want) {
		t.Fatalf("INBOX by UID:\n%v\nwant\n%v", got, want)
	}
}

// TestReadAheadStoppedMidway: a loop stopped while a read ahead is under
// way (the daemon shut down after a batch) leaves the store at that batch;
// a new loop on the same database applies the rest, each entry once.
func TestReadAheadStoppedMidway(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const n = 30
	for i := range n {
		r.seal(r.spool, msg(i))
	}
	path := filepath.Join(r.dir, "a.db")
	ms, err := mailstore.Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithTimeout(ctx, time.Minute) // stopped after the third batch, else a failure
	defer stop()
	batches := 0
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: ms, BatchCount: 4, Wait: time.Second, OnApplied: func(*mailstore.Result) {
			if batches++; batches == 3 {
				stop()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(runCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if p := s.Status().Position; p != 9 {
		t.Fatalf("stopped at position %d, want 9 (a first read of one entry, then two of 4)", p)
	}
	if err := ms.Close(); err != nil {
		t.Fatal(err)
	}
	ms, err = mailstore.Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	s, err = New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: StoreSource{Store: r.log, User: "alice"},
		Store: ms, BatchCount: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("%d:message %d", i+1, i))
	}
	if got := subjects(t, ms); !slices.Equal(got, want) {
		t.Fatalf("INBOX by UID:\n%v\nwant\n%v", got, want)
	}
}

// weakSource hands out fresh copies of the entries it reads and keeps a
// weak pointer to each, to tell when the loop has let them go.
type weakSource struct {
	Source
	mu    sync.Mutex
	bytes map[uint64]weak.Pointer[byte]
}

func (w *weakSource) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	lr, err := w.Source.ReadLog(ctx, after, n, b, wait)
	if err != nil {
		return lr, err
	}
	lr.Entries = slices.Clone(lr.Entries)
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, e := range lr.Entries {
		lr.Entries[i].Data = bytes.Clone(e.Data)
		w.bytes[e.Pos] = weak.Make(&lr.Entries[i].Data[0])
	}
	return lr, nil
}

// TestSealedBytesReleased: once a batch's entries are opened, the bytes
// read from the spool are not kept while the batch applies (the opened
// commands and their hashes are all the loop needs), whether the batch was
// read ahead or not. (The bytes of an entry that did not open are kept:
// a misdelivered one is stored.)
func TestSealedBytesReleased(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var junk uint64
	for i := range 12 {
		r.seal(r.spool, msg(i))
		if i == 7 {
			pos, err := r.log.Append(ctx, "alice", [][]byte{[]byte("junk")})
			if err != nil {
				t.Fatal(err)
			}
			junk = pos
		}
	}
	src := &weakSource{Source: StoreSource{Store: r.log, User: "alice"}, bytes: map[uint64]weak.Pointer[byte]{}}
	var mu sync.Mutex
	var kept []uint64 // positions applied whose bytes were still reachable
	var batches int
	s, _ := r.device("a", src, func(res *mailstore.Result) {
		runtime.GC()
		mu.Lock()
		defer mu.Unlock()
		src.mu.Lock()
		defer src.mu.Unlock()
		batches++
		for _, o := range res.Outcomes {
			if p, ok := src.bytes[o.Pos]; ok && p.Value() != nil {
				kept = append(kept, o.Pos)
			}
		}
	})
	s.cfg.BatchCount = 4
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if batches < 3 {
		t.Fatalf("%d batches applied, want several (some read ahead)", batches)
	}
	if len(kept) > 0 {
		t.Errorf("the bytes of entries %v were still reachable while their batch applied", kept)
	}
	if rej := s.Status().Rejected; rej != 1 {
		t.Errorf("%d entries rejected, want 1 (position %d)", rej, junk)
	}
}

// intoSource is an IntoSource over a Source, reading as api.Client does:
// each entry's bytes copied into the buffer's spare capacity while it
// fits. It notes the buffer each read was given, and the positions each
// read returned.
type intoSource struct {
	Source
	mu    sync.Mutex
	bufs  []*byte // the start of each read's buffer
	reads [][]uint64
}

func (s *intoSource) ReadLogInto(ctx context.Context, after uint64, n int, b int64, wait time.Duration, buf []byte) (spool.LogRead, error) {
	lr, err := s.Source.ReadLog(ctx, after, n, b, wait)
	if err != nil {
		return lr, err
	}
	arena := buf[len(buf):]
	entries := make([]spool.Entry, len(lr.Entries))
	var read []uint64
	for i, e := range lr.Entries {
		entries[i] = spool.Entry{Pos: e.Pos, Data: slices.Clone(e.Data)}
		if len(e.Data) <= cap(arena)-len(arena) {
			start := len(arena)
			arena = append(arena, e.Data...)
			entries[i].Data = arena[start:len(arena):len(arena)]
		}
		read = append(read, e.Pos)
	}
	lr.Entries = entries
	s.mu.Lock()
	s.bufs = append(s.bufs, unsafe.SliceData(buf[:cap(buf)]))
	s.reads = append(s.reads, read)
	s.mu.Unlock()
	return lr, nil
}

// TestReadAheadReusesBuffer: reads made ahead from an IntoSource are given
// the buffer of the read before them once its entries opened, so a sync
// of many batches reads into one buffer; a read with an entry that did
// not open keeps its bytes, and its buffer is given to no later read; the
// state is the log's.
func TestReadAheadReusesBuffer(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var want []string
	junk := uint64(0)
	for i := range 30 {
		r.seal(r.spool, msg(i))
		want = append(want, fmt.Sprintf("%d:message %d", i+1, i))
		if i == 14 {
			var err error
			if junk, err = r.log.Append(ctx, "alice", [][]byte{[]byte("junk")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	src := &intoSource{Source: StoreSource{Store: r.log, User: "alice"}}
	s, ms := r.device("a", src, nil)
	s.cfg.BatchCount = 3
	s.cfg.BatchBytes = 64 << 10
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, ms); !slices.Equal(got, want) {
		t.Fatalf("INBOX by UID:\n%v\nwant\n%v", got, want)
	}
	if len(src.bufs) < 5 {
		t.Fatalf("%d reads into a buffer, want every read after the first two (%v)", len(src.bufs), src.reads)
	}
	reused := 0
	for i := 1; i < len(src.bufs); i++ {
		if slices.Contains(src.bufs[:i], src.bufs[i]) {
			reused++
		}
		if slices.Contains(src.reads[i-1], junk) && slices.Contains(src.bufs[i:], src.bufs[i-1]) {
			t.Errorf("the buffer of read %v, which holds entry %d that did not open, was given again", src.reads[i-1], junk)
		}
	}
	if reused < len(src.bufs)-3 {
		t.Errorf("%d of %d reads were given a buffer read into before, want all but the first and the one after the entry that did not open (%v)", reused, len(src.bufs), src.reads)
	}
	rej, err := ms.Rejected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].Pos != junk {
		t.Errorf("rejected %v, want position %d", rej, junk)
	}
}

// eachSource is an EachSource over an intoSource. After handing over the
// first entry of a read of several, it waits until the loop has opened
// one of them (prepared signals Store.Prepare) before it hands over the
// rest and ends the read, and counts the reads whose entries were opened
// while they were being read (with prepared nil, it hands them over
// without waiting).
type eachSource struct {
	*intoSource
	prepared   chan struct{}
	overlapped int
	eachReads  int // of several entries
}

func (s *eachSource) ReadLogEach(ctx context.Context, after uint64, n int, b int64, wait time.Duration, buf []byte, each func(int, spool.Entry)) (spool.LogRead, error) {
	lr, err := s.ReadLogInto(ctx, after, n, b, wait, buf)
	if err != nil {
		return lr, err
	}
	if len(lr.Entries) > 1 {
		s.eachReads++
	}
	for len(s.prepared) > 0 {
		<-s.prepared
	}
	for i, e := range lr.Entries {
		each(i, e)
		if i == 0 && len(lr.Entries) > 1 && s.prepared != nil {
			select {
			case <-s.prepared:
				s.overlapped++
			case <-ctx.Done():
				return spool.LogRead{}, ctx.Err()
			case <-time.After(time.Minute):
				// Not opened while read: the test fails below.
			}
		}
	}
	return lr, nil
}

// preparing is a Store whose Prepare says when it was called.
type preparing struct {
	Store
	prepared chan struct{}
}

func (p preparing) Prepare(c *command.Command) *mailstore.Prepared {
	select {
	case p.prepared <- struct{}{}:
	default:
	}
	return p.Store.Prepare(c)
}

// TestReadAheadOpensAsRead: a read made ahead from an EachSource has its
// first entries opened before the read ends, and the state is the log's,
// an entry that does not open rejected.
func TestReadAheadOpensAsRead(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var want []string
	junk := uint64(0)
	for i := range 30 {
		r.seal(r.spool, msg(i))
		want = append(want, fmt.Sprintf("%d:message %d", i+1, i))
		if i == 14 {
			var err error
			if junk, err = r.log.Append(ctx, "alice", [][]byte{[]byte("junk")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	prepared := make(chan struct{}, 1)
	src := &eachSource{intoSource: &intoSource{Source: StoreSource{Store: r.log, User: "alice"}}, prepared: prepared}
	s, ms := r.device("a", src, nil)
	s.cfg.Store = preparing{Store: ms, prepared: prepared}
	s.cfg.BatchCount = 4
	s.cfg.BatchBytes = 64 << 10
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := subjects(t, ms); !slices.Equal(got, want) {
		t.Fatalf("INBOX by UID:\n%v\nwant\n%v", got, want)
	}
	if src.eachReads < 5 || src.overlapped != src.eachReads {
		t.Errorf("%d reads ahead handed their entries over as read, %d of them opened while read; want every read of several after the first two (at least 5), all of them", src.eachReads, src.overlapped)
	}
	rej, err := ms.Rejected(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(rej) != 1 || rej[0].Pos != junk {
		t.Errorf("rejected %v, want position %d", rej, junk)
	}
}

// TestReleasedPlaintextsKeepBodies: the plaintexts of a read's deliveries
// are given back once its batch is applied (releaseDelivered) and the
// reads made ahead open into them; every message stored is still the one
// delivered, byte for byte, over many batches of bodies of many sizes.
func TestReleasedPlaintextsKeepBodies(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var bodies [][]byte
	for i := range 90 {
		c := msg(i)
		c.Body = append(c.Body, bytes.Repeat([]byte{'a' + byte(i%26)}, (i*977)%20000)...)
		bodies = append(bodies, c.Body)
		r.seal(r.spool, c)
	}
	s, ms := r.device("a", StoreSource{Store: r.log, User: "alice"}, nil)
	s.cfg.BatchCount = 7
	if n, err := s.SyncOnce(ctx); err != nil || n != len(bodies) {
		t.Fatalf("synced %d entries, %v; want %d", n, err, len(bodies))
	}
	_, msgs := inbox(t, ms)
	if len(msgs) != len(bodies) {
		t.Fatalf("%d messages, want %d", len(msgs), len(bodies))
	}
	for i, m := range msgs {
		if !bytes.Equal(m.Raw, bodies[i]) {
			t.Fatalf("message %d (UID %d) is not the one delivered", i, m.UID)
		}
	}
}

// TestBatchesOpenAsAlone: entries opened in batches (openAll, and readOpen
// as a read arrives) come out as each opened alone (openOne), at their own
// index, whatever fails among them: a read of 200 with entries of an
// unknown author, sealed to another key and not entries at all scattered
// through it, so that batches of sigBatch hold good and refused ones.
func TestBatchesOpenAsAlone(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	var entries []spool.Entry
	for i := range 200 {
		c, author, to := msg(i), r.spool, r.user.Public()
		switch {
		case i%37 == 5:
			author = r.evil // unknown author
		case i%53 == 7:
			to = r.evil.Public() // sealed to another key
		}
		b, _, err := entry.Seal(c, author, to, "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if i%71 == 70 {
			b = []byte("not an entry")
		}
		pos, err := r.log.Append(ctx, "alice", [][]byte{b})
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, spool.Entry{Pos: pos, Data: b})
	}
	src := &eachSource{intoSource: &intoSource{Source: StoreSource{Store: r.log, User: "alice"}}}
	s, _ := r.device("a", src, nil)
	s.cfg.BatchCount = len(entries)
	s.cfg.BatchBytes = 64 << 20
	same := func(how string, got []opened) {
		t.Helper()
		if len(got) != len(entries) {
			t.Fatalf("%s: %d opened, want %d", how, len(got), len(entries))
		}
		refused := 0
		for i, e := range entries {
			want := s.openOne(e.Data)
			g := got[i]
			if fmt.Sprint(g.err) != fmt.Sprint(want.err) || g.leaf != want.leaf || (g.o == nil) != (want.o == nil) || (g.prep == nil) != (want.prep == nil) {
				t.Fatalf("%s: entry %d: got (%v, opened %t, prepared %t), alone (%v, opened %t, prepared %t)", how, i, g.err, g.o != nil, g.prep != nil, want.err, want.o != nil, want.prep != nil)
			}
			if g.o != nil && (g.o.ID != want.o.ID || !bytes.Equal(g.o.Cmd.Body, want.o.Cmd.Body)) {
				t.Fatalf("%s: entry %d opened as another entry", how, i)
			}
			if g.err != nil {
				refused++
			}
		}
		if refused < 10 {
			t.Fatalf("%s: %d refused: the read should hold at least 10 entries that do not open", how, refused)
		}
	}
	same("openAll", s.openAll(entries))
	lr, got, err := s.readOpen(ctx, src, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.Entries) != len(entries) {
		t.Fatalf("readOpen read %d entries, want %d", len(lr.Entries), len(entries))
	}
	same("readOpen", got)
}
