package api

import (
	"context"
	"crypto/rand"
	"testing"

	"cspool/internal/spool"
)

// BenchmarkRead10k reads a log of 10,000 entries of 10 KB from the start,
// over the HTTP API and from the store directly, with the same limits.
func BenchmarkRead10k(b *testing.B) {
	const n, size = 10000, 10 << 10
	e := newEnv(b, false, nil)
	ctx := context.Background()
	batch := make([][]byte, 0, 500)
	for i := range n {
		d := make([]byte, size)
		rand.Read(d)
		batch = append(batch, d)
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := e.store.Append(ctx, "alice", batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	const maxCount, maxBytes = 10000, 8 << 20
	readAll := func(b *testing.B, read func(after uint64) ([]spool.Entry, error)) {
		b.SetBytes(n * size)
		for b.Loop() {
			got := 0
			for after := uint64(0); after < n; {
				es, err := read(after)
				if err != nil {
					b.Fatal(err)
				}
				got += len(es)
				after = es[len(es)-1].Pos
			}
			if got != n {
				b.Fatalf("read %d entries, want %d", got, n)
			}
		}
	}
	b.Run("store", func(b *testing.B) {
		readAll(b, func(after uint64) ([]spool.Entry, error) {
			return e.store.Read(ctx, "alice", after, maxCount, maxBytes)
		})
	})
	b.Run("http", func(b *testing.B) {
		c := e.client(b, "alice", e.alice)
		readAll(b, func(after uint64) ([]spool.Entry, error) {
			es, _, err := c.Read(ctx, after, maxCount, maxBytes, 0)
			return es, err
		})
	})
}
