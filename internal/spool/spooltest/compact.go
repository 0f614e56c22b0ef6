package spooltest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"cspool/internal/spool"
)

// compactTests are the checks of the spool.Compactor capability. They run
// only against stores that implement it.
func (s *suite) compactTests() []namedTest {
	return []namedTest{
		{"CheckpointRoundTrip", s.testCheckpointRoundTrip},
		{"StaleCheckpoint", s.testStaleCheckpoint},
		{"CompactDeletes", s.testCompactDeletes},
		{"CompactReadLimits", s.testCompactReadLimits},
		{"CompactAtHead", s.testCompactAtHead},
		{"CompactInvalid", s.testCompactInvalid},
		{"CompactConcurrent", s.testCompactConcurrent},
		{"CompactAppendCompact", s.testCompactAppendCompact},
		{"CheckpointPos", s.testCheckpointPos},
	}
}

// compactor opens a fresh store and returns it as a Compactor, or skips.
func (s *suite) compactor(t *testing.T) (spool.Store, spool.Compactor) {
	t.Helper()
	st := s.store(t)
	c, ok := st.(spool.Compactor)
	if !ok {
		t.Skip("the store does not implement spool.Compactor")
	}
	return st, c
}

// numbered appends n entries "<user> <pos>" one batch at a time and returns
// their data by position (index 0 unused).
func numbered(t *testing.T, st spool.Store, user string, n int) [][]byte {
	t.Helper()
	data := numberedData(user, n)
	if first := mustAppend(t, st, user, data[1:]...); first != 1 {
		t.Fatalf("numbered entries of %q start at %d, want 1", user, first)
	}
	return data
}

// checkPositions reads user's whole log and checks that it holds exactly
// the positions want, each with its original data.
func checkPositions(t *testing.T, st spool.Store, user string, data [][]byte, want []uint64) {
	t.Helper()
	got := readAll(t, st, user)
	var pos []uint64
	for _, e := range got {
		pos = append(pos, e.Pos)
		if e.Pos < uint64(len(data)) && !bytes.Equal(e.Data, data[e.Pos]) {
			t.Errorf("%s: entry %d holds %s, want %s", user, e.Pos, short(e.Data), short(data[e.Pos]))
		}
	}
	if fmt.Sprint(pos) != fmt.Sprint(want) {
		t.Errorf("%s: positions %v, want %v", user, pos, want)
	}
}

func span(from, to uint64) []uint64 {
	var ps []uint64
	for p := from; p <= to; p++ {
		ps = append(ps, p)
	}
	return ps
}

func mustCompact(t *testing.T, c spool.Compactor, user string, cp spool.Checkpoint, keep []uint64) spool.CompactStats {
	t.Helper()
	st, err := c.Compact(ctxT(t), user, cp, keep)
	if err != nil {
		t.Fatalf("Compact(%q, pos %d, keep %v): %v", user, cp.Pos, keep, err)
	}
	return st
}

func checkCheckpoint(t *testing.T, c spool.Compactor, user string, want spool.Checkpoint) {
	t.Helper()
	got, err := c.LatestCheckpoint(ctxT(t), user)
	if err != nil {
		t.Fatalf("LatestCheckpoint(%q): %v, want the checkpoint at %d", user, err, want.Pos)
	}
	if got.Pos != want.Pos || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("LatestCheckpoint(%q) = pos %d data %s, want pos %d data %s", user, got.Pos, short(got.Data), want.Pos, short(want.Data))
	}
}

func (s *suite) testCheckpointRoundTrip(t *testing.T) {
	st, c := s.compactor(t)
	ctx := ctxT(t)
	if _, err := c.LatestCheckpoint(ctx, "ann"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Fatalf("LatestCheckpoint of an unknown user: %v, want ErrNoCheckpoint", err)
	}
	numbered(t, st, "ann", 3)
	numbered(t, st, "ann2", 3)
	if _, err := c.LatestCheckpoint(ctx, "ann"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Fatalf("LatestCheckpoint before any Compact: %v, want ErrNoCheckpoint", err)
	}
	big := make([]byte, s.opts.LargeEntrySize)
	for i := range big {
		big[i] = byte(i * 13)
	}
	for i, data := range [][]byte{{0, 1, 0, 0xff}, {}, big} {
		cp := spool.Checkpoint{Pos: uint64(i + 1), Data: data}
		mustCompact(t, c, "ann", cp, nil)
		checkCheckpoint(t, c, "ann", cp)
	}
	if _, err := c.LatestCheckpoint(ctx, "ann2"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Errorf("LatestCheckpoint of another user: %v, want ErrNoCheckpoint", err)
	}
	if _, err := c.LatestCheckpoint(ctx, ""); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("LatestCheckpoint(empty user): %v, want ErrInvalidUser", err)
	}
	if s.opts.Reopen != nil {
		other := s.reopen(t, st)
		oc, ok := other.(spool.Compactor)
		if !ok {
			t.Fatal("the second handle does not implement spool.Compactor")
		}
		checkCheckpoint(t, oc, "ann", spool.Checkpoint{Pos: 3, Data: big})
	}
}

