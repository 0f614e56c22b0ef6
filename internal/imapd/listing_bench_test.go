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
	n := 10000
	if v := os.Getenv("CSPOOL_LISTED_BENCH_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	key := devicedb.Key{7}
	ms, err := mailstore.OpenWith(filepath.Join(b.TempDir(), "device.db"), mailstore.Options{Parser: mimeform.Parser{}, Key: &key})
	if err != nil {
		b.Fatal(err)
	}
	defer ms.Close()
	ctx := context.Background()
	var pos uint64
	for i := 0; i < n; {
		var batch []mailstore.Entry
		for ; i < n && len(batch) < 1000; i++ {
			pos++
			var id command.ID
			rand.Read(id[:])
			body := fmt.Sprintf("From: sender%d@example.org\r\nSubject: message %d\r\n\r\n%s body %d\r\n", i%100, i, strings.Repeat("lorem ipsum ", 40), i)
			batch = append(batch, mailstore.Entry{Pos: pos, ID: id, Author: mailstore.AuthorSpool,
				Cmd: &command.Command{Kind: command.Deliver, Date: 1764000000000 + int64(i), Body: []byte(body)}})
		}
		if _, err := ms.Apply(ctx, batch, pos); err != nil {
			b.Fatal(err)
		}
	}
	session, stop := benchSession(b, ms)
	defer stop()
	do := func(cmd string) int { n, _ := session(cmd); return n }
	do("EXAMINE INBOX")
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
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
