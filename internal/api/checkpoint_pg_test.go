package api

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/spool"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/pgstore/pgtest"
)

// checkpointLoads counts, over the PostgreSQL store it wraps (keeping
// every capability of it), the whole checkpoints loaded and the reads of
// entries, one per streamed chunk.
type checkpointLoads struct {
	*pgstore.Store
	loads, reads atomic.Int64
}

func (s *checkpointLoads) LatestCheckpoint(ctx context.Context, user string) (spool.Checkpoint, error) {
	s.loads.Add(1)
	return s.Store.LatestCheckpoint(ctx, user)
}

func (s *checkpointLoads) Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]spool.Entry, error) {
	s.reads.Add(1)
	return s.Store.Read(ctx, user, after, maxCount, maxBytes)
}

// TestPostgresReadsLoadNoCheckpoint: every read reports the position of
// the user's checkpoint, and checks it again before each further chunk it
// streams. Over PostgreSQL that position comes from the store's
// spool.CheckpointPositioner, so neither a read of many chunks, nor a page
// of one, nor a long-poll renewal loads the checkpoint itself: only a
// download does.
func TestPostgresReadsLoadNoCheckpoint(t *testing.T) {
	var cs *checkpointLoads
	e := newEnv(t, false, func(c *Config) {
		pg, err := pgstore.Open(testCtx(t), pgtest.Database(t), pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pg.Close() })
		cs = &checkpointLoads{Store: pg}
		c.Store = cs
		c.ChunkBytes = 40 // about five entries per chunk
	})
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 60)
	data := bytes.Repeat([]byte("checkpoint "), 100_000) // 1.1 MB
	if _, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: 20, Data: data}, nil); err != nil {
		t.Fatal(err)
	}
	cs.loads.Store(0)
	cs.reads.Store(0)

	want := fmt.Sprint(seq(21, 60))
	if pos, cp := readAllLog(t, c, 0); fmt.Sprint(pos) != want || cp != 20 {
		t.Fatalf("whole read: %v, checkpoint %d; want %s, 20", pos, cp, want)
	}
	if r := cs.reads.Load(); r < 5 {
		t.Fatalf("the whole read took %d store reads; want the several chunks of ChunkBytes", r)
	}
	if pos, cp := readAllLog(t, c, 3); fmt.Sprint(pos) != want || cp != 20 {
		t.Fatalf("read in pages of 3: %v, checkpoint %d; want %s, 20", pos, cp, want)
	}
	lr, err := c.ReadLog(testCtx(t), 60, 0, 0, time.Second)
	if err != nil || len(lr.Entries) != 0 || lr.Checkpoint != 20 {
		t.Fatalf("long-poll renewal: %d entries, checkpoint %d, %v; want none, 20", len(lr.Entries), lr.Checkpoint, err)
	}
	if n := cs.loads.Load(); n != 0 {
		t.Errorf("%d store reads (chunks) loaded the whole checkpoint %d times; want never", cs.reads.Load(), n)
	}

	before := cs.loads.Load()
	got, err := c.Checkpoint(testCtx(t))
	if err != nil || got.Pos != 20 || !bytes.Equal(got.Data, data) {
		t.Fatalf("download: pos %d, %d bytes, %v; want 20, the %d bytes uploaded", got.Pos, len(got.Data), err, len(data))
	}
	if n := cs.loads.Load() - before; n != 1 {
		t.Errorf("a download loaded the checkpoint %d times, want once", n)
	}
}

// seq returns the positions from first to last.
func seq(first, last uint64) []uint64 {
	var s []uint64
	for p := first; p <= last; p++ {
		s = append(s, p)
	}
	return s
}

// usePostgres makes c's store a PostgreSQL store on a database of t's
// own, closed when t ends.
func usePostgres(t *testing.T, c *Config) {
	t.Helper()
	pg, err := pgstore.Open(testCtx(t), pgtest.Database(t), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	c.Store = pg
}
