package spooltest

import (
	"fmt"
	"sync"
	"testing"

	"cspool/internal/spool"
)

// ack records one acknowledged Append.
type ack struct {
	user         string
	first        uint64
	n            int
	writer, seqn int
}

func concurrentEntry(writer, seqn, i, n int) []byte {
	return fmt.Appendf(nil, "w=%d b=%d i=%d n=%d", writer, seqn, i, n)
}

// testConcurrentAppend runs 8 writers, each appending batches of 1..4
// entries to a shared user and to its own user, through both handles when
// the backend can reopen. Afterwards every log must be dense, every entry
// present exactly once, every batch contiguous at the acknowledged position,
// and each writer's appends to one user in the order it made them.
func (s *suite) testConcurrentAppend(t *testing.T) {
	st := s.store(t)
	handles := []spool.Store{st}
	if s.opts.Reopen != nil {
		handles = append(handles, s.reopen(t, st))
	}
	const writers, batches = 8, 40
	acks := make([][]ack, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := handles[w%len(handles)]
			for b := 0; b < batches; b++ {
				user := "shared"
				if b%3 == 2 {
					user = fmt.Sprintf("own-%d", w)
				}
				n := 1 + (w+b)%4
				batch := make([][]byte, n)
				for i := range batch {
					batch[i] = concurrentEntry(w, b, i, n)
				}
				first, err := h.Append(ctxT(t), user, batch)
				if err != nil {
					t.Errorf("writer %d batch %d: Append: %v", w, b, err)
					return
				}
				acks[w] = append(acks[w], ack{user: user, first: first, n: n, writer: w, seqn: b})
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	logs := map[string][]spool.Entry{}
	total := map[string]int{}
	for w := range acks {
		for _, a := range acks[w] {
			total[a.user] += a.n
			if logs[a.user] == nil {
				logs[a.user] = readAll(t, st, a.user)
			}
		}
	}
	for user, es := range logs {
		if len(es) != total[user] {
			t.Errorf("user %q: %d entries in the log, %d acknowledged", user, len(es), total[user])
		}
		for i, e := range es {
			if e.Pos != uint64(i+1) {
				t.Fatalf("user %q: entry %d at position %d: positions not dense", user, i, e.Pos)
			}
		}
	}
	for w := range acks {
		last := map[string]uint64{}
		for _, a := range acks[w] {
			if a.first <= last[a.user] {
				t.Errorf("writer %d: batch %d to %q at %d, after an earlier batch at %d", w, a.seqn, a.user, a.first, last[a.user])
			}
			last[a.user] = a.first
			es := logs[a.user]
			for i := 0; i < a.n; i++ {
				p := a.first + uint64(i)
				want := concurrentEntry(a.writer, a.seqn, i, a.n)
				if p < 1 || p > uint64(len(es)) {
					t.Errorf("writer %d batch %d: position %d beyond the log of %q", w, a.seqn, p, a.user)
					continue
				}
				if string(es[p-1].Data) != string(want) {
					t.Errorf("user %q position %d: %q, want %q", a.user, p, es[p-1].Data, want)
				}
			}
		}
	}
}
