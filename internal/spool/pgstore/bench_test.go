package pgstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// seed gives each of users logs of n entries of 200 bytes, by SQL, in one
// transaction without the store's statement timeout (100,000 users of 10
// entries take seconds, more than the timeout allows one statement).
func seed(b *testing.B, s *Store, users, n int) {
	b.Helper()
	ctx := context.Background()
	start := time.Now()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback(ctx)
	steps := []struct {
		q    string
		args []any
	}{
		{"SET LOCAL statement_timeout = 0", nil},
		{`INSERT INTO cspool_logs (name, head)
		SELECT convert_to('u' || u, 'UTF8'), $2 FROM generate_series(1, $1) u`, []any{users, n}},
	}
	if n > 0 {
		steps = append(steps, struct {
			q    string
			args []any
		}{`INSERT INTO cspool_entries (log_id, pos, size, data)
		SELECT l.id, p, 200, decode(repeat('ab', 200), 'hex') FROM cspool_logs l, generate_series(1, $1) p`, []any{n}})
	}
	for _, st := range steps {
		if _, err := tx.Exec(ctx, st.q, st.args...); err != nil {
			b.Fatalf("seeding %d users of %d entries: %v", users, n, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	for _, q := range []string{"SET statement_timeout = 0", "VACUUM ANALYZE cspool_logs", "VACUUM ANALYZE cspool_entries", "RESET statement_timeout"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d users of %d entries in %v", users, n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkAppendLogSize: 10 KB appends to one user whose log already holds
// 1,000 to 1,000,000 entries (8 appenders).
func BenchmarkAppendLogSize(b *testing.B) {
	o := &opener{dsns: map[*Store]string{}}
	o.db = dbForBench(b)
	for _, n := range []int{1_000, 10_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s := openBench(b, o)
			seed(b, s, 1, n)
			benchAppends(b, s, 1)
		})
	}
}

// BenchmarkAppendUsers: 10 KB appends spread over 10 to 100,000 users with
// 10 entries each (8 appenders). Besides the time it reports the WAL bytes
// and full-page images per append (pg_stat_wal, cluster-wide: run it on an
// otherwise idle server).
func BenchmarkAppendUsers(b *testing.B) {
	o := &opener{dsns: map[*Store]string{}}
	o.db = dbForBench(b)
	for _, n := range []int{10, 100, 1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			s := openBench(b, o)
			seed(b, s, n, 10)
			benchAppends(b, s, n)
		})
	}
}

func benchAppends(b *testing.B, s *Store, users int) {
	data := make([]byte, 10<<10)
	var next atomic.Int64
	b.SetBytes(int64(len(data)))
	b.SetParallelism(4) // 4 x GOMAXPROCS(2) = 8 appenders on the test machine
	wal := func() (syncs, bytes, fpi int64) {
		s.pool.QueryRow(context.Background(), "SELECT wal_sync, wal_bytes, wal_fpi FROM pg_stat_wal").Scan(&syncs, &bytes, &fpi)
		return syncs, bytes, fpi
	}
	before, beforeBytes, beforeFPI := wal()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u := fmt.Sprintf("u%d", next.Add(1)%int64(users)+1)
			if _, err := s.Append(context.Background(), u, [][]byte{data}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	// Cluster-wide: run on an otherwise idle server.
	after, afterBytes, afterFPI := wal()
	if d := after - before; d > 0 {
		b.ReportMetric(float64(b.N)/float64(d), "appends/walsync")
	}
	b.ReportMetric(float64(afterBytes-beforeBytes)/float64(b.N), "walbytes/op")
	b.ReportMetric(float64(afterFPI-beforeFPI)/float64(b.N), "fullpages/op")
}
