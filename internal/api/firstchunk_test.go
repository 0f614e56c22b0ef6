package api

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// boundsStore records the byte bound of every store read; it keeps every
// capability of the SQLite store it wraps.
type boundsStore struct {
	*sqlitestore.Store
	mu     sync.Mutex
	bounds []int64
}

func (b *boundsStore) Read(ctx context.Context, user string, after uint64, n int, maxBytes int64) ([]spool.Entry, error) {
	b.mu.Lock()
	b.bounds = append(b.bounds, maxBytes)
	b.mu.Unlock()
	return b.Store.Read(ctx, user, after, n, maxBytes)
}

// ReadInto records its bound as Read does: a response reads its further
// chunks with it.
func (b *boundsStore) ReadInto(ctx context.Context, user string, after uint64, n int, maxBytes int64, buf []byte) ([]spool.Entry, []byte, error) {
	b.mu.Lock()
	b.bounds = append(b.bounds, maxBytes)
	b.mu.Unlock()
	return b.Store.ReadInto(ctx, user, after, n, maxBytes, buf)
}

// TestFirstChunkSmall: a read of 2 MiB starts with a store read of at most
// firstChunkBytes, and each next store read of the response is bounded by
// twice the one before, up to ChunkBytes (handlers.go, stream), so the
// answer's first entries leave before the rest is read; the entries are
// the log's, in order, whatever the chunks.
func TestFirstChunkSmall(t *testing.T) {
	var bs *boundsStore
	e := newEnv(t, false, func(c *Config) {
		bs = &boundsStore{Store: c.Store.(*sqlitestore.Store)}
		c.Store = bs
	})
	c := e.client(t, "alice", e.alice)
	const n = 150
	var batch [][]byte
	for i := 1; i <= n; i++ {
		batch = append(batch, append(fmt.Appendf(nil, "entry %d ", i), bytes.Repeat([]byte{'x'}, 10<<10)...))
	}
	if first, err := c.Append(testCtx(t), "alice", batch); err != nil || first != 1 {
		t.Fatalf("Append = %d, %v; want 1", first, err)
	}
	bs.mu.Lock()
	bs.bounds = nil
	bs.mu.Unlock()
	lr, err := c.ReadLog(testCtx(t), 0, 0, 2<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.Entries) != n {
		t.Fatalf("read %d entries, want %d", len(lr.Entries), n)
	}
	for i, en := range lr.Entries {
		if en.Pos != uint64(i+1) || !bytes.Equal(en.Data, batch[i]) {
			t.Fatalf("entry %d: position %d, %d bytes; want position %d and its data", i, en.Pos, len(en.Data), i+1)
		}
	}
	bs.mu.Lock()
	bounds := bs.bounds
	bs.mu.Unlock()
	if len(bounds) == 0 || bounds[0] > firstChunkBytes {
		t.Fatalf("store reads bounded by %v: want the first at most %d bytes", bounds, firstChunkBytes)
	}
	for i := 1; i < len(bounds); i++ {
		if bounds[i] > 2*bounds[i-1] {
			t.Errorf("store reads bounded by %v: read %d more than twice the one before", bounds, i)
		}
	}
}

// ReadSized records its bound as Read does: a response reads its first
// chunk with it.
func (b *boundsStore) ReadSized(ctx context.Context, user string, after uint64, n int, maxBytes int64, buf []byte, room func(int64) error) ([]spool.Entry, []byte, error) {
	b.mu.Lock()
	b.bounds = append(b.bounds, maxBytes)
	b.mu.Unlock()
	return b.Store.ReadSized(ctx, user, after, n, maxBytes, buf, room)
}
