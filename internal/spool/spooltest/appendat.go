package spooltest

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"cspool/internal/spool"
)

func (s *suite) appendAtTests() []namedTest {
	return []namedTest{
		{"AppendAt", s.testAppendAt},
		{"AppendAtConcurrent", s.testAppendAtConcurrent},
	}
}

// headAppender returns st as a HeadAppender: every store must be one.
func headAppender(t *testing.T, st spool.Store) spool.HeadAppender {
	t.Helper()
	ha, ok := st.(spool.HeadAppender)
	if !ok {
		t.Fatalf("%T is not a spool.HeadAppender: devices need the conditional append", st)
	}
	return ha
}

// wantMoved checks that err is a refusal for want that found head.
func wantMoved(t *testing.T, what string, err error, want, head uint64) {
	t.Helper()
	var m *spool.HeadMovedError
	if !errors.As(err, &m) || !errors.Is(err, spool.ErrHeadMoved) {
		t.Fatalf("%s: %v, want a *HeadMovedError", what, err)
	}
	if m.Want != want || m.Head != head {
		t.Fatalf("%s: refused for head %d finding %d, want %d finding %d", what, m.Want, m.Head, want, head)
	}
}

// testAppendAt: an append on the head the log has goes through at the next
// positions; on any other head nothing is appended and the head found is
// returned; an unknown log has head 0.
func (s *suite) testAppendAt(t *testing.T) {
	st := s.store(t)
	ha := headAppender(t, st)
	ctx := ctxT(t)
	_, err := ha.AppendAt(ctx, "alice", 3, [][]byte{[]byte("never")})
	wantMoved(t, "AppendAt(3) on an empty log", err, 3, 0)
	first, err := ha.AppendAt(ctx, "alice", 0, [][]byte{[]byte("a1"), []byte("a2")})
	if err != nil || first != 1 {
		t.Fatalf("AppendAt(0) on an empty log: first %d, %v; want 1", first, err)
	}
	_, err = ha.AppendAt(ctx, "alice", 0, [][]byte{[]byte("again")})
	wantMoved(t, "AppendAt(0) again", err, 0, 2)
	_, err = ha.AppendAt(ctx, "alice", 1, [][]byte{[]byte("behind")})
	wantMoved(t, "AppendAt(1) behind the head", err, 1, 2)
	mustAppend(t, st, "bob", []byte("b1"))
	if first, err = ha.AppendAt(ctx, "alice", 2, [][]byte{[]byte("a3")}); err != nil || first != 3 {
		t.Fatalf("AppendAt(2): first %d, %v; want 3", first, err)
	}
	checkEntries(t, readAll(t, st, "alice"), 1, [][]byte{[]byte("a1"), []byte("a2"), []byte("a3")})
	checkChain(t, st, "alice", chainOf([][]byte{nil, []byte("a1"), []byte("a2"), []byte("a3")}))
	if h, err := st.Head(ctx, "alice"); err != nil || h != 3 {
		t.Fatalf("head %d, %v; want 3", h, err)
	}
}

// testAppendAtConcurrent: writers racing on the same head, in rounds: in
// each round exactly one goes through, the others are told the new head.
func (s *suite) testAppendAtConcurrent(t *testing.T) {
	st := s.store(t)
	ha := headAppender(t, st)
	ctx := ctxT(t)
	const writers, rounds = 8, 5
	var want [][]byte
	for round := range rounds {
		head := uint64(round * 2)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := -1
		errs := make([]error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				batch := [][]byte{fmt.Appendf(nil, "r%d w%d e0", round, w), fmt.Appendf(nil, "r%d w%d e1", round, w)}
				first, err := ha.AppendAt(ctx, "alice", head, batch)
				errs[w] = err
				if err == nil {
					mu.Lock()
					defer mu.Unlock()
					if won >= 0 || first != head+1 {
						t.Errorf("round %d: writer %d appended at %d (winner so far %d)", round, w, first, won)
					}
					won = w
				}
			}()
		}
		wg.Wait()
		if won < 0 {
			t.Fatalf("round %d: no writer appended: %v", round, errs)
		}
		for w, err := range errs {
			if w != won {
				wantMoved(t, fmt.Sprintf("round %d, writer %d", round, w), err, head, head+2)
			}
		}
		want = append(want, fmt.Appendf(nil, "r%d w%d e0", round, won), fmt.Appendf(nil, "r%d w%d e1", round, won))
	}
	checkEntries(t, readAll(t, st, "alice"), 1, want)
	checkChain(t, st, "alice", chainOf(append([][]byte{nil}, want...)))
}
