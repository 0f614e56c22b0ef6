package sqlitestore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/spooltest"
)

// BenchmarkAppend appends one 10 KB entry per call with 1 and 8 concurrent
// appenders, reporting appends/s and appends per commit (how many callers
// shared each fsync).
func BenchmarkAppend(b *testing.B) {
	for _, appenders := range []int{1, 8} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			entry := make([]byte, 10<<10)
			b.SetBytes(int64(len(entry)))
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for g := 0; g < appenders; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					user := fmt.Sprintf("user%d", g%4)
					for next.Add(1) <= int64(b.N) {
						if _, err := s.Append(context.Background(), user, [][]byte{entry}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(st.Appends)/b.Elapsed().Seconds(), "appends/s")
			b.ReportMetric(float64(st.Appends)/float64(max(st.Commits, 1)), "appends/commit")
		})
	}
}

// BenchmarkRead reads a 10,000-entry log of 10 KB entries from start to end
// in pages of at most 1,000 entries and 4 MiB.
func BenchmarkRead(b *testing.B) {
	const entries, size = 10_000, 10 << 10
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	entry := make([]byte, size)
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = entry
	}
	for i := 0; i < entries/len(batch); i++ {
		if _, err := s.Append(context.Background(), "reader", batch); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(entries * size)
	b.ResetTimer()
	for b.Loop() {
		after, n := uint64(0), 0
		for {
			es, err := s.Read(context.Background(), "reader", after, 1000, 4<<20)
			if err != nil {
				b.Fatal(err)
			}
			if len(es) == 0 {
				break
			}
			n += len(es)
			after = es[len(es)-1].Pos
		}
		if n != entries {
			b.Fatalf("read %d entries, want %d", n, entries)
		}
	}
}

// BenchmarkCompact compacts a log of 20,000 entries of 1 KB at its head,
// keeping every fifth entry (16,000 deleted, space returned to the file
// system), and reports entries deleted per second.
func BenchmarkCompact(b *testing.B) {
	const n = 20_000
	entry := make([]byte, 1<<10)
	var keep []uint64
	for p := uint64(5); p <= n; p += 5 {
		keep = append(keep, p)
	}
	var deleted int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < n; j += 1000 {
			batch := make([][]byte, 1000)
			for k := range batch {
				batch[k] = entry
			}
			if _, err := s.Append(context.Background(), "u", batch); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		st, err := s.Compact(context.Background(), "u", spool.Checkpoint{Pos: n, Data: make([]byte, 1<<20)}, keep)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		deleted += st.Deleted
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(deleted)/b.Elapsed().Seconds(), "deleted/s")
}

// BenchmarkAppendUsers: 10 KB appends spread over 10 to 100,000 users whose
// logs already hold 10 entries of 200 bytes each (seeded by SQL), with 8
// appenders; the time per append should not grow with the number of users.
// Besides the time, which the fsyncs and a shared machine make noisy, it
// reports what does not depend on them: the bytes the process handed to
// write calls per append (the WAL's frames: the pages each group dirtied)
// and the process's CPU time per append.
func BenchmarkAppendUsers(b *testing.B) {
	for _, n := range []int{10, 100, 1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) { benchAppendUsers(b, n, false, false) })
	}
}

// BenchmarkAppendSpoolKey: BenchmarkAppendUsers at 1,000 users, with the
// appends unbound (key=false) and bound to the recorded spool key
// (key=true), as a server started with --spool-key appends: each group
// then reads spool_key in its transaction.
func BenchmarkAppendSpoolKey(b *testing.B) {
	for _, bound := range []bool{false, true} {
		b.Run(fmt.Sprintf("key=%v", bound), func(b *testing.B) { benchAppendUsers(b, 1_000, bound, false) })
	}
}

// BenchmarkAppendOnce: BenchmarkAppendUsers at 1,000 users, with plain
// appends (once=false) and with each append recording its request
// (once=true: AppendOnce, a fresh name each, kept 6 minutes, as the API
// appends a delivery over HTTP), bound to the spool key as a server's are.
func BenchmarkAppendOnce(b *testing.B) {
	for _, once := range []bool{false, true} {
		b.Run(fmt.Sprintf("once=%v", once), func(b *testing.B) { benchAppendUsers(b, 1_000, true, once) })
	}
}

func benchAppendUsers(b *testing.B, n int, bound, once bool) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	seedUsers(b, s, n, 10)
	if bound {
		if err := s.KeepSpoolKey(context.Background(), bytes.Repeat([]byte{0xa}, 64)); err != nil {
			b.Fatal(err)
		}
	}
	entry := make([]byte, 10<<10)
	b.SetBytes(int64(len(entry)))
	before := s.Stats()
	wb, cpu := procWritten(b), procCPU()
	var next atomic.Int64
	b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 appenders on the test machine
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			u := fmt.Sprintf("u%d", i%int64(n)+1)
			var err error
			if once {
				_, _, err = s.AppendOnce(context.Background(), u, spooltest.DeliveryOnce(), 0, [][]byte{entry})
			} else {
				_, err = s.Append(context.Background(), u, [][]byte{entry})
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.Appends-before.Appends)/float64(max(st.Commits-before.Commits, 1)), "appends/commit")
	b.ReportMetric(float64(procWritten(b)-wb)/float64(b.N), "written-B/op")
	b.ReportMetric(float64(procCPU()-cpu)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
}

// procWritten returns the bytes this process has handed to write and
// pwrite calls (wchar of /proc/self/io).
func procWritten(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Skipf("no /proc/self/io: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				b.Fatalf("/proc/self/io: %q: %v", line, err)
			}
			return n
		}
	}
	b.Fatalf("/proc/self/io without wchar: %q", raw)
	return 0
}

// procCPU returns the CPU time (user and system) this process has used.
func procCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// seedUsers gives each of users logs of n entries of 200 bytes, by SQL, on
// the write connection (the chain table is left empty: appends chain on
// from the hash kept on each user's row).
func seedUsers(b *testing.B, s *Store, users, n int) {
	b.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`WITH RECURSIVE u(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM u WHERE i < ?1)
		INSERT INTO users (name, head) SELECT CAST('u' || i AS BLOB), ?2 FROM u`,
		`WITH RECURSIVE p(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM p WHERE i < ?2)
		INSERT INTO entries (user_id, pos, size, data) SELECT users.id, p.i, 200, zeroblob(200) FROM users, p`,
	} {
		if _, err := s.wdb.ExecContext(ctx, q, users, n); err != nil {
			b.Fatal(err)
		}
	}
}
