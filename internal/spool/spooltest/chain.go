package spooltest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cspool/internal/spool"
)

// chainTests are the checks of the hash chain every store keeps
// (spool.Chainer).
func (s *suite) chainTests() []namedTest {
	return []namedTest{
		{"ChainMatchesEntries", s.testChainMatchesEntries},
		{"ChainInvalid", s.testChainInvalid},
		{"ChainConcurrent", s.testChainConcurrent},
		{"ChainSurvivesCompaction", s.testChainSurvivesCompaction},
		{"Tip", s.testTip},
		{"TipWait", s.testTipWait},
	}
}

// chainOf recomputes the chain over data (data[0] unused): out[p] is the
// hash at position p.
func chainOf(data [][]byte) []spool.Hash {
	out := make([]spool.Hash, len(data))
	for p := 1; p < len(data); p++ {
		out[p] = spool.ChainNext(out[p-1], data[p])
	}
	return out
}

// checkChain compares c's hash at every position 0..len(want)-1 with want,
// and checks that the position after is refused as beyond the head.
func checkChain(t *testing.T, c spool.Chainer, user string, want []spool.Hash) {
	t.Helper()
	for p, w := range want {
		got, err := c.ChainHash(ctxT(t), user, uint64(p))
		if err != nil {
			t.Fatalf("%s: ChainHash(%d): %v", user, p, err)
		}
		if got != w {
			t.Fatalf("%s: ChainHash(%d) = %x, recomputed %x", user, p, got[:8], w[:8])
		}
	}
	if _, err := c.ChainHash(ctxT(t), user, uint64(len(want))); !errors.Is(err, spool.ErrInvalidArgument) {
		t.Errorf("%s: ChainHash(%d) beyond the head %d: %v, want ErrInvalidArgument", user, len(want), len(want)-1, err)
	}
}

// testChainMatchesEntries: hashes equal ChainNext over the entries as
// appended (batches of several sizes, empty and binary entries), per user.
func (s *suite) testChainMatchesEntries(t *testing.T) {
	st := s.store(t)
	c := st
	data := map[string][][]byte{"ann": {nil}, "bob": {nil}}
	for i, n := range []int{1, 3, 1, 7, 2} {
		for _, user := range []string{"ann", "bob"} {
			batch := make([][]byte, n)
			for j := range batch {
				batch[j] = fmt.Appendf(nil, "%s\x00%d.%d", user, i, j)
			}
			if i == 3 {
				batch[1] = []byte{}
			}
			mustAppend(t, st, user, batch...)
			data[user] = append(data[user], batch...)
		}
	}
	for user, d := range data {
		checkChain(t, c, user, chainOf(d))
	}
	if a, _ := c.ChainHash(ctxT(t), "ann", 14); a == chainOf(data["bob"])[14] {
		t.Error("two users with different entries have equal chain hashes")
	}
}

// testChainInvalid: pos 0 is the zero hash for any user, known or not;
// anything beyond the head is ErrInvalidArgument; the empty user is refused.
func (s *suite) testChainInvalid(t *testing.T) {
	st := s.store(t)
	c := st
	mustAppend(t, st, "u", []byte("a"))
	for _, user := range []string{"u", "nobody"} {
		if h, err := c.ChainHash(ctxT(t), user, 0); err != nil || h != (spool.Hash{}) {
			t.Errorf("ChainHash(%q, 0) = %x, %v; want the zero hash", user, h[:8], err)
		}
	}
	for _, tc := range []struct {
		user string
		pos  uint64
	}{{"u", 2}, {"u", 1 << 40}, {"u", 1<<64 - 1}, {"nobody", 1}} {
		if _, err := c.ChainHash(ctxT(t), tc.user, tc.pos); !errors.Is(err, spool.ErrInvalidArgument) {
			t.Errorf("ChainHash(%q, %d): %v, want ErrInvalidArgument", tc.user, tc.pos, err)
		}
	}
	if _, err := c.ChainHash(ctxT(t), "", 0); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("ChainHash of the empty user: %v, want ErrInvalidUser", err)
	}
}

