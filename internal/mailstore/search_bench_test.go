package mailstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// searchBenchMessage is bench/seed's message: real headers, about size
// bytes of common words, and "xylophone" in one message of 1,000.
func searchBenchMessage(i, size int) []byte {
	r := rand.New(rand.NewPCG(2, uint64(i)))
	var b strings.Builder
	fmt.Fprintf(&b, "From: Sender %d <sender%d@example.org>\r\n", i%97, i%97)
	fmt.Fprintf(&b, "To: alice@example.org\r\n")
	fmt.Fprintf(&b, "Subject: Benchmark message %d about topic %d\r\n", i, r.IntN(1000))
	fmt.Fprintf(&b, "Date: %s\r\n", time.Unix(1764000000+int64(i)*60, 0).UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <bench-2-%d@example.org>\r\n", i)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	words := []string{"mail", "spool", "log", "device", "sync", "quarterly", "report", "meeting", "invoice", "travel", "token"}
	if i%1000 == 500 {
		b.WriteString("xylophone ")
	}
	line := 0
	for b.Len() < size {
		b.WriteString(words[r.IntN(len(words))])
		line++
		if line%12 == 0 {
			b.WriteString("\r\n")
		} else {
			b.WriteByte(' ')
		}
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// BenchmarkTextSearch asks the search index of an encrypted store of N
// messages of 2 KB (CSPOOL_SEARCH_BENCH_N, default 10,000; the store is
// kept in CSPOOL_SEARCH_BENCH_DB if set, and reused) for a rare word, a
// substring of it, a word in every message and a Message-ID, as SEARCH
// BODY, TEXT and HEADER ask it.
//
//	CSPOOL_SEARCH_BENCH_N=100000 CSPOOL_SEARCH_BENCH_DB=/tmp/s.db go test ./internal/mailstore -run - -bench TextSearch
func BenchmarkTextSearch(b *testing.B) {
	s, _ := searchBenchStore(b, "CSPOOL_SEARCH_BENCH", 10000)
	defer s.Close()
	ctx := context.Background()
	for {
		_, left, err := s.IndexPending(ctx, 500)
		if err != nil {
			b.Fatal(err)
		}
		if left == 0 {
			break
		}
	}
	for _, q := range []struct {
		key    SearchKey
		needle string
	}{
		{SearchBody, "xylophone"}, {SearchBody, "ylophon"}, {SearchText, "xylophone"}, {SearchText, "ylophon"},
		{SearchBody, "quarterly"}, {SearchHeader, "bench-2-4242@"}, {SearchFrom, "sender42@"},
	} {
		b.Run(fmt.Sprintf("%s/%d/%s", ftsFilter[q.key], q.key, q.needle), func(b *testing.B) {
			hits := 0
			for range b.N {
				a, err := s.TextSearch(ctx, InboxID(), q.key, q.needle)
				if err != nil {
					b.Fatal(err)
				}
				hits = len(a.Match)
			}
			b.ReportMetric(float64(hits), "hits")
		})
	}
}

// searchBenchStore opens an encrypted store of N messages of 2 KB
// (searchBenchMessage), N from the environment's PREFIX_N (def if unset),
// kept in PREFIX_DB if set (and then reused: only the messages it lacks
// are delivered), else in a temporary folder.
func searchBenchStore(b *testing.B, prefix string, def int) (*Store, int) {
	n := def
	if v := os.Getenv(prefix + "_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	path := os.Getenv(prefix + "_DB")
	if path == "" {
		path = filepath.Join(b.TempDir(), "mail.db")
	}
	key := devicedb.Key{7}
	s, err := OpenWith(path, Options{Key: &key, Parser: mimeform.Parser{}})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	pos, err := s.Position(ctx)
	if err != nil {
		s.Close()
		b.Fatal(err)
	}
	l := testLog{pos: pos}
	for i := int(pos); i < n; {
		var part []Entry
		for ; i < n && len(part) < 1000; i++ {
			part = append(part, l.spool(&command.Command{Kind: command.Deliver, Date: int64(1700000000000 + i), Body: searchBenchMessage(i, 2048)}))
		}
		if _, err := s.Apply(ctx, part, part[len(part)-1].Pos); err != nil {
			s.Close()
			b.Fatal(err)
		}
	}
	return s, n
}