func (s *suite) testStaleCheckpoint(t *testing.T) {
	st, c := s.compactor(t)
	data := numbered(t, st, "bea", 10)
	good := spool.Checkpoint{Pos: 6, Data: []byte("six")}
	mustCompact(t, c, "bea", good, []uint64{2, 3})
	for _, pos := range []uint64{6, 5, 1} {
		_, err := c.Compact(ctxT(t), "bea", spool.Checkpoint{Pos: pos, Data: []byte("stale")}, nil)
		if !errors.Is(err, spool.ErrStaleCheckpoint) {
			t.Errorf("Compact at %d after one at 6: %v, want ErrStaleCheckpoint", pos, err)
		}
	}
	checkCheckpoint(t, c, "bea", good)
	// The refused calls deleted nothing: 2 and 3 are still kept.
	checkPositions(t, st, "bea", data, []uint64{2, 3, 7, 8, 9, 10})
}

func (s *suite) testCompactDeletes(t *testing.T) {
	st, c := s.compactor(t)
	data := numbered(t, st, "cid", 10)
	other := numbered(t, st, "cid-other", 10)
	// keep out of order, with a duplicate: a set of positions.
	stats := mustCompact(t, c, "cid", spool.Checkpoint{Pos: 6, Data: []byte("cp")}, []uint64{4, 2, 4})
	wantBytes := int64(0)
	for _, p := range []int{1, 3, 5, 6} {
		wantBytes += int64(len(data[p]))
	}
	if want := (spool.CompactStats{Deleted: 4, Bytes: wantBytes, Kept: 2}); stats != want {
		t.Errorf("Compact stats %+v, want %+v", stats, want)
	}
	checkPositions(t, st, "cid", data, []uint64{2, 4, 7, 8, 9, 10})
	checkPositions(t, st, "cid-other", other, span(1, 10))
	if h, err := st.Head(ctxT(t), "cid"); err != nil || h != 10 {
		t.Errorf("Head after Compact = %d, %v; want 10", h, err)
	}
	// A kept position that is already a hole is ignored.
	stats = mustCompact(t, c, "cid", spool.Checkpoint{Pos: 8, Data: []byte("cp2")}, []uint64{3, 4, 7})
	if want := (spool.CompactStats{Deleted: 2, Bytes: int64(len(data[2]) + len(data[8])), Kept: 2}); stats != want {
		t.Errorf("second Compact stats %+v, want %+v", stats, want)
	}
	checkPositions(t, st, "cid", data, []uint64{4, 7, 9, 10})
	if first := mustAppend(t, st, "cid", []byte("eleven")); first != 11 {
		t.Errorf("append after compaction at %d, want 11", first)
	}
}

func (s *suite) testCompactReadLimits(t *testing.T) {
	st, c := s.compactor(t)
	data := numbered(t, st, "dot", 12)
	mustCompact(t, c, "dot", spool.Checkpoint{Pos: 9, Data: []byte("cp")}, []uint64{3, 5, 8})
	tests := []struct {
		after    uint64
		maxCount int
		maxBytes int64
		want     []uint64
	}{
		{0, 1, 1 << 20, []uint64{3}},
		{3, 1, 1 << 20, []uint64{5}},
		{0, 2, 1 << 20, []uint64{3, 5}},
		{5, 2, 1 << 20, []uint64{8, 10}},
		{0, 100, 0, []uint64{3}},
		{6, 100, int64(len(data[8]) + len(data[10])), []uint64{8, 10}},
		{8, 100, 1 << 20, []uint64{10, 11, 12}},
		{12, 100, 1 << 20, nil},
	}
	for _, tc := range tests {
		es, err := st.Read(ctxT(t), "dot", tc.after, tc.maxCount, tc.maxBytes)
		if err != nil {
			t.Fatalf("Read(after %d): %v", tc.after, err)
		}
		var got []uint64
		for _, e := range es {
			got = append(got, e.Pos)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Read(after %d, count %d, bytes %d) over holes = %v, want %v", tc.after, tc.maxCount, tc.maxBytes, got, tc.want)
		}
	}
}

