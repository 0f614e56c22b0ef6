package syncer

import (
	"context"
	"io"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
	"cspool/internal/spool"
	"cspool/internal/testproc"
)

// heldCheckpointer serves a checkpoint the test holds, writing it out in
// pieces as the API client writes a response's body.
type heldCheckpointer struct {
	Source
	pos  uint64
	data []byte
}

func (h *heldCheckpointer) Checkpoint(context.Context) (spool.Checkpoint, error) {
	return spool.Checkpoint{Pos: h.pos, Data: h.data}, nil
}

func (h *heldCheckpointer) CheckpointTo(_ context.Context, w io.Writer) (uint64, int64, error) {
	var n int64
	for b := h.data; len(b) > 0; b = b[min(len(b), 32<<10):] {
		k, err := w.Write(b[:min(len(b), 32<<10)])
		n += int64(k)
		if err != nil {
			return 0, n, err
		}
	}
	return h.pos, n, nil
}

func (h *heldCheckpointer) PutCheckpoint(context.Context, spool.Checkpoint, []uint64) (spool.CompactStats, error) {
	return spool.CompactStats{}, nil
}

func (h *heldCheckpointer) PutCheckpointFrom(context.Context, uint64, *io.SectionReader, []uint64) (spool.CompactStats, error) {
	return spool.CompactStats{}, nil
}

// TestOpenCheckpointMemory: a new device reading and opening a checkpoint
// of 30,000 messages allocates little beyond the state it decodes: not the
// sealed checkpoint (it goes to a file), nor its plaintext (decrypted a
// chunk at a time into the decoder), nor an encoding of the state again
// (each element is compared alone). Before, it held all three, about four
// times the sealed checkpoint allocated besides the state.
func TestOpenCheckpointMemory(t *testing.T) {
	testproc.SkipUnderRace(t)
	ctx := context.Background()
	dir := t.TempDir()
	const n = 30000
	ms := deliveredStore(ctx, t, dir, n, 2000)
	r := newRig(t)
	hc := &heapCheckpointer{Source: StoreSource{Store: r.log, User: "alice"}}
	a, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: hc, Store: ms, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.WriteCheckpoint(ctx); err != nil {
		t.Fatal(err)
	}
	want, err := ms.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src := &heldCheckpointer{Source: hc, pos: n, data: hc.data}
	msb, err := mailstore.Open(filepath.Join(dir, "new.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer msb.Close()
	b, err := New(Config{User: "alice", UserKey: r.user, SpoolKey: r.spool.Public(), Source: src, Store: msb, TempDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sealed := uint64(len(hc.data))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cp, err := b.readCheckpoint(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	sn, _, err := b.openCheckpoint(cp)
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	cp.Close()
	alloc := after.TotalAlloc - before.TotalAlloc
	state := stateSize(sn)
	t.Logf("sealed checkpoint %d bytes; allocated %d bytes reading and opening it, of which the state it decoded holds %d", sealed, alloc, state)
	if alloc-min(alloc, state) > sealed/4 {
		t.Errorf("reading and opening a checkpoint of %d bytes allocated %d bytes besides the %d the state holds; want under a quarter of its size",
			sealed, alloc-min(alloc, state), state)
	}
	if !reflect.DeepEqual(sn, want) {
		t.Error("the state opened is not the state written")
	}
}

// stateSize is about what a decoded state holds: its lists and the byte
// strings and strings of its elements.
func stateSize(sn *mailstore.Snapshot) uint64 {
	n := uint64(unsafe.Sizeof(*sn)) + uint64(cap(sn.Entries)+cap(sn.Superseded)+cap(sn.Chain))
	n += uint64(cap(sn.Mailboxes)) * uint64(unsafe.Sizeof(mailstore.SnapMailbox{}))
	for _, m := range sn.Mailboxes {
		n += uint64(cap(m.ID) + len(m.Name) + len(m.SpecialUse))
	}
	n += uint64(cap(sn.Subscriptions)+cap(sn.Keywords)) * uint64(unsafe.Sizeof(""))
	for _, s := range append(slices.Clone(sn.Subscriptions), sn.Keywords...) {
		n += uint64(len(s))
	}
	n += uint64(cap(sn.Messages)) * uint64(unsafe.Sizeof(mailstore.SnapMessage{}))
	for _, m := range sn.Messages {
		n += uint64(cap(m.ID) + cap(m.Digest) + len(m.Keywords))
	}
	return n
}
