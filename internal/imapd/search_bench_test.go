package imapd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// readOnly refuses every command: the benchmark below only searches.
type readOnly struct{}

func (readOnly) Submit(context.Context, ...*command.Command) ([]mailstore.Outcome, error) {
	return nil, errors.New("read-only benchmark")
}

// BenchmarkSearchWire sends SEARCH as imaplib does (no ESEARCH, the
// numbers in one untagged SEARCH line) over a loopback connection, on the
// store BenchmarkTextSearch in internal/mailstore builds and keeps in
// CSPOOL_SEARCH_BENCH_DB (skipped without it), and reads the answer to
// its tagged OK.
//
//	CSPOOL_SEARCH_BENCH_N=100000 CSPOOL_SEARCH_BENCH_DB=/tmp/s.db go test ./internal/mailstore -run - -bench TextSearch
//	CSPOOL_SEARCH_BENCH_DB=/tmp/s.db go test ./internal/imapd -run - -bench SearchWire
func BenchmarkSearchWire(b *testing.B) {
	path := os.Getenv("CSPOOL_SEARCH_BENCH_DB")
	if path == "" {
		b.Skip("CSPOOL_SEARCH_BENCH_DB names no store")
	}
	key := devicedb.Key{7}
	ms, err := mailstore.OpenWith(path, mailstore.Options{Parser: mimeform.Parser{}, Key: &key})
	if err != nil {
		b.Fatal(err)
	}
	defer ms.Close()
	do, stop := benchSession(b, ms)
	defer stop()
	size := func(cmd string) int { _, n := do(cmd); return n }
	size("SELECT INBOX")
	for _, q := range []string{"UID SEARCH BODY quarterly", "SEARCH BODY quarterly", "UID SEARCH BODY xylophone", "UID SEARCH TEXT quarterly"} {
		b.Run(strings.ReplaceAll(q, " ", "_"), func(b *testing.B) {
			n := 0
			for range b.N {
				n = size(q)
			}
			b.ReportMetric(float64(n), "bytes")
		})
	}
}

// BenchmarkSearchWireUnindexed is BenchmarkSearchWire's SEARCH BODY of a
// word in every message over a store whose search index is dropped
// first (Store.Reindex, as `cspool reindex` does, with no indexer
// running), so that every body is read, decoded and folded: what a
// SEARCH meets on a new device while its index is still being built. It
// leaves the store so; BenchmarkTextSearch indexes it again.
//
//	CSPOOL_SEARCH_BENCH_DB=/tmp/s.db go test ./internal/imapd -run - -bench SearchWireUnindexed -benchtime 5x
func BenchmarkSearchWireUnindexed(b *testing.B) {
	path := os.Getenv("CSPOOL_SEARCH_BENCH_DB")
	if path == "" {
		b.Skip("CSPOOL_SEARCH_BENCH_DB names no store")
	}
	key := devicedb.Key{7}
	ms, err := mailstore.OpenWith(path, mailstore.Options{Parser: mimeform.Parser{}, Key: &key})
	if err != nil {
		b.Fatal(err)
	}
	defer ms.Close()
	if err := ms.Reindex(context.Background()); err != nil {
		b.Fatal(err)
	}
	do, stop := benchSession(b, ms)
	defer stop()
	do("SELECT INBOX")
	b.ResetTimer()
	n := 0
	for range b.N {
		_, n = do("SEARCH BODY quarterly")
	}
	b.ReportMetric(float64(n), "bytes")
}

// benchSession serves ms over IMAP on loopback, logs in as alice and
// returns do, which sends one command and returns the lines and bytes of
// its untagged answer (failing on anything but OK), and stop, which ends
// the connection and the server.
func benchSession(b *testing.B, ms *mailstore.Store) (do func(cmd string) (lines, size int), stop func()) {
	b.Helper()
	srv, err := New(Config{Store: ms, Submit: readOnly{}, User: "alice", Password: testPassword,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		srv.Close()
		b.Fatal(err)
	}
	stop = func() {
		conn.Close()
		srv.Close()
		<-served
	}
	r := bufio.NewReaderSize(conn, 1<<16)
	tag := 0
	do = func(cmd string) (lines, size int) {
		tag++
		t := fmt.Sprintf("a%d", tag)
		if _, err := fmt.Fprintf(conn, "%s %s\r\n", t, cmd); err != nil {
			b.Fatal(err)
		}
		start := true // line begins a response (a line longer than r's buffer comes in several slices)
		for {
			line, err := r.ReadSlice('\n')
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				b.Fatal(err)
			}
			if start && len(line) > len(t) && string(line[:len(t)+1]) == t+" " {
				if !strings.HasPrefix(string(line), t+" OK") {
					b.Fatalf("%s: %s", cmd, line)
				}
				return lines, size
			}
			size += len(line)
			start = err == nil
			if start {
				lines++
			}
		}
	}
	if _, err := r.ReadString('\n'); err != nil {
		b.Fatal(err)
	}
	do(`LOGIN alice "` + testPassword + `"`)
	return do, stop
}
