package spooltest

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"cspool/internal/spool"
)

func (s *suite) quotaTests() []namedTest {
	return []namedTest{
		{"Quota", s.testQuota},
		{"QuotaCompaction", s.testQuotaCompaction},
		{"QuotaConcurrent", s.testQuotaConcurrent},
	}
}

// quotas returns st as a Quotas: every store must be one.
func quotas(t *testing.T, st spool.Store) spool.Quotas {
	t.Helper()
	q, ok := st.(spool.Quotas)
	if !ok {
		t.Fatalf("%T is not a spool.Quotas: the server's per-user quotas need it", st)
	}
	return q
}

func wantUsage(t *testing.T, q spool.Quotas, user string, want int64) {
	t.Helper()
	if got, err := q.Usage(ctxT(t), user); err != nil || got != want {
		t.Fatalf("Usage(%q) = %d, %v; want %d", user, got, err, want)
	}
}

func wantOverQuota(t *testing.T, what string, err error, usage, size, limit int64) {
	t.Helper()
	var o *spool.OverQuotaError
	if !errors.As(err, &o) || !errors.Is(err, spool.ErrOverQuota) {
		t.Fatalf("%s: %v, want an *OverQuotaError", what, err)
	}
	if o.Usage != usage || o.Size != size || o.Limit != limit {
		t.Fatalf("%s: refused with usage %d, size %d, limit %d; want %d, %d, %d", what, o.Usage, o.Size, o.Limit, usage, size, limit)
	}
}

// testQuota: usage counts every appended byte, whoever appends; an append
// within the limit goes through up to the limit exactly, one beyond it
// appends nothing and creates no log; no limit is no limit.
func (s *suite) testQuota(t *testing.T) {
	st := s.store(t)
	q := quotas(t, st)
	ctx := ctxT(t)
	wantUsage(t, q, "alice", 0)
	if _, err := q.AppendWithin(ctx, "alice", 10, [][]byte{make([]byte, 11)}); err == nil {
		t.Fatal("AppendWithin of 11 bytes under a limit of 10 appended")
	} else {
		wantOverQuota(t, "11 bytes into an empty log limited to 10", err, 0, 11, 10)
	}
	if h, err := st.Head(ctx, "alice"); err != nil || h != 0 {
		t.Fatalf("a refused append left head %d, %v; want 0", h, err)
	}
	if u, err := q.UsageSummary(ctx, 10); err != nil || u.Logs != 0 {
		t.Fatalf("a refused append into a new log left %+v, %v; want no log", u, err)
	}
	mustAppend(t, st, "alice", []byte("12345"), []byte{}, []byte("678"))
	wantUsage(t, q, "alice", 8)
	first, err := q.AppendWithin(ctx, "alice", 10, [][]byte{[]byte("9"), []byte("0")})
	if err != nil || first != 4 {
		t.Fatalf("AppendWithin up to the limit exactly: first %d, %v; want 4", first, err)
	}
	wantUsage(t, q, "alice", 10)
	_, err = q.AppendWithin(ctx, "alice", 10, [][]byte{[]byte("x")})
	wantOverQuota(t, "one byte beyond", err, 10, 1, 10)
	if first, err := q.AppendWithin(ctx, "alice", 0, [][]byte{[]byte("no limit")}); err != nil || first != 6 {
		t.Fatalf("AppendWithin without a limit: first %d, %v; want 6", first, err)
	}
	if first, err := headAppender(t, st).AppendAt(ctx, "alice", 6, [][]byte{[]byte("at")}); err != nil || first != 7 {
		t.Fatalf("AppendAt: first %d, %v; want 7", first, err)
	}
	wantUsage(t, q, "alice", 20)
	mustAppend(t, st, "bob", []byte("bob"))
	wantUsage(t, q, "bob", 3)
	checkEntries(t, readAll(t, st, "alice"), 1, [][]byte{[]byte("12345"), {}, []byte("678"), []byte("9"), []byte("0"),
		[]byte("no limit"), []byte("at")})
	u, err := q.UsageSummary(ctx, 20)
	if err != nil || u != (spool.UsageSummary{Logs: 2, Bytes: 23, Largest: 20, Near: 1, Over: 1}) {
		t.Fatalf("UsageSummary(20) = %+v, %v; want 2 logs, 23 bytes, largest 20, 1 near, 1 over", u, err)
	}
	if u, err := q.UsageSummary(ctx, 0); err != nil || u.Near != 0 || u.Over != 0 || u.Logs != 2 {
		t.Fatalf("UsageSummary without a limit = %+v, %v; want no log near or over", u, err)
	}
}

// testQuotaCompaction: compaction takes the deleted entries and the
// replaced checkpoint off the usage and counts the new checkpoint, so a
// log over its limit can come back under it.
func (s *suite) testQuotaCompaction(t *testing.T) {
	st, c := s.compactor(t)
	q := quotas(t, st)
	ctx := ctxT(t)
	big := bytes.Repeat([]byte("m"), 1000)
	mustAppend(t, st, "alice", big, big, []byte("cmd"), big)
	wantUsage(t, q, "alice", 3003)
	_, err := q.AppendWithin(ctx, "alice", 3500, [][]byte{big})
	wantOverQuota(t, "a delivery over the limit", err, 3003, 1000, 3500)
	if _, err := c.Compact(ctx, "alice", spool.Checkpoint{Pos: 3, Data: make([]byte, 100)}, []uint64{2}); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, q, "alice", 1000+1000+100) // entries 2 and 4, the checkpoint
	if _, err := c.Compact(ctx, "alice", spool.Checkpoint{Pos: 4, Data: make([]byte, 40)}, nil); err != nil {
		t.Fatal(err)
	}
	wantUsage(t, q, "alice", 40)
	if _, err := q.AppendWithin(ctx, "alice", 3500, [][]byte{big}); err != nil {
		t.Fatalf("the delivery after compaction: %v", err)
	}
	wantUsage(t, q, "alice", 1040)
	if _, err := c.Compact(ctx, "alice", spool.Checkpoint{Pos: 4, Data: make([]byte, 1)}, nil); !errors.Is(err, spool.ErrStaleCheckpoint) {
		t.Fatalf("stale compaction: %v", err)
	}
	wantUsage(t, q, "alice", 1040)
}

// testQuotaConcurrent: 16 deliveries racing through two handles for a log
// with room for 5: exactly 5 go through and the usage is exactly theirs.
func (s *suite) testQuotaConcurrent(t *testing.T) {
	st := s.store(t)
	handles := []spool.Store{st, s.reopen(t, st)}
	ctx := ctxT(t)
	const writers, size, room = 16, 100, 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for w := range writers {
		wg.Go(func() {
			_, err := quotas(t, handles[w%2]).AppendWithin(ctx, "alice", room*size, [][]byte{make([]byte, size)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, spool.ErrOverQuota):
				t.Errorf("writer %d: %v", w, err)
			}
		})
	}
	wg.Wait()
	if ok != room {
		t.Fatalf("%d deliveries went through, want %d", ok, room)
	}
	wantUsage(t, quotas(t, st), "alice", room*size)
	if h, err := st.Head(ctx, "alice"); err != nil || h != room {
		t.Fatalf("head %d, %v; want %d", h, err, room)
	}
}
