package imapd

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// BenchmarkListedFetch sends FETCH 1:* of UID, FLAGS and RFC822.SIZE
// over a loopback connection to a server on a store of
// CSPOOL_LISTED_BENCH_N messages (default 10,000), and reads the answer
// to its tagged OK: "listing" answers from the mailbox's listing in
// memory (fetchListed), "store" from the index messages_listing as before
// it (FetchForms). Besides the time, it reports the process's CPU per
// FETCH (server and this client, which only looks for the tag). Run with
// -count to alternate the two:
//
//	go test ./internal/imapd -run '^$' -bench ListedFetch -count 4
func BenchmarkListedFetch(b *testing.B) {
	n := listedBenchCount(b)
	ms := benchStore(b, n)
	defer ms.Close()
	session, stop := benchSession(b, ms)
	defer stop()
	do := func(cmd string) int { n, _ := session(cmd); return n }
	do("EXAMINE INBOX")
	cpu := func() time.Duration { return processCPU(b) }
	defer func() { listedFetch = true }()
	for _, items := range []string{"FLAGS", "UID", "RFC822.SIZE"} {
		for _, listed := range []bool{true, false} {
			name := items + "/store"
			if listed {
				name = items + "/listing"
			}
			b.Run(name, func(b *testing.B) {
				listedFetch = listed
				do("FETCH 1:* (" + items + ")") // untimed
				c0 := cpu()
				b.ResetTimer()
				for range b.N {
					if got := do("FETCH 1:* (" + items + ")"); got != n {
						b.Fatalf("FETCH 1:* (%s): %d lines, want %d", items, got, n)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(cpu()-c0)/float64(b.N)/1e6, "cpu-ms/op")
			})
		}
	}
}

// benchStore is a store of n messages delivered to INBOX, in batches of
// 1,000: mostly a short text/plain message, every fourth a
// multipart/alternative one, so that BODYSTRUCTURE has both shapes;
// encrypted at rest as a device's, or in plaintext when
// CSPOOL_LISTED_BENCH_PLAIN is 1.
func benchStore(b *testing.B, n int) *mailstore.Store {
	b.Helper()
	key := &devicedb.Key{7}
	if os.Getenv("CSPOOL_LISTED_BENCH_PLAIN") == "1" {
		key = nil
	}
	ms, err := mailstore.OpenWith(filepath.Join(b.TempDir(), "device.db"), mailstore.Options{Parser: mimeform.Parser{}, Key: key})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var pos uint64
	for i := 0; i < n; {
		var batch []mailstore.Entry
		for ; i < n && len(batch) < 1000; i++ {
			pos++
			var id command.ID
			rand.Read(id[:])
			body := fmt.Sprintf("From: sender%d@example.org\r\nSubject: message %d\r\n\r\n%s body %d\r\n", i%100, i, strings.Repeat("lorem ipsum ", 40), i)
			if i%4 == 3 {
				body = fmt.Sprintf("From: sender%d@example.org\r\nSubject: message %d\r\nMIME-Version: 1.0\r\n"+
					"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n"+
					"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>%s</p>\r\n--b--\r\n", i%100, i, strings.Repeat("lorem ipsum ", 20), strings.Repeat("dolor sit ", 20))
			}
			batch = append(batch, mailstore.Entry{Pos: pos, ID: id, Author: mailstore.AuthorSpool,
				Cmd: &command.Command{Kind: command.Deliver, Date: 1764000000000 + int64(i), Body: []byte(body)}})
		}
		if _, err := ms.Apply(ctx, batch, pos); err != nil {
			ms.Close()
			b.Fatal(err)
		}
	}
	return ms
}

// BenchmarkFormsFetch sends FETCH 1:* of BODYSTRUCTURE, ENVELOPE and
// (ENVELOPE FLAGS) over a loopback connection to a server on benchStore's
// CSPOOL_LISTED_BENCH_N messages (default 10,000; in plaintext with
// CSPOOL_LISTED_BENCH_PLAIN=1), warm (one FETCH before the timing), and
// reports the process's CPU per FETCH as BenchmarkListedFetch does:
// "indexes" reads the messages from the index messages_listing
// (formIndexes), "rows" a row of messages each as before; both read the
// forms and structures rows. Run with -count to alternate the two:
//
//	CSPOOL_LISTED_BENCH_N=100000 go test ./internal/imapd -run '^$' -bench FormsFetch -count 4
func BenchmarkFormsFetch(b *testing.B) {
	n := listedBenchCount(b)
	ms := benchStore(b, n)
	defer ms.Close()
	session, stop := benchSession(b, ms)
	defer stop()
	do := func(cmd string) int { n, _ := session(cmd); return n }
	do("EXAMINE INBOX")
	defer func() { formIndexes = true }()
	for _, run := range []struct {
		name, items string
		indexes     bool
	}{{"BODYSTRUCTURE/indexes", "BODYSTRUCTURE", true}, {"BODYSTRUCTURE/rows", "BODYSTRUCTURE", false},
		{"ENVELOPE/indexes", "ENVELOPE", true}, {"ENVELOPE/rows", "ENVELOPE", false},
		{"ENVELOPE_FLAGS/indexes", "ENVELOPE FLAGS", true}, {"ENVELOPE_FLAGS/rows", "ENVELOPE FLAGS", false}} {
		items := run.items
		b.Run(run.name, func(b *testing.B) {
			formIndexes = run.indexes
			do("FETCH 1:* (" + items + ")") // untimed
			c0 := processCPU(b)
			b.ResetTimer()
			for range b.N {
				if got := do("FETCH 1:* (" + items + ")"); got != n {
					b.Fatalf("FETCH 1:* (%s): %d lines, want %d", items, got, n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU(b)-c0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// processCPU is the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// listedBenchCount is the mailbox size of the FETCH benchmarks: 10,000
// messages, or CSPOOL_LISTED_BENCH_N.
func listedBenchCount(b *testing.B) int {
	v := os.Getenv("CSPOOL_LISTED_BENCH_N")
	if v == "" {
		return 10000
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("CSPOOL_LISTED_BENCH_N: %v", err)
	}
	return n
}
