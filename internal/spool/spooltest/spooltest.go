// Package spooltest is the conformance suite for spool.Store implementations.
//
// Every backend runs the same suite from its own tests:
//
//	func TestConformance(t *testing.T) {
//		spooltest.Run(t, func(t *testing.T) spool.Store { ... fresh, empty store ... },
//			spooltest.Options{Reopen: func(t *testing.T, s spool.Store) spool.Store { ... }})
//	}
//
// open must return a fresh, empty store for each call; the suite closes the
// stores it gets (a backend may also close them in t.Cleanup: Close is
// idempotent). Options.Reopen, when set, returns a second, independent handle
// on the same storage as s, opened the way another process would open it; the
// suite uses it to check that appends through one handle are seen, and wake
// waiters, through the other. Without Reopen those subtests are skipped, and
// under CI (the CI environment variable is set) a skip is a failure.
//
// Stores that also implement spool.Compactor get the compaction checks too
// (checkpoint round trip, stale checkpoints, deletion with kept positions and
// holes, reads over holes, positions never reused, invalid arguments,
// concurrent compactions through two handles, and the position
// spool.CheckpointPositioner gives without loading a checkpoint, which a
// Compactor must implement too); for other stores those subtests are
// skipped.
//
// Every store gets the chain checks (spool.Chainer is part of spool.Store):
// every hash equals spool.ChainNext recomputed over the entries appended,
// the zero hash at 0, ErrInvalidArgument beyond the head, a dense and
// correct chain under 8 concurrent writers over two handles, and no hash
// changed or lost by compaction.
//
// Every store gets the spool key checks (spool.KeyKeeper): the key
// recorded and taken again, replaced only while no log exists, refused
// once one does; a handle whose key another replaced appends nothing
// (a temporary *spool.KeyReplacedError) by any of the three appends; and
// appends through one handle racing another handle's new key never leave
// an append of the old key acknowledged or in the log once the new one is
// recorded.
//
// Every store gets the quota checks (spool.Quotas): the usage of appends
// and compactions, AppendWithin refusing past the limit with nothing
// appended and no log created, and exactly the deliveries that fit going
// through when 16 race through two handles.
//
// Every store gets the checks of appends made once (spool.OnceAppender):
// a request appended once and its copies answered with its position,
// whatever the limit; another request under its name refused; no record
// of a request refused for its limit; 8 copies of one request racing
// through two handles among other appends, appended once; an expired
// record dropped by a later append through the other handle.
//
// The suite only uses timing in generous bounds (a wake-up must come within
// WakeTimeout, 5 s by default) and bounds every loop in count.
package spooltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"cspool/internal/spool"
)

// Options tunes the suite. The zero value is valid.
type Options struct {
	// Reopen returns a second handle on the same storage as s, as another
	// process would open it. Nil skips the cross-handle subtests.
	Reopen func(t *testing.T, s spool.Store) spool.Store
	// LargeEntrySize is the size of the entry in the large round trip.
	// Zero means 8 MiB.
	LargeEntrySize int
	// WakeTimeout bounds how long a Wait may take to notice an append.
	// Zero means 5 s.
	WakeTimeout time.Duration
}

type namedTest struct {
	name string
	fn   func(t *testing.T)
}

type suite struct {
	open func(t *testing.T) spool.Store
	opts Options
}

// Run runs the conformance suite against the stores open returns.
func Run(t *testing.T, open func(t *testing.T) spool.Store, opts Options) {
	if opts.LargeEntrySize == 0 {
		opts.LargeEntrySize = 8 << 20
	}
	if opts.WakeTimeout == 0 {
		opts.WakeTimeout = 5 * time.Second
	}
	s := &suite{open: open, opts: opts}
	tests := []namedTest{
		{"RoundTrip", s.testRoundTrip},
		{"DensePositions", s.testDensePositions},
		{"InvalidArguments", s.testInvalidArguments},
		{"ReadLimits", s.testReadLimits},
		{"Head", s.testHead},
		{"Isolation", s.testIsolation},
		{"ReadYourAppend", s.testReadYourAppend},
		{"ConcurrentAppend", s.testConcurrentAppend},
		{"LargeEntry", s.testLargeEntry},
		{"WaitWakesInProcess", s.testWaitWakesInProcess},
		{"WaitAlreadyPast", s.testWaitAlreadyPast},
		{"WaitOtherUser", s.testWaitOtherUser},
		{"WaitCancel", s.testWaitCancel},
		{"WaitClose", s.testWaitClose},
		{"SecondHandle", s.testSecondHandle},
		{"WaitWakesFromSecondHandle", s.testWaitWakesFromSecondHandle},
		{"Closed", s.testClosed},
		{"KeepSpoolKey", s.testKeepSpoolKey},
		{"KeyReplaced", s.testKeyReplaced},
		{"KeyReplacedRace", s.testKeyReplacedRace},
		{"HoldSpoolKey", s.testHoldSpoolKey},
		{"ReplaceSpoolKey", s.testReplaceSpoolKey},
		{"SpoolKeyHistory", s.testSpoolKeyHistory},
		{"SpoolKeyNotTakenBack", s.testSpoolKeyNotTakenBack},
		{"SpoolKeyChain", s.testSpoolKeyChain},
	}
	tests = append(tests, s.compactTests()...)
	tests = append(tests, s.chainTests()...)
	tests = append(tests, s.appendAtTests()...)
	tests = append(tests, s.quotaTests()...)
	tests = append(tests, s.onceTests()...)
	tests = append(tests, s.readerTests()...)
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

// store opens a fresh store and closes it when the test ends.
func (s *suite) store(t *testing.T) spool.Store {
	t.Helper()
	st := s.open(t)
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("closing store: %v", err)
		}
	})
	return st
}