func (s *suite) testCompactAtHead(t *testing.T) {
	st, c := s.compactor(t)
	data := numbered(t, st, "eve", 5)
	stats := mustCompact(t, c, "eve", spool.Checkpoint{Pos: 5, Data: []byte("all")}, nil)
	if stats.Deleted != 5 || stats.Kept != 0 {
		t.Errorf("Compact at the head: %+v, want 5 deleted, 0 kept", stats)
	}
	checkPositions(t, st, "eve", data, nil)
	if h, err := st.Head(ctxT(t), "eve"); err != nil || h != 5 {
		t.Fatalf("Head after deleting every entry = %d, %v; want 5", h, err)
	}
	if first := mustAppend(t, st, "eve", []byte("six")); first != 6 {
		t.Fatalf("append after deleting every entry at %d, want 6 (positions are never reused)", first)
	}
	es, err := st.Read(ctxT(t), "eve", 0, 10, 1<<20)
	if err != nil || len(es) != 1 || es[0].Pos != 6 || string(es[0].Data) != "six" {
		t.Fatalf("Read after the append = %d entries, %v; want entry 6 alone", len(es), err)
	}
}

func (s *suite) testCompactInvalid(t *testing.T) {
	st, c := s.compactor(t)
	data := numbered(t, st, "fay", 5)
	tests := []struct {
		name string
		user string
		pos  uint64
		keep []uint64
		want error
	}{
		{"position zero", "fay", 0, nil, spool.ErrInvalidArgument},
		{"beyond head", "fay", 6, nil, spool.ErrInvalidArgument},
		{"far beyond head", "fay", 1 << 63, nil, spool.ErrInvalidArgument},
		{"largest position", "fay", ^uint64(0), nil, spool.ErrInvalidArgument},
		{"keep beyond checkpoint", "fay", 3, []uint64{1, 4}, spool.ErrInvalidArgument},
		{"unknown user", "nobody", 1, nil, spool.ErrInvalidArgument},
		{"empty user", "", 1, nil, spool.ErrInvalidUser},
	}
	for _, tc := range tests {
		_, err := c.Compact(ctxT(t), tc.user, spool.Checkpoint{Pos: tc.pos, Data: []byte("x")}, tc.keep)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Compact(%q, pos %d, keep %v): %v, want %v", tc.name, tc.user, tc.pos, tc.keep, err, tc.want)
		}
	}
	if _, err := c.LatestCheckpoint(ctxT(t), "fay"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Errorf("LatestCheckpoint after refused Compacts: %v, want ErrNoCheckpoint", err)
	}
	checkPositions(t, st, "fay", data, span(1, 5))
}

// testCompactConcurrent races two Compacts at the same position through two
// handles, several rounds: exactly one wins each round, the other gets
// ErrStaleCheckpoint, and the stored checkpoint is the winner's.
func (s *suite) testCompactConcurrent(t *testing.T) {
	st, _ := s.compactor(t)
	other := s.reopen(t, st)
	handles := []spool.Compactor{st.(spool.Compactor), other.(spool.Compactor)}
	data := numbered(t, st, "gil", 40)
	for round := 1; round <= 8; round++ {
		pos := uint64(round * 5)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, h := range handles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cp := spool.Checkpoint{Pos: pos, Data: fmt.Appendf(nil, "round %d handle %d", round, i)}
				_, errs[i] = h.Compact(ctxT(t), "gil", cp, []uint64{1})
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Fatalf("round %d: both Compacts at %d succeeded", round, pos)
			case !errors.Is(err, spool.ErrStaleCheckpoint):
				t.Fatalf("round %d: Compact at %d through handle %d: %v, want nil or ErrStaleCheckpoint", round, pos, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no Compact at %d succeeded: %v", round, pos, errs)
		}
		want := spool.Checkpoint{Pos: pos, Data: fmt.Appendf(nil, "round %d handle %d", round, winner)}
		checkCheckpoint(t, handles[0], "gil", want)
		checkCheckpoint(t, handles[1], "gil", want)
		checkPositions(t, other, "gil", data, append([]uint64{1}, span(pos+1, 40)...))
	}
}