// testChainConcurrent: 8 writers over two handles append to one user; the
// chain is dense and follows the positions the entries got, through both
// handles.
func (s *suite) testChainConcurrent(t *testing.T) {
	st := s.store(t)
	c := st
	handles := []spool.Store{st, s.reopen(t, st)}
	const writers, batches = 8, 25
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := handles[w%2]
			for b := 0; b < batches; b++ {
				batch := make([][]byte, 1+(w+b)%3)
				for i := range batch {
					batch[i] = concurrentEntry(w, b, i, len(batch))
				}
				if _, err := h.Append(ctxT(t), "shared", batch); err != nil {
					t.Errorf("writer %d batch %d: Append: %v", w, b, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	es := readAll(t, st, "shared")
	data := [][]byte{nil}
	for i, e := range es {
		if e.Pos != uint64(i+1) {
			t.Fatalf("entry %d at position %d: not dense", i, e.Pos)
		}
		data = append(data, e.Data)
	}
	want := chainOf(data)
	checkChain(t, c, "shared", want)
	checkChain(t, handles[1], "shared", want)
}

// testChainSurvivesCompaction: compaction changes no hash, the hashes of
// deleted positions are still answered, and appends after it continue the
// chain over the deleted entries too.
func (s *suite) testChainSurvivesCompaction(t *testing.T) {
	st := s.store(t)
	c := st
	comp, ok := st.(spool.Compactor)
	if !ok {
		t.Skip("the store does not implement spool.Compactor")
	}
	data := numbered(t, st, "cc", 20)
	want := chainOf(data)
	checkChain(t, c, "cc", want)
	mustCompact(t, comp, "cc", spool.Checkpoint{Pos: 15, Data: []byte("cp")}, []uint64{3, 9})
	checkPositions(t, st, "cc", data, append([]uint64{3, 9}, span(16, 20)...))
	checkChain(t, c, "cc", want)
	mustCompact(t, comp, "cc", spool.Checkpoint{Pos: 20, Data: []byte("cp2")}, nil)
	checkChain(t, c, "cc", want)
	mustAppend(t, st, "cc", []byte("after"))
	checkChain(t, c, "cc", chainOf(append(data, []byte("after"))))
}

// testTip checks spool.TipReader against Head, ChainHash and the
// checkpoint's position: for an unknown user, after appends, after a
// compaction, and through a second handle.
func (s *suite) testTip(t *testing.T) {
	st := s.store(t)
	tr, ok := st.(spool.TipReader)
	if !ok {
		t.Skip("the store does not implement spool.TipReader")
	}
	handles := []spool.TipReader{tr}
	if s.opts.Reopen != nil {
		other, ok := s.reopen(t, st).(spool.TipReader)
		if !ok {
			t.Fatal("the second handle does not implement spool.TipReader")
		}
		handles = append(handles, other)
	}
	check := func(user string, head uint64, hash spool.Hash, cp uint64) {
		t.Helper()
		want := spool.Tip{Head: head, HeadHash: hash, Checkpoint: cp}
		for i, h := range handles {
			got, err := h.Tip(ctxT(t), user)
			if err != nil || got != want {
				t.Fatalf("handle %d: Tip(%q) = %+v, %v; want %+v", i, user, got, err, want)
			}
		}
	}
	check("tia", 0, spool.Hash{}, 0)
	data := numbered(t, st, "tia", 5)
	numbered(t, st, "tia-other", 3)
	chain := chainOf(data)
	check("tia", 5, chain[5], 0)
	if c, ok := st.(spool.Compactor); ok {
		mustCompact(t, c, "tia", spool.Checkpoint{Pos: 4, Data: []byte("four")}, []uint64{2})
		check("tia", 5, chain[5], 4)
	}
	cp := uint64(0)
	if _, ok := st.(spool.Compactor); ok {
		cp = 4
	}
	d := []byte("tia 6")
	if first := mustAppend(t, st, "tia", d); first != 6 {
		t.Fatalf("append at %d, want 6", first)
	}
	check("tia", 6, spool.ChainNext(chain[5], d), cp)
	check("tia-other", 3, chainOf(numberedData("tia-other", 3))[3], 0)
	if _, err := tr.Tip(ctxT(t), ""); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("Tip(empty user): %v, want ErrInvalidUser", err)
	}
}

// testTipWait checks spool.TipWaiter: a wait that runs out gives the tip
// as Tip reads it (the zero tip for an unknown user), one past which the
// head already is returns at once, and one woken by an append returns nil
// with no tip.
func (s *suite) testTipWait(t *testing.T) {
	st := s.store(t)
	tw, ok := st.(spool.TipWaiter)
	if !ok {
		t.Skip("the store does not implement spool.TipWaiter")
	}
	tr, ok := st.(spool.TipReader)
	if !ok {
		t.Fatal("a spool.TipWaiter that is no spool.TipReader")
	}
	short := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(ctxT(t), 200*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	got, ok, err := tw.WaitTip(short(t), "twa", 0)
	if !errors.Is(err, context.DeadlineExceeded) || !ok || got != (spool.Tip{}) {
		t.Fatalf("WaitTip(unknown user) = %+v, %v, %v; want the zero tip, true, the deadline", got, ok, err)
	}
	numbered(t, st, "twa", 3)
	want, err := tr.Tip(ctxT(t), "twa")
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err = tw.WaitTip(short(t), "twa", 3)
	if !errors.Is(err, context.DeadlineExceeded) || !ok || got != want {
		t.Fatalf("WaitTip at the head = %+v, %v, %v; want %+v, true, the deadline", got, ok, err, want)
	}
	if _, _, err := tw.WaitTip(short(t), "twa", 2); err != nil {
		t.Fatalf("WaitTip behind the head: %v, want nil at once", err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := tw.WaitTip(ctxT(t), "twa", 3)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	mustAppend(t, st, "twa", []byte("twa 4"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WaitTip woken by an append: %v, want nil", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("an append did not end WaitTip")
	}
	if _, _, err := tw.WaitTip(short(t), "", 0); !errors.Is(err, spool.ErrInvalidUser) {
		t.Errorf("WaitTip(empty user): %v, want ErrInvalidUser", err)
	}
}

// numberedData is the data numbered appends: "<user> <pos>" (index 0
// unused).
func numberedData(user string, n int) [][]byte {
	data := make([][]byte, n+1)
	for p := 1; p <= n; p++ {
		data[p] = fmt.Appendf(nil, "%s %d", user, p)
	}
	return data
}