// reopen returns a second handle on st's storage, or skips the test.
func (s *suite) reopen(t *testing.T, st spool.Store) spool.Store {
	t.Helper()
	if s.opts.Reopen == nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the backend gave no Reopen: the cross-handle checks cannot run")
		}
		t.Skip("the backend gave no Reopen")
	}
	other := s.opts.Reopen(t, st)
	t.Cleanup(func() {
		if err := other.Close(); err != nil {
			t.Errorf("closing second handle: %v", err)
		}
	})
	return other
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func mustAppend(t *testing.T, st spool.Store, user string, batch ...[]byte) uint64 {
	t.Helper()
	first, err := st.Append(ctxT(t), user, batch)
	if err != nil {
		t.Fatalf("Append(%q, %d entries): %v", user, len(batch), err)
	}
	return first
}

// readAll reads user's whole log in pages of at most 7 entries.
func readAll(t *testing.T, st spool.Store, user string) []spool.Entry {
	t.Helper()
	var all []spool.Entry
	after := uint64(0)
	for i := 0; i < 1_000_000; i++ {
		es, err := st.Read(ctxT(t), user, after, 7, 1<<30)
		if err != nil {
			t.Fatalf("Read(%q, after %d): %v", user, after, err)
		}
		if len(es) == 0 {
			return all
		}
		all = append(all, es...)
		after = es[len(es)-1].Pos
	}
	t.Fatalf("Read(%q) did not end", user)
	return nil
}

func checkEntries(t *testing.T, got []spool.Entry, wantFirst uint64, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d", len(got), len(want))
	}
	for i, e := range got {
		if e.Pos != wantFirst+uint64(i) {
			t.Errorf("entry %d: position %d, want %d", i, e.Pos, wantFirst+uint64(i))
		}
		if !bytes.Equal(e.Data, want[i]) {
			t.Errorf("entry %d (pos %d): data %q, want %q", i, e.Pos, short(e.Data), short(want[i]))
		}
	}
}

func short(b []byte) string {
	if len(b) > 40 {
		return fmt.Sprintf("%q...(%d bytes)", b[:40], len(b))
	}
	return string(b)
}

func (s *suite) testRoundTrip(t *testing.T) {
	st := s.store(t)
	batch := [][]byte{
		[]byte("hello"),
		{0, 1, 2, 0, 255, 0},
		{},
		[]byte("\x00"),
		bytes.Repeat([]byte{0xff, 0x00}, 5000),
	}
	first := mustAppend(t, st, "alice", batch...)
	if first != 1 {
		t.Fatalf("first append to an empty log: position %d, want 1", first)
	}
	checkEntries(t, readAll(t, st, "alice"), 1, batch)
}

func (s *suite) testDensePositions(t *testing.T) {
	st := s.store(t)
	var want [][]byte
	next := uint64(1)
	for i, n := range []int{3, 1, 2, 5, 1} {
		var batch [][]byte
		for j := 0; j < n; j++ {
			batch = append(batch, fmt.Appendf(nil, "batch %d entry %d", i, j))
		}
		first := mustAppend(t, st, "bob", batch...)
		if first != next {
			t.Errorf("batch %d of %d entries: first %d, want %d", i, n, first, next)
		}
		next += uint64(n)
		want = append(want, batch...)
	}
	checkEntries(t, readAll(t, st, "bob"), 1, want)
}

