package mailstore

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkIndexMerge builds the search index of an encrypted store of N
// messages of 2 KB (bench/seed's kind; CSPOOL_INDEX_BENCH_N, default
// 5,000; the store is kept in CSPOOL_INDEX_BENCH_DB if set, and reused)
// from nothing as the daemon does (1,000 bodies a transaction at most,
// within 150 ms), once for each FTS5 merge setting of
// CSPOOL_INDEX_BENCH_MERGE ("automerge=4,crisismerge=16;automerge=8;..."
// in turns, each applied to fts and ftsw after Reindex; "" is SQLite's
// default; "final=P" merges the index into one segment after the build,
// P leaf pages a transaction, with MergeIndex), and reports for each the CPU per body of the first and the
// last tenth of the build, then the best of 5 of a few searches.
//
//	CSPOOL_INDEX_BENCH_N=100000 CSPOOL_INDEX_BENCH_DB=/tmp/i.db CSPOOL_INDEX_BENCH_MERGE='automerge=4;automerge=8' go test ./internal/mailstore -run - -bench IndexMerge -benchtime 1x -timeout 2h
func BenchmarkIndexMerge(b *testing.B) {
	s, n := searchBenchStore(b, "CSPOOL_INDEX_BENCH", 5000)
	defer s.Close()
	ctx := context.Background()
	settings := strings.Split(os.Getenv("CSPOOL_INDEX_BENCH_MERGE"), ";")
	b.ResetTimer()
	for range b.N {
		for _, set := range settings {
			if err := s.Reindex(ctx); err != nil {
				b.Fatal(err)
			}
			err := s.writeTx(ctx, "merge settings", func(tx *sql.Tx) error {
				for _, kv := range strings.Split(set, ",") {
					k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
					if !ok || k == "final" {
						continue
					}
					for _, t := range []string{"fts", "ftsw"} {
						if _, err := tx.ExecContext(ctx, fmt.Sprintf("INSERT INTO %s (%s, rank) VALUES (?, ?)", t, t), k, v); err != nil {
							return err
						}
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			slice := n / 10
			indexed, next := 0, slice
			var cpus []time.Duration
			t0, c0 := time.Now(), processCPU()
			for {
				done, more, err := s.IndexPendingWithin(ctx, 1000, 150*time.Millisecond)
				if err != nil {
					b.Fatal(err)
				}
				indexed += done
				if indexed >= next || !more {
					c := processCPU()
					cpus = append(cpus, c-c0)
					c0 = c
					next += slice
				}
				if !more || done == 0 {
					break
				}
			}
			wall := time.Since(t0)
			mergeNote := ""
			if _, v, ok := strings.Cut(set, "final="); ok {
				pages, err := strconv.Atoi(v)
				if err != nil {
					b.Fatal(err)
				}
				var segs0 int
				if err := s.rdb.QueryRowContext(ctx, "SELECT count(DISTINCT segid) FROM fts_idx").Scan(&segs0); err != nil {
					b.Fatal(err)
				}
				steps, m0, c0 := 0, time.Now(), processCPU()
				for {
					merged, err := s.MergeIndex(ctx, pages)
					if err != nil {
						b.Fatal(err)
					}
					steps++
					if !merged {
						break
					}
				}
				mergeNote = fmt.Sprintf("; final merge of %d segments: %d steps of %d pages, wall %.1fs, cpu/body %.3f ms",
					segs0, steps, pages, time.Since(m0).Seconds(), float64((processCPU()-c0).Microseconds())/1000/float64(indexed))
			}
			var segs int
			if err := s.rdb.QueryRowContext(ctx, "SELECT count(DISTINCT segid) FROM fts_idx").Scan(&segs); err != nil {
				b.Fatal(err)
			}
			var ms []string
			for _, q := range []struct {
				key    SearchKey
				needle string
			}{{SearchBody, "xylophone"}, {SearchBody, "ylophon"}, {SearchBody, "quarterly"}, {SearchHeader, fmt.Sprintf("bench-2-%d@", n/2)}} {
				best := time.Hour
				for range 5 {
					t := time.Now()
					if _, err := s.TextSearch(ctx, InboxID(), q.key, q.needle); err != nil {
						b.Fatal(err)
					}
					best = min(best, time.Since(t))
				}
				ms = append(ms, fmt.Sprintf("%s=%.2fms", q.needle, float64(best.Microseconds())/1000))
			}
			per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(slice) }
			up, _ := os.ReadFile("/proc/loadavg")
			fmt.Fprintf(os.Stderr, "merge %q: %d bodies, wall %.1fs, cpu/body first tenth %.3f ms, last tenth %.3f ms%s; fts segments %d; best of 5: %s; loadavg %s",
				set, indexed, wall.Seconds(), per(cpus[0]), per(cpus[len(cpus)-1]), mergeNote, segs, strings.Join(ms, " "), strings.TrimSpace(string(up)))
			fmt.Fprintln(os.Stderr)
		}
	}
}
