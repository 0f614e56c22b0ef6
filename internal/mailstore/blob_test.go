package mailstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/testproc"
)

// attachedMessage is a message of at least size bytes: a short text and an
// attachment of base64 lines, as a mailed file comes.
func attachedMessage(i, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: a@example.org\r\nTo: b@example.org\r\nSubject: attachment %d\r\nMessage-ID: <att%d@example.org>\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"+
		"--b1\r\nContent-Type: text/plain\r\n\r\nThe attachment of message %d.\r\n"+
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n", i, i, i)
	line := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{byte(i), 0xa5, 0x3c}, 19)) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	b.WriteString("--b1--\r\n")
	return b.String()
}

// TestLargeBodyInPieces: a message larger than SQLite's whole memory
// allowed to a connection is applied, indexed and fetched (header and
// bytes), each connection's SQLite heap held to limit, below the
// message's size: its bytes go through SQLite in pieces. Before, the
// apply bound the body whole (and SQLite copied it again into the row's
// record), the index and a FETCH read it as a column, and each ran out
// of memory.
func TestLargeBodyInPieces(t *testing.T) {
	const size, limit = 32 << 20, 20 << 20
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		sizes []int // of the batch's messages; the largest is checked
	}{
		{"alone", []int{size}},
		{"in a run", []int{2000, size, 3000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			var l testLog
			var batch []Entry
			var want string
			for i, n := range tc.sizes {
				body := attachedMessage(i, n)
				if n == size {
					want = body
				}
				batch = append(batch, l.spool(deliverCmd(body)))
			}
			// The index runs on the same connection, with the same limit.
			s.fixedCache = true
			limitHeap(t, s, limit)
			mustApply(t, s, batch...)
			if _, _, err := s.IndexPending(ctx, 10); err != nil {
				t.Fatalf("indexing a message of %d bytes with the writer's SQLite held to %d: %v", len(want), limit, err)
			}
			var left int
			if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM unindexed").Scan(&left); err != nil {
				t.Fatal(err)
			}
			if left != 0 {
				t.Errorf("%d bodies left unindexed, want 0", left)
			}
			s.rdb.SetMaxOpenConns(1)
			if _, err := s.rdb.ExecContext(ctx, fmt.Sprintf("PRAGMA hard_heap_limit = %d", limit)); err != nil {
				t.Fatal(err)
			}
			inbox := mailboxID(t, s, "INBOX")
			uid := UID(1 + indexOfMax(tc.sizes))
			var got *Message
			err := s.Fetch(ctx, inbox, UIDSet{{Start: uid, Stop: uid}}, WantRaw|WantHeader, func(m *Message) error {
				got = m
				return nil
			})
			if err != nil {
				t.Fatalf("fetching a message of %d bytes with the reader's SQLite held to %d: %v", len(want), limit, err)
			}
			if got == nil || !bytes.Equal(got.Raw, []byte(want)) {
				t.Fatalf("FETCH of UID %d gave %d bytes, want the %d delivered", uid, len(got.Raw), len(want))
			}
			if hl := strings.Index(want, "\r\n\r\n") + 4; string(got.Header) != want[:hl] {
				t.Errorf("FETCH of UID %d gave the header %q, want %q", uid, got.Header, want[:hl])
			}
		})
	}
}

func indexOfMax(xs []int) int {
	k := 0
	for i, x := range xs {
		if x > xs[k] {
			k = i
		}
	}
	return k
}

// TestLargeBodyOutOfMemory: a message of 4 MiB, stored in pieces,
// applied with the writer's SQLite held to less than its page cache needs
// fails with sqlite3.NOMEM without holding the writer for ever, leaves
// the store as it was, and applies once the limit is gone. (At these
// limits SQLite runs out in a statement, before a write of the blob
// handle, where the driver would panic: onSQLite turns that panic into
// sqlite3.NOMEM too.)
func TestLargeBodyOutOfMemory(t *testing.T) {
	ctx := context.Background()
	for _, limit := range []int{400_000, 1_000_000, 2_000_000} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			s := openTest(t)
			var l testLog
			e := l.spool(deliverCmd(attachedMessage(0, 4<<20)))
			before := dump(t, s)
			limitHeap(t, s, limit)
			err := testproc.Finish(t, "an Apply that ran out of memory", func() error {
				_, err := s.Apply(ctx, []Entry{e}, e.Pos)
				return err
			})
			if !errors.Is(err, sqlite3.NOMEM) {
				t.Fatalf("Apply with the writer's SQLite held to %d: %v, want sqlite3.NOMEM", limit, err)
			}
			if after := dump(t, s); !reflect.DeepEqual(after, before) {
				t.Fatal("the store changed in an Apply that failed")
			}
			limitHeap(t, s, 0)
			mustApply(t, s, e)
		})
	}
}

// TestRawAtReadsInPieces: RawAt, in a Fetch callback, gives a large
// message's bytes from any offset, across pieces and to its end, and
// holds none of them; while it is open the connection's page cache is
// scanCacheKiB, and Close gives the reader's cache back.
func TestRawAtReadsInPieces(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	want := attachedMessage(0, 3<<20)
	mustApply(t, s, l.spool(deliverCmd(want)))
	inbox := mailboxID(t, s, "INBOX")
	cacheOf := func(m *Message) (n int64) {
		t.Helper()
		if err := m.conn.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	called := false
	err := s.Fetch(ctx, inbox, UIDSet{{Start: 1, Stop: 1}}, WantRaw|WantLargeRawLater, func(m *Message) error {
		called = true
		if m.Raw != nil {
			t.Fatalf("a message of %d bytes came with its bytes", len(want))
		}
		r, ok := m.RawAt()
		if !ok {
			t.Fatal("RawAt of a large message in a Fetch callback: not ok")
		}
		for _, c := range []struct{ off, n int64 }{{0, 100}, {blobPiece - 10, 20}, {1000, 3 * blobPiece}, {int64(len(want)) - 50, 50}, {5, 1}} {
			p := make([]byte, c.n)
			n, err := r.ReadAt(p, c.off)
			if err != nil || n != len(p) || string(p) != want[c.off:c.off+c.n] {
				t.Errorf("ReadAt %d bytes at %d: %d bytes, %v; differ: %v", c.n, c.off, n, err, string(p[:n]) != want[c.off:c.off+int64(n)])
			}
		}
		if got := cacheOf(m); got != -scanCacheKiB {
			t.Errorf("page cache while reading: %d, want -%d", got, scanCacheKiB)
		}
		p := make([]byte, 100)
		if n, err := r.ReadAt(p, int64(len(want))-40); n != 40 || !errors.Is(err, io.EOF) || string(p[:n]) != want[len(want)-40:] {
			t.Errorf("ReadAt past the end: %d bytes, %v, want the last 40 and io.EOF", n, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if got := cacheOf(m); got != -readCacheKiB {
			t.Errorf("page cache after Close: %d, want the reader's -%d", got, readCacheKiB)
		}
		return nil
	})
	if err != nil || !called {
		t.Fatalf("Fetch: %v (called %v)", err, called)
	}
}
