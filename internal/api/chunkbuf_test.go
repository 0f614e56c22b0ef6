package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
	"cspool/internal/testproc"
)

// TestResponseChunksReuseBuffers: a read answered in several chunks reads
// them into buffers the server uses again (spool.IntoReader), so serving
// it allocates about its bytes once (the driver's copy of each row), not
// twice: over a read of 3 MB, the second and later responses allocate
// less than one and a half times the bytes they send. Reads of 1 MB one
// after the other, as a device's sync makes them, allocate less than 1.3
// times what they send (about 1.13): the first chunk is read into those
// buffers too, and each response finds the ones the one before gave
// back. Each allocated 256 KB for its first chunk (1.38 times), and one
// whose handler ran on another core than the last one's, two chunks'
// buffers again (2.2 times).
func TestResponseChunksReuseBuffers(t *testing.T) {
	testproc.SkipUnderRace(t) // the detector changes what is allocated
	e := newEnv(t, false, nil)
	c := e.client(t, "alice", e.alice)
	const n, size = 300, 10 << 10
	var batch [][]byte
	for i := 1; i <= n; i++ {
		batch = append(batch, append(fmt.Appendf(nil, "entry %d ", i), bytes.Repeat([]byte{'x'}, size)...))
	}
	if _, err := c.Append(testCtx(t), "alice", batch); err != nil {
		t.Fatal(err)
	}
	// A plain GET whose body is discarded: what is allocated is the
	// server's.
	read := func(maxBytes int) int64 {
		q := url.Values{"after": {"0"}, "max_count": {fmt.Sprint(n)}, "max_bytes": {fmt.Sprint(maxBytes)}}
		resp, err := c.do(testCtx(t), "reading", http.MethodGet, "/v1/users/alice/entries", q, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	read(8 << 20) // the buffers made once
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	least := int64(-1)
	var sent int64
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sent = read(8 << 20)
		runtime.ReadMemStats(&after)
		if d := int64(after.TotalAlloc - before.TotalAlloc); least < 0 || d < least {
			least = d
		}
	}
	if sent < n*size {
		t.Fatalf("response of %d bytes, want at least %d", sent, n*size)
	}
	if least > sent*3/2 {
		t.Errorf("a response of %d bytes allocated %d bytes (%.2f times), want at most 1.5 times", sent, least, float64(least)/float64(sent))
	}
	least = -1
	for range 4 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sent = read(1 << 20)
		runtime.ReadMemStats(&after)
		if d := int64(after.TotalAlloc - before.TotalAlloc); least < 0 || d < least {
			least = d
		}
	}
	if least > sent*13/10 {
		t.Errorf("reads of 1 MB: a response of %d bytes allocated %d bytes (%.2f times, the least of 4), want at most 1.3 times", sent, least, float64(least)/float64(sent))
	}
}

// readSignal is the SQLite store, calling after once each ReadInto (a
// further chunk's read) has returned.
type readSignal struct {
	*sqlitestore.Store
	after func()
}

func (r *readSignal) ReadInto(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte) ([]spool.Entry, []byte, error) {
	es, b, err := r.Store.ReadInto(ctx, user, after, maxCount, maxBytes, buf)
	r.after()
	return es, b, err
}

// heldWriter is a response whose writes wait until ready is closed.
type heldWriter struct {
	header http.Header
	ready  chan struct{}
	out    bytes.Buffer
}

func (w *heldWriter) Header() http.Header { return w.header }
func (w *heldWriter) WriteHeader(int)     {}
func (w *heldWriter) Write(b []byte) (int, error) {
	<-w.ready
	return w.out.Write(b)
}

// TestFirstChunkKeptUntilWritten: a response's first chunk is read into
// one of the two buffers its further chunks are read into, and those
// buffers are the ones the response before gave back: the first further
// chunk goes into the other one, so the first chunk's bytes are whole
// when they are written, even when the next chunk's read ends first.
func TestFirstChunkKeptUntilWritten(t *testing.T) {
	var ready atomic.Pointer[chan struct{}] // closed by the next store read
	e := newEnv(t, false, func(c *Config) {
		c.Store = &readSignal{Store: c.Store.(*sqlitestore.Store), after: func() {
			if ch := ready.Swap(nil); ch != nil {
				close(*ch)
			}
		}}
	})
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	const n, size = 8, 100 << 10
	var batch [][]byte
	for i := range n {
		batch = append(batch, bytes.Repeat([]byte{byte('a' + i)}, size))
	}
	if _, err := c.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}
	// A whole read first: its buffers, given back, are large enough
	// for each chunk of the next.
	if es, _, err := c.Read(ctx, 0, n, 8<<20, 0); err != nil || len(es) != n {
		t.Fatalf("read %d entries, %v; want %d", len(es), err, n)
	}
	held := make(chan struct{})
	ready.Store(&held)
	p := readParams{maxCount: n, maxBytes: 8 << 20}
	h := &readHold{s: e.api, key: e.alice.Public().KeyID()}
	defer h.release()
	entries, err := h.first(ctx, "alice", p)
	if err != nil || len(entries) == 0 || len(entries) == n {
		t.Fatalf("first chunk of %d entries, %v; want some but not all", len(entries), err)
	}
	w := &heldWriter{header: http.Header{}, ready: held}
	if err := e.api.stream(ctx, w, "alice", p, n, 0, entries, h); err != nil {
		t.Fatal(err)
	}
	for i, want := range batch {
		if !bytes.Contains(w.out.Bytes(), want) {
			t.Errorf("entry %d is not in the response whole", i+1)
		}
	}
}

// TestReadsKeepTheirBuffers: a device's reads one after the other, over
// one connection, find the buffers the read before used: the client's
// read buffer and the server's write buffer (64 KB each), kept out of
// their pools (a sync.Pool's private slot is out of reach of a handler
// on another core, and the collector empties it). A read of a few small
// entries allocates less than 48 KB (about 29 KB); the client allocated
// its 64 KB buffer again at each (94 KB).
func TestReadsKeepTheirBuffers(t *testing.T) {
	testproc.SkipUnderRace(t) // the detector changes what is allocated
	e := newEnv(t, false, nil)
	c := e.client(t, "alice", e.alice)
	ctx := testCtx(t)
	if _, err := c.Append(ctx, "alice", [][]byte{[]byte("one"), []byte("two"), []byte("three")}); err != nil {
		t.Fatal(err)
	}
	read := func() {
		if lr, err := c.ReadLog(ctx, 0, 10, 1<<20, 0); err != nil || len(lr.Entries) != 3 {
			t.Fatalf("read %d entries, %v; want 3", len(lr.Entries), err)
		}
	}
	read() // the buffers made once
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	least := uint64(0)
	for i := range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		read()
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; i == 0 || d < least {
			least = d
		}
	}
	if least > 48<<10 {
		t.Errorf("a read of 3 small entries allocated %d bytes (the least of 5), want at most 48 KB", least)
	}
}
