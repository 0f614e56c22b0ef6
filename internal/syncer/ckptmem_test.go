package syncer

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
	"cspool/internal/testproc"
)

// heapCheckpointer takes a checkpoint as the spool would, noting the live
// heap when it is handed over and keeping a copy read afterwards.
type heapCheckpointer struct {
	Source
	heapAtUpload uint64
	data         []byte
	keep         []uint64
	discard      bool  // read what is uploaded, keep only its size
	size         int64 // of what was uploaded
}

func (h *heapCheckpointer) live() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func (h *heapCheckpointer) Checkpoint(context.Context) (spool.Checkpoint, error) {
	return spool.Checkpoint{}, spool.ErrNoCheckpoint
}

func (h *heapCheckpointer) PutCheckpoint(_ context.Context, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	h.heapAtUpload = h.live()
	h.data, h.keep, h.size = cp.Data, keep, int64(len(cp.Data))
	return spool.CompactStats{}, nil
}

func (h *heapCheckpointer) PutCheckpointFrom(_ context.Context, _ uint64, data *io.SectionReader, keep []uint64) (spool.CompactStats, error) {
	h.heapAtUpload = h.live()
	h.size = data.Size()
	if h.discard {
		_, err := io.Copy(io.Discard, data)
		return spool.CompactStats{}, err
	}
	h.data = make([]byte, data.Size())
	if _, err := data.ReadAt(h.data, 0); err != nil {
		return spool.CompactStats{}, err
	}
	h.keep = keep
	return spool.CompactStats{}, nil
}

// deliveredStore opens a mail store in dir (closed at the end of the test)
// with n deliveries applied, batch entries an Apply.
func deliveredStore(ctx context.Context, tb testing.TB, dir string, n, batch int) *mailstore.Store {
	tb.Helper()
	ms, err := mailstore.Open(filepath.Join(dir, "device.db"), mimeform.Parser{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ms.Close() })
	for first := 1; first <= n; first += batch {
		var entries []mailstore.Entry
		for p := first; p < first+batch; p++ {
			var id command.ID
			rand.Read(id[:])
			entries = append(entries, mailstore.Entry{Pos: uint64(p), ID: id, Author: mailstore.AuthorSpool, Cmd: msg(p)})
		}
		if _, err := ms.Apply(ctx, entries, uint64(first+batch-1)); err != nil {
			tb.Fatal(err)
		}
	}
	return ms
}

// TestCheckpointMemory: writing a checkpoint of 30,000 messages holds
// neither the state nor the sealed checkpoint in memory, and allocates
// less in all than the sealed checkpoint's size (encoding, sealing and
// framing it whole allocated it several times over); what the spool
// receives opens, and holds the store's state.
func TestCheckpointMemory(t *testing.T) {
	testproc.SkipUnderRace(t)
	ctx := context.Background()
	dir := t.TempDir()
	const n = 30000
	ms := deliveredStore(ctx, t, dir, n, 2000)
	r := newRig(t)
	hc := &heapCheckpointer{Source: StoreSource{Store: r.log, User: "alice"}}
	s, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: hc, Store: ms, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	base := hc.live()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, pos, err := s.WriteCheckpoint(ctx); err != nil || pos != n {
		t.Fatalf("WriteCheckpoint = %d, %v; want position %d", pos, err, n)
	}
	runtime.ReadMemStats(&after)
	sealed := uint64(len(hc.data))
	alloc := after.TotalAlloc - before.TotalAlloc - sealed // the test's own copy
	held := int64(hc.heapAtUpload) - int64(base)
	t.Logf("sealed checkpoint %d bytes; allocated %d bytes writing it; %d more bytes live when uploaded", sealed, alloc, held)
	if held > int64(sealed)/4 {
		t.Errorf("%d bytes more live on the heap when the checkpoint of %d bytes was handed over; want it not held", held, sealed)
	}
	if alloc > sealed {
		t.Errorf("writing a checkpoint of %d bytes allocated %d bytes; want less than its size", sealed, alloc)
	}

	o, err := entry.Open(hc.data, r.user, "alice", r.user.Public())
	if err != nil {
		t.Fatal(err)
	}
	sn, err := ms.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := mailstore.EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	if o.Cmd.Kind != command.Checkpoint || o.Cmd.Position != n || !bytes.Equal(o.Cmd.Body, want) || len(hc.keep) != n {
		t.Fatalf("the spool got a %s at %d of %d bytes keeping %d; want the store's state at %d (%d bytes), keeping %d",
			o.Cmd.Kind, o.Cmd.Position, len(o.Cmd.Body), len(hc.keep), n, len(want), n)
	}
}

// BenchmarkWriteCheckpoint writes the checkpoint of a store of 100,000
// messages (2 KB-free: the checkpoint does not carry bodies) and reports
// its size, the bytes allocated, the heap live when it is handed over, and
// the largest heap seen (objects, garbage not yet swept included) sampled
// every millisecond meanwhile.
func BenchmarkWriteCheckpoint(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	const n = 100000
	ms := deliveredStore(ctx, b, dir, n, 5000)
	user, err := keys.Generate(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	hc := &heapCheckpointer{discard: true}
	s, err := New(Config{User: "alice", UserKey: user, SpoolKey: user.Public(), Source: hc, Store: ms, TempDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				metrics.Read(sample)
				if v := sample[0].Value.Uint64(); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	base := hc.live()
	peak.Store(0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		if _, _, err := s.WriteCheckpoint(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	close(stop)
	<-done
	b.ReportMetric(float64(hc.size), "sealed-B")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N), "alloc-B/op")
	b.ReportMetric(float64(int64(hc.heapAtUpload)-int64(base)), "held-at-upload-B")
	b.ReportMetric(float64(peak.Load()), "peak-heap-B")
	b.ReportMetric(float64(base), "heap-before-B")
}
