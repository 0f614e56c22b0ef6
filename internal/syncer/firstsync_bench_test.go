package syncer

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// BenchmarkFirstSync is a new device's first sync as the daemon makes it:
// 10,000 deliveries of about 10 KB sealed by the spool, read over the real
// HTTP API on loopback into a mail store encrypted at rest, the integrity
// checks on. Each iteration syncs a new device; it reports the seconds
// per sync, wall clock and the process's CPU (user and system, the spool
// server's share included: it runs in this process).
//
//	go test ./internal/syncer -run - -bench FirstSync -benchtime 3x
func BenchmarkFirstSync(b *testing.B) {
	const n = 10000
	ctx := context.Background()
	h := newHTTPSpool(b)
	var batch [][]byte
	for i := range n {
		c := &command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: benchBody(i, 10<<10)}
		sealed, _, err := entry.Seal(c, h.spoolKey, h.user.Public(), "alice", nil)
		if err != nil {
			b.Fatal(err)
		}
		if batch = append(batch, sealed); len(batch) == 500 || i == n-1 {
			if _, err := h.store.Append(ctx, "alice", batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	key := devicedb.Key{7}
	var wall, cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		ms, err := mailstore.OpenWith(filepath.Join(h.dir, fmt.Sprintf("d%d.db", i)), mailstore.Options{Parser: mimeform.Parser{}, Key: &key})
		if err != nil {
			b.Fatal(err)
		}
		client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
		if err != nil {
			b.Fatal(err)
		}
		s, err := New(Config{User: "alice", UserKey: h.user, SpoolKey: h.spoolKey.Public(), Source: client, Store: ms,
			Logger: h.quiet, CheckpointMin: -1})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0, t0 := cpuTime(), time.Now()
		got, err := s.SyncOnce(ctx)
		if err != nil || got != n {
			b.Fatalf("synced %d entries, %v; want %d", got, err, n)
		}
		wall += time.Since(t0)
		cpu += cpuTime() - c0
		b.StopTimer()
		ms.Close()
		b.StartTimer()
	}
	b.ReportMetric(wall.Seconds()/float64(b.N), "s/sync")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/sync")
}

// benchBody is the i-th message of about size bytes, like bench/seed's.
func benchBody(i, size int) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, "From: Sender %d <sender%d@example.org>\r\nTo: alice@example.org\r\nSubject: Benchmark message %d\r\n", i%97, i%97, i)
	fmt.Fprintf(&sb, "Date: Tue, 25 Nov 2025 10:00:00 +0000\r\nMessage-ID: <bench-%d@example.org>\r\n", i)
	sb.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	words := []string{"mail", "spool", "log", "device", "sync", "quarterly", "report", "meeting", "invoice", "travel", "token"}
	for k := 0; sb.Len() < size; k++ {
		sb.WriteString(words[(i*7+k*13)%len(words)])
		if k%12 == 11 {
			sb.WriteString("\r\n")
		} else {
			sb.WriteByte(' ')
		}
	}
	sb.WriteString("\r\n")
	return []byte(sb.String())
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
