package mailstore

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// BenchmarkIndexPending builds the search index of an encrypted store of
// N messages of 2 KB (bench/seed's kind; CSPOOL_INDEX_BENCH_N, default
// 5,000) from nothing, in batches of CSPOOL_INDEX_BENCH_BATCH bodies
// (default 1,000) within CSPOOL_INDEX_BENCH_BUDGET (a duration, default
// none; the daemon's: 1,000 within 150ms), and reports the wall-clock and
// CPU time per message. Each round drops the index first (Reindex, not
// timed).
//
//	CSPOOL_INDEX_BENCH_N=100000 go test ./internal/mailstore -run - -bench IndexPending -benchtime 1x
func BenchmarkIndexPending(b *testing.B) {
	n := 5000
	if v := os.Getenv("CSPOOL_INDEX_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	batch := 1000
	if v := os.Getenv("CSPOOL_INDEX_BENCH_BATCH"); v != "" {
		var err error
		if batch, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	var budget time.Duration
	if v := os.Getenv("CSPOOL_INDEX_BENCH_BUDGET"); v != "" {
		var err error
		if budget, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	key := devicedb.Key{7}
	s, err := OpenWith(filepath.Join(b.TempDir(), "mail.db"), Options{Key: &key, Parser: mimeform.Parser{}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var l testLog
	for i := 0; i < n; {
		var part []Entry
		for ; i < n && len(part) < 1000; i++ {
			part = append(part, l.spool(&command.Command{Kind: command.Deliver, Date: int64(1700000000000 + i), Body: searchBenchMessage(i, 2048)}))
		}
		if _, err := s.Apply(ctx, part, part[len(part)-1].Pos); err != nil {
			b.Fatal(err)
		}
	}
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := s.Reindex(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := processCPU()
		for {
			done, more, err := s.IndexPendingWithin(ctx, batch, budget)
			if err != nil {
				b.Fatal(err)
			}
			if !more || done == 0 {
				break
			}
		}
		cpu += processCPU() - c0
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/msg")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "cpu-µs/msg")
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