func (s *suite) testInvalidArguments(t *testing.T) {
	st := s.store(t)
	ctx := ctxT(t)
	if _, err := st.Append(ctx, "u", nil); !errors.Is(err, spool.ErrEmptyBatch) {
		t.Errorf("Append(nil batch): %v, want ErrEmptyBatch", err)
	}
	if _, err := st.Append(ctx, "u", [][]byte{}); !errors.Is(err, spool.ErrEmptyBatch) {
		t.Errorf("Append(empty batch): %v, want ErrEmptyBatch", err)
	}
	if _, err := st.Append(ctx, "", [][]byte{[]byte("x")}); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("Append(empty user): %v, want ErrInvalidUser", err)
	}
	if _, err := st.Read(ctx, "", 0, 1, 1); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("Read(empty user): %v, want ErrInvalidUser", err)
	}
	if _, err := st.Head(ctx, ""); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("Head(empty user): %v, want ErrInvalidUser", err)
	}
	if err := st.Wait(ctx, "", 0); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("Wait(empty user): %v, want ErrInvalidUser", err)
	}
	if _, err := st.Read(ctx, "u", 0, 0, 1); !errors.Is(err, spool.ErrInvalidArgument) {
		t.Errorf("Read(maxCount 0): %v, want ErrInvalidArgument", err)
	}
	if _, err := st.Read(ctx, "u", 0, 1, -1); !errors.Is(err, spool.ErrInvalidArgument) {
		t.Errorf("Read(maxBytes -1): %v, want ErrInvalidArgument", err)
	}
	if h, err := st.Head(ctx, "u"); err != nil || h != 0 {
		t.Errorf("Head after rejected appends: %d, %v; want 0, nil", h, err)
	}
}