// testCompactAppendCompact interleaves appends and compactions, with one
// entry kept across both.
func (s *suite) testCompactAppendCompact(t *testing.T) {
	st, c := s.compactor(t)
	data := numbered(t, st, "hal", 6)
	mustCompact(t, c, "hal", spool.Checkpoint{Pos: 4, Data: []byte("four")}, []uint64{2})
	for p := 7; p <= 10; p++ {
		d := fmt.Appendf(nil, "hal %d", p)
		if first := mustAppend(t, st, "hal", d); first != uint64(p) {
			t.Fatalf("append after compaction at %d, want %d", first, p)
		}
		data = append(data, d)
	}
	checkPositions(t, st, "hal", data, []uint64{2, 5, 6, 7, 8, 9, 10})
	stats := mustCompact(t, c, "hal", spool.Checkpoint{Pos: 9, Data: []byte("nine")}, []uint64{2, 7})
	if want := (spool.CompactStats{Deleted: 4, Bytes: int64(len(data[5]) + len(data[6]) + len(data[8]) + len(data[9])), Kept: 2}); stats != want {
		t.Errorf("second Compact stats %+v, want %+v", stats, want)
	}
	checkCheckpoint(t, c, "hal", spool.Checkpoint{Pos: 9, Data: []byte("nine")})
	checkPositions(t, st, "hal", data, []uint64{2, 7, 10})
	if h, err := st.Head(ctxT(t), "hal"); err != nil || h != 10 {
		t.Errorf("Head = %d, %v; want 10", h, err)
	}
}

// testCheckpointPos checks spool.CheckpointPositioner and
// spool.CheckpointSizer against LatestCheckpoint: 0 without a checkpoint,
// the newest position and its size after each Compact (a refused one
// changes nothing), per user, and on a second handle. Every Compactor
// must have them: without the first each read of the HTTP API, long-polls
// included, loads the whole checkpoint; without the second a download's
// bytes are taken from the server's budget only once loaded.
func (s *suite) testCheckpointPos(t *testing.T) {
	st, c := s.compactor(t)
	p, ok := st.(spool.CheckpointPositioner)
	if !ok {
		t.Fatal("the store compacts but does not implement spool.CheckpointPositioner: every read would load the whole checkpoint")
	}
	handles := []spool.CheckpointPositioner{p}
	if s.opts.Reopen != nil {
		other, ok := s.reopen(t, st).(spool.CheckpointPositioner)
		if !ok {
			t.Fatal("the second handle does not implement spool.CheckpointPositioner")
		}
		handles = append(handles, other)
	}
	check := func(user string, want uint64) {
		t.Helper()
		for i, h := range handles {
			got, err := h.CheckpointPos(ctxT(t), user)
			if err != nil || got != want {
				t.Fatalf("handle %d: CheckpointPos(%q) = %d, %v; want %d", i, user, got, err, want)
			}
		}
		cp, err := c.LatestCheckpoint(ctxT(t), user)
		sz, ok := st.(spool.CheckpointSizer)
		if !ok {
			t.Fatal("the store compacts but does not implement spool.CheckpointSizer")
		}
		if n, serr := sz.CheckpointSize(ctxT(t), user); serr != nil || n != int64(len(cp.Data)) {
			t.Fatalf("CheckpointSize(%q) = %d, %v; LatestCheckpoint holds %d bytes", user, n, serr, len(cp.Data))
		}
		switch {
		case want == 0 && !errors.Is(err, spool.ErrNoCheckpoint):
			t.Fatalf("LatestCheckpoint(%q) = pos %d, %v; CheckpointPos says none", user, cp.Pos, err)
		case want != 0 && (err != nil || cp.Pos != want):
			t.Fatalf("LatestCheckpoint(%q) = pos %d, %v; CheckpointPos says %d", user, cp.Pos, err, want)
		}
	}
	check("ida", 0) // unknown user
	numbered(t, st, "ida", 8)
	numbered(t, st, "ida-other", 8)
	check("ida", 0) // a log without a checkpoint
	big := make([]byte, s.opts.LargeEntrySize)
	mustCompact(t, c, "ida", spool.Checkpoint{Pos: 3, Data: big}, []uint64{1})
	check("ida", 3)
	check("ida-other", 0)
	if _, err := c.Compact(ctxT(t), "ida", spool.Checkpoint{Pos: 2, Data: []byte("stale")}, nil); !errors.Is(err, spool.ErrStaleCheckpoint) {
		t.Fatalf("Compact at 2 after 3: %v, want ErrStaleCheckpoint", err)
	}
	check("ida", 3)
	mustCompact(t, c, "ida", spool.Checkpoint{Pos: 8, Data: []byte("eight")}, nil)
	check("ida", 8)
	if _, err := p.CheckpointPos(ctxT(t), ""); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("CheckpointPos(empty user): %v, want ErrInvalidUser", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckpointPos(ctxT(t), "ida"); !errors.Is(err, spool.ErrClosed) {
		t.Errorf("CheckpointPos after Close: %v, want ErrClosed", err)
	}
}
