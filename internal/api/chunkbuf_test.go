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
// after the other, as a device's sync makes them, each allocate less
// than 1.3 times what they send: the first chunk is read into those
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
	for i := range 4 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sent := read(1 << 20)
		runtime.ReadMemStats(&after)
		if d := int64(after.TotalAlloc - before.TotalAlloc); d > sent*13/10 {
			t.Errorf("read %d of 1 MB: a response of %d bytes allocated %d bytes (%.2f times), want at most 1.3 times", i, sent, d, float64(d)/float64(sent))
		}
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