func (s *suite) testReadLimits(t *testing.T) {
	st := s.store(t)
	// Sizes of entries 1..8.
	sizes := []int{10, 20, 30, 1000, 5, 5, 5, 0}
	var batch [][]byte
	for i, n := range sizes {
		batch = append(batch, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	mustAppend(t, st, "carol", batch...)
	tests := []struct {
		name     string
		after    uint64
		maxCount int
		maxBytes int64
		want     []uint64
	}{
		{"all", 0, 100, 1 << 20, []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{"count limit", 0, 3, 1 << 20, []uint64{1, 2, 3}},
		{"count one", 2, 1, 1 << 20, []uint64{3}},
		{"bytes exact", 0, 100, 60, []uint64{1, 2, 3}},
		{"bytes just short", 0, 100, 59, []uint64{1, 2}},
		{"bytes zero gives one", 0, 100, 0, []uint64{1}},
		{"one larger than limit", 3, 100, 10, []uint64{4}},
		{"large then stop", 3, 100, 1004, []uint64{4}},
		{"large then one", 3, 100, 1005, []uint64{4, 5}},
		{"empty entry counts zero bytes", 4, 100, 15, []uint64{5, 6, 7, 8}},
		{"after middle", 6, 100, 1 << 20, []uint64{7, 8}},
		{"after head", 8, 100, 1 << 20, nil},
		{"after beyond head", 1000, 100, 1 << 20, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			es, err := st.Read(ctxT(t), "carol", tc.after, tc.maxCount, tc.maxBytes)
			if err != nil {
				t.Fatalf("Read(after %d, count %d, bytes %d): %v", tc.after, tc.maxCount, tc.maxBytes, err)
			}
			var got []uint64
			for _, e := range es {
				got = append(got, e.Pos)
				if !bytes.Equal(e.Data, batch[e.Pos-1]) {
					t.Errorf("entry %d: data %s, want %s", e.Pos, short(e.Data), short(batch[e.Pos-1]))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("Read(after %d, count %d, bytes %d) gave positions %v, want %v",
					tc.after, tc.maxCount, tc.maxBytes, got, tc.want)
			}
		})
	}
}

func (s *suite) testHead(t *testing.T) {
	st := s.store(t)
	ctx := ctxT(t)
	if h, err := st.Head(ctx, "nobody"); err != nil || h != 0 {
		t.Fatalf("Head(unknown user) = %d, %v; want 0, nil", h, err)
	}
	mustAppend(t, st, "dave", []byte("a"), []byte("b"))
	if h, err := st.Head(ctx, "dave"); err != nil || h != 2 {
		t.Fatalf("Head after 2 entries = %d, %v; want 2, nil", h, err)
	}
	mustAppend(t, st, "dave", []byte("c"))
	if h, err := st.Head(ctx, "dave"); err != nil || h != 3 {
		t.Fatalf("Head after 3 entries = %d, %v; want 3, nil", h, err)
	}
	if es, err := st.Read(ctx, "nobody", 0, 10, 1000); err != nil || len(es) != 0 {
		t.Fatalf("Read(unknown user) = %d entries, %v; want none, nil", len(es), err)
	}
}

func (s *suite) testIsolation(t *testing.T) {
	st := s.store(t)
	ctx := ctxT(t)
	mustAppend(t, st, "A", []byte("a1"), []byte("a2"))
	mustAppend(t, st, "B", []byte("b1"))
	mustAppend(t, st, "A", []byte("a3"))
	// Names that differ only in case, by a prefix or by a NUL byte are
	// different users.
	mustAppend(t, st, "a", []byte("lower"))
	mustAppend(t, st, "A\x00", []byte("nul"))
	mustAppend(t, st, "AB", []byte("prefix"))
	checkEntries(t, readAll(t, st, "A"), 1, [][]byte{[]byte("a1"), []byte("a2"), []byte("a3")})
	checkEntries(t, readAll(t, st, "B"), 1, [][]byte{[]byte("b1")})
	checkEntries(t, readAll(t, st, "a"), 1, [][]byte{[]byte("lower")})
	checkEntries(t, readAll(t, st, "A\x00"), 1, [][]byte{[]byte("nul")})
	checkEntries(t, readAll(t, st, "AB"), 1, [][]byte{[]byte("prefix")})
	for user, want := range map[string]uint64{"A": 3, "B": 1, "a": 1, "A\x00": 1, "AB": 1, "C": 0} {
		if h, err := st.Head(ctx, user); err != nil || h != want {
			t.Errorf("Head(%q) = %d, %v; want %d", user, h, err, want)
		}
	}
}

func (s *suite) testReadYourAppend(t *testing.T) {
	st := s.store(t)
	ctx := ctxT(t)
	for i := 0; i < 50; i++ {
		data := fmt.Appendf(nil, "entry %d", i)
		first := mustAppend(t, st, "erin", data)
		es, err := st.Read(ctx, "erin", first-1, 10, 1<<20)
		if err != nil {
			t.Fatalf("Read right after Append: %v", err)
		}
		if len(es) != 1 || es[0].Pos != first || !bytes.Equal(es[0].Data, data) {
			t.Fatalf("Read right after Append at %d: got %d entries, want the one appended", first, len(es))
		}
		if h, err := st.Head(ctx, "erin"); err != nil || h != first {
			t.Fatalf("Head right after Append at %d = %d, %v", first, h, err)
		}
	}
}

func (s *suite) testLargeEntry(t *testing.T) {
	st := s.store(t)
	big := make([]byte, s.opts.LargeEntrySize)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	mustAppend(t, st, "frank", []byte("before"))
	first := mustAppend(t, st, "frank", big, []byte("after"))
	if first != 2 {
		t.Fatalf("large batch at %d, want 2", first)
	}
	es, err := st.Read(ctxT(t), "frank", 1, 10, 1)
	if err != nil {
		t.Fatalf("Read large entry: %v", err)
	}
	if len(es) != 1 || es[0].Pos != 2 || !bytes.Equal(es[0].Data, big) {
		t.Fatalf("Read large entry with a small byte limit: %d entries, want exactly the large one intact", len(es))
	}
	checkEntries(t, readAll(t, st, "frank"), 1, [][]byte{[]byte("before"), big, []byte("after")})
}

func (s *suite) testClosed(t *testing.T) {
	st := s.open(t)
	ctx := ctxT(t)
	mustAppend(t, st, "gina", []byte("x"))
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := st.Append(ctx, "gina", [][]byte{[]byte("y")}); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if _, err := st.Read(ctx, "gina", 0, 1, 1); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("Read after Close: %v, want ErrClosed", err)
	}
	if _, err := st.Head(ctx, "gina"); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("Head after Close: %v, want ErrClosed", err)
	}
	if err := st.Wait(ctx, "gina", 5); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("Wait after Close: %v, want ErrClosed", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
}

func (s *suite) testSecondHandle(t *testing.T) {
	st := s.store(t)
	other := s.reopen(t, st)
	mustAppend(t, st, "hal", []byte("one"))
	first := mustAppend(t, other, "hal", []byte("two"), []byte("three"))
	if first != 2 {
		t.Fatalf("append through the second handle at %d, want 2", first)
	}
	mustAppend(t, st, "hal", []byte("four"))
	want := [][]byte{[]byte("one"), []byte("two"), []byte("three"), []byte("four")}
	checkEntries(t, readAll(t, st, "hal"), 1, want)
	checkEntries(t, readAll(t, other, "hal"), 1, want)
}
