package syncer

import (
	"context"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
)

// logReadCounter is the spool, noting the furthest position after which a
// read of the log started.
type logReadCounter struct {
	StoreSource
	furthest atomic.Uint64
}

func (c *logReadCounter) ReadLog(ctx context.Context, after uint64, n int, b int64, wait time.Duration) (spool.LogRead, error) {
	for {
		f := c.furthest.Load()
		if after <= f || c.furthest.CompareAndSwap(f, after) {
			break
		}
	}
	return c.StoreSource.ReadLog(ctx, after, n, b, wait)
}

// putHook is the device's store, calling onPut with each body a restore
// fetches before the store takes it.
type putHook struct {
	*mailstore.Store
	onPut func(pos uint64)
}

func (p *putHook) StageRestoreFrom(ctx context.Context, r io.Reader, check func(*mailstore.Restored) error, fetch mailstore.BodyFetcher) (*mailstore.StagedRestore, error) {
	hooked := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		return fetch(ctx, need, func(pos uint64, raw []byte) error {
			p.onPut(pos)
			return put(pos, raw)
		})
	}
	return p.Store.StageRestoreFrom(ctx, r, check, hooked)
}

// TestRestoreReadsAhead: while a new device's restore stores the bodies of
// one read of the log, the next read is already made (and opened): the
// first body of the log's second read is held until a read after it has
// started, which the code before never did while it stored a read's
// bodies. The device says it is restoring meanwhile (the daemon's search
// indexer waits for its end), and ends with the state of the device
// that wrote the checkpoint.
func TestRestoreReadsAhead(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range 150 {
		r.deliver(r.spool, msg(i))
	}
	a, msa := r.device("a", nil, nil)
	a.cfg.CheckpointMin = -1
	syncAll(t, a)
	if _, pos, err := a.WriteCheckpoint(ctx); err != nil || pos != 150 {
		t.Fatalf("checkpoint: at %d, %v; want 150", pos, err)
	}

	src := &logReadCounter{StoreSource: StoreSource{Store: r.log, User: "alice"}}
	ms, err := mailstore.Open(filepath.Join(r.dir, "b.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	var b *Syncer
	var once sync.Once
	store := &putHook{Store: ms, onPut: func(pos uint64) {
		if !b.Restoring() {
			t.Errorf("body %d fetched while the device does not say it restores", pos)
		}
		// Position 1 came with the read that found the checkpoint; the
		// next reads are the restore's.
		if pos < 2 {
			return
		}
		// A read after this body's position (the next read's, after the
		// last of this one) starts while it is held: at once, or before
		// this body came, as the scheduler pleases. (Counting reads from
		// here failed when the read ahead had started before this body
		// came: none more could start while it was held.)
		once.Do(func() {
			deadline := time.Now().Add(30 * time.Second)
			for src.furthest.Load() < pos {
				if time.Now().After(deadline) {
					t.Errorf("no read of the log after position %d started in 30 s while its body was stored", pos)
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}}
	b, err = New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: store,
		BatchCount: 20, CheckpointMin: -1})
	if err != nil {
		t.Fatal(err)
	}
	syncAll(t, b)
	if st := b.Status(); st.Restores != 1 || st.Position != 150 || b.Restoring() {
		t.Fatalf("after the restore: %d restores, at %d, restoring %v; want 1, at 150, done", st.Restores, st.Position, b.Restoring())
	}
	sameState(t, msa, ms)
}
