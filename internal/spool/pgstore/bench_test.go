package pgstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// seed gives each of users logs of n entries of 200 bytes, by SQL.
func seed(b *testing.B, s *Store, users, n int) {
	b.Helper()
	ctx := context.Background()
	_, err := s.pool.Exec(ctx, `INSERT INTO cspool_logs (name, head)
		SELECT convert_to('u' || u, 'UTF8'), $2 FROM generate_series(1, $1) u`, users, n)
	if err != nil {
		b.Fatal(err)
	}
	if n > 0 {
		_, err = s.pool.Exec(ctx, `INSERT INTO cspool_entries (log_id, pos, size, data)
			SELECT l.id, p, 200, decode(repeat('ab', 200), 'hex') FROM cspool_logs l, generate_series(1, $1) p`, n)
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.pool.Exec(ctx, "VACUUM ANALYZE cspool_entries"); err != nil {
		b.Fatal(err)
	}
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
// 10 entries each (8 appenders).
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
	syncs := func() int64 {
		var n int64
		s.pool.QueryRow(context.Background(), "SELECT wal_sync FROM pg_stat_wal").Scan(&n)
		return n
	}
	before := syncs()
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
	if d := syncs() - before; d > 0 {
		b.ReportMetric(float64(b.N)/float64(d), "appends/walsync")
	}
}
