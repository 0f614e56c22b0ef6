package api

import (
	"bufio"
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
)

// vmHWM returns the process's peak resident memory so far, in bytes.
func vmHWM(tb testing.TB) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kib << 10
		}
	}
	tb.Fatal("no VmHWM in /proc/self/status")
	return 0
}

// BenchmarkCheckpointUploadPeak uploads one checkpoint of 70 MiB of zeros
// to a server on loopback (the client streams it and holds none of it)
// and reports how far the process's peak resident memory (VmHWM) rose
// over it, in MiB and in copies of the checkpoint: the server's memory
// for one upload, store included. VmHWM only rises, so run one store per
// process: -bench 'CheckpointUploadPeak/sqlite$' -benchtime 1x.
func BenchmarkCheckpointUploadPeak(b *testing.B) {
	const size = 70 << 20
	stores := map[string]func(*Config){
		"sqlite": nil,
		"postgres": func(c *Config) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pg, err := pgstore.Open(ctx, pgtest.Database(b), pgstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { pg.Close() })
			c.Store = pg
		},
	}
	for name, mod := range stores {
		b.Run(name, func(b *testing.B) {
			e := newEnv(b, false, func(c *Config) {
				c.MaxCheckpointBody = 128 << 20
				if mod != nil {
					mod(c)
				}
			})
			c := e.client(b, "alice", e.alice)
			if _, err := c.Append(testCtx(b), "alice", [][]byte{[]byte("entry")}); err != nil {
				b.Fatal(err)
			}
			if b.N > 1 {
				b.Skip("one upload per process: -benchtime 1x")
			}
			before := vmHWM(b)
			if _, err := c.PutCheckpointFrom(testCtx(b), 1, io.NewSectionReader(zeros{}, 0, size), nil); err != nil {
				b.Fatal(err)
			}
			rise := vmHWM(b) - before
			b.ReportMetric(float64(rise)/(1<<20), "peak-rise-MiB")
			b.ReportMetric(float64(rise)/size, "copies")
		})
	}
}
