package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"cspool/internal/spool"
)

// patterned returns n bytes in which every 8-byte word holds its own
// offset, in the machine's byte order: a byte moved, lost or repeated
// anywhere shows. The words are written whole, one store each: written
// byte by byte (binary.LittleEndian.PutUint64), 64 MiB took the race
// detector 64 million checked stores, seconds of a loaded machine.
func patterned(n int) []byte {
	words := make([]uint64, (n+7)/8)
	for i := range words {
		words[i] = uint64(i * 8)
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), len(words)*8)[:n]
	if n%8 != 0 {
		clear(b[n&^7:]) // a last partial word is zeros, as before
	}
	return b
}

// zeros is an io.ReaderAt of zeros, to upload large bodies without
// holding them.
type zeros struct{}

func (zeros) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

// TestLargeCheckpointStored: a checkpoint above the old 64 MiB limit (64
// MiB and 64 KiB, a mailbox of about 660,000 messages) is stored and read
// back byte for byte, over SQLite and PostgreSQL, and the server held it
// once: its budget saw the body's size and its decoded keep list's and no
// more.
//
// The slowest test of the package under the race detector, which checks
// every byte each copy moves and gives every byte held shadow memory: the
// body is just above the old limit, the smallest size that tells the two
// apart, and is downloaded into a buffer of its size rather than one that
// grows by doubling, which copied it again and held up to 128 MiB more.
// Its requests wait as long as the test may (testCtx), not a fixed time.
func TestLargeCheckpointStored(t *testing.T) {
	stores := map[string]func(*Config){
		"sqlite": nil,
		"postgres": func(c *Config) {
			usePostgres(t, c)
		},
	}
	data := patterned(64<<20 + 64<<10)
	for name, mod := range stores {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, false, mod)
			c := e.client(t, "alice", e.alice)
			appendNumbered(t, c, 10)
			st, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: 6, Data: data}, []uint64{2, 4})
			if err != nil {
				t.Fatalf("PutCheckpoint of %d bytes: %v", len(data), err)
			}
			if want := (spool.CompactStats{Deleted: 4, Bytes: 4 * int64(len("entry 1")), Kept: 2}); st != want {
				t.Errorf("stats %+v, want %+v", st, want)
			}
			held, peak, _ := e.api.cpMem.state()
			if body := int64(len(data)) + 3 + 2*8; held != 0 || peak != body {
				t.Errorf("checkpoint budget: %d bytes held after, %d at most; want 0 and the body and keep list's %d", held, peak, body)
			}
			got := bytes.NewBuffer(make([]byte, 0, len(data)))
			pos, _, err := c.CheckpointTo(testCtx(t), got)
			if err != nil || pos != 6 || !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("download: pos %d, %d bytes, %v; want 6, the %d bytes uploaded", pos, got.Len(), err, len(data))
			}
		})
	}
}

// TestCheckpointOverLimit: an upload over the server's limit gets 413,
// naming the limit and the size, before its body is read, and the server
// goes on: the same client's next upload is stored. At the default limit,
// 256 MiB, and at a limit set.
func TestCheckpointOverLimit(t *testing.T) {
	for _, limit := range []int64{DefaultMaxCheckpointBody, 1 << 20} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			e := newEnv(t, false, func(c *Config) {
				if limit != DefaultMaxCheckpointBody {
					c.MaxCheckpointBody = limit
				}
			})
			c := e.client(t, "alice", e.alice)
			appendNumbered(t, c, 3)
			// The kept count takes one byte: the body is limit+1.
			_, err := c.PutCheckpointFrom(testCtx(t), 2, io.NewSectionReader(zeros{}, 0, limit), nil)
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != 413 || !errors.Is(err, spool.ErrTooLarge) || IsTemporary(err) {
				t.Fatalf("upload of %d bytes over a limit of %d: %v; want 413, permanent", limit+1, limit, err)
			}
			if want := fmt.Sprintf("checkpoint of %d bytes exceeds this server's limit of %d bytes", limit+1, limit); ae.Msg != want {
				t.Errorf("413 says %q, want %q", ae.Msg, want)
			}
			if _, peak, _ := e.api.cpMem.state(); peak != 0 {
				t.Errorf("the refused upload held %d bytes of the budget, want none", peak)
			}
			next := limit - 1 // exactly the limit, with the kept count
			if limit == DefaultMaxCheckpointBody {
				next = 1000 // TestLargeCheckpointStored stores large ones
			}
			if _, err := c.PutCheckpointFrom(testCtx(t), 2, io.NewSectionReader(zeros{}, 0, next), nil); err != nil {
				t.Fatalf("upload of %d bytes after a refusal: %v", next+1, err)
			}
			if cp, err := e.store.LatestCheckpoint(testCtx(t), "alice"); err != nil || cp.Pos != 2 || int64(len(cp.Data)) != next {
				t.Errorf("stored checkpoint: pos %d, %d bytes, %v; want 2, %d", cp.Pos, len(cp.Data), err, next)
			}
		})
	}
}

// gatedStore holds the Compacts of checkpoints larger than small until
// open is closed, so that their uploads stay held by the server.
type gatedStore struct {
	spool.Store
	comp  spool.Compactor
	small int
	in    chan struct{} // a send for each held Compact that started
	open  chan struct{}
}

func (g *gatedStore) Compact(ctx context.Context, user string, cp spool.Checkpoint, keep []uint64) (spool.CompactStats, error) {
	if len(cp.Data) > g.small {
		g.in <- struct{}{}
		<-g.open
	}
	return g.comp.Compact(ctx, user, cp, keep)
}

func (g *gatedStore) LatestCheckpoint(ctx context.Context, user string) (spool.Checkpoint, error) {
	return g.comp.LatestCheckpoint(ctx, user)
}

// TestCheckpointMemoryBudget: checkpoint uploads of all users together
// hold at most CheckpointMemory bytes. With 2 MiB, two uploads of 900 KiB
// are held (their store writes gated); two more wait for room rather than
// be read, and are stored once the first two are; with no wait, one more
// gets 503 with Retry-After, temporary. Many small uploads go through
// beside the large ones. It counts bytes held, not time.
func TestCheckpointMemoryBudget(t *testing.T) {
	const big, small = 900 << 10, 10 << 10
	for _, wait := range []time.Duration{time.Minute, -1} {
		t.Run(fmt.Sprint(wait), func(t *testing.T) {
			var g *gatedStore
			m := &recMetrics{}
			var told atomic.Int64 // what MemoryHeld was told, summed
			e := newEnv(t, true, func(c *Config) {
				c.Metrics = m
				c.MemoryHeld = func(d int64) { told.Add(d) }
				g = &gatedStore{Store: c.Store, comp: c.Store.(spool.Compactor), small: small,
					in: make(chan struct{}, 8), open: make(chan struct{})}
				c.Store = g
				c.MaxCheckpointBody = 1 << 20
				c.CheckpointMemory = 2 << 20
				c.CheckpointWait = wait
			})
			var opened sync.Once
			open := func() { opened.Do(func() { close(g.open) }) }
			defer open()
			upload := func(user string, size int) error {
				c := e.client(t, user, genKey(t))
				if _, err := c.Append(testCtx(t), user, [][]byte{[]byte("entry")}); err != nil {
					t.Fatal(err)
				}
				_, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: 1, Data: patterned(size)}, nil)
				return err
			}
			errs := make(chan error, 4)
			for i := range 2 {
				go func() { errs <- upload(fmt.Sprint("held", i), big) }()
			}
			<-g.in
			<-g.in
			held, _, _ := e.api.cpMem.state()
			if held != 2*(big+1) {
				t.Fatalf("%d bytes held with two uploads of %d in the store, want %d", held, big+1, 2*(big+1))
			}
			// The server's collector is told them with the store's copies.
			if n := told.Load(); n != checkpointCopies*held {
				t.Fatalf("MemoryHeld told %d bytes held, want %d times the %d held", n, checkpointCopies, held)
			}
			// Small ones fit beside them: 20 at once, 200 KiB.
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := upload(fmt.Sprint("small", i), small); err != nil {
						t.Errorf("small upload %d beside the held ones: %v", i, err)
					}
				}()
			}
			wg.Wait()
			if wait < 0 {
				err := upload("refused", big)
				var ae *Error
				if !errors.As(err, &ae) || ae.Status != 503 || !IsTemporary(err) {
					t.Fatalf("upload with no room and no wait: %v; want 503, temporary", err)
				}
				open()
				for range 2 {
					if err := <-errs; err != nil {
						t.Errorf("held upload: %v", err)
					}
				}
				if held, waiting, refused := m.checkpoints(); held != 0 || waiting != 0 || !slices.Equal(refused, []string{CheckpointRefusedMemory}) {
					t.Errorf("metrics after: %d bytes held, %d waiting, refused %q; want 0, 0, [memory]", held, waiting, refused)
				}
				return
			}
			for i := range 2 {
				go func() { errs <- upload(fmt.Sprint("waiting", i), big) }()
			}
			for {
				_, _, waiting := e.api.cpMem.state()
				if waiting == 2 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if held, _, _ := e.api.cpMem.state(); held != 2*(big+1) {
				t.Fatalf("%d bytes held with two uploads waiting, want still %d", held, 2*(big+1))
			}
			if held, waiting, _ := m.checkpoints(); held != 2*(big+1) || waiting != 2 {
				t.Errorf("metrics with two held and two waiting: %d bytes held, %d waiting; want %d, 2", held, waiting, 2*(big+1))
			}
			open()
			for range 4 {
				if err := <-errs; err != nil {
					t.Errorf("upload: %v", err)
				}
			}
			if held, peak, _ := e.api.cpMem.state(); held != 0 || peak > 2<<20 {
				t.Errorf("after: %d bytes held, %d at most; want 0, at most the budget %d", held, peak, 2<<20)
			}
			if n := told.Load(); n != 0 {
				t.Errorf("after: MemoryHeld told %d bytes held, want 0", n)
			}
			if held, waiting, refused := m.checkpoints(); held != 0 || waiting != 0 || len(refused) != 0 {
				t.Errorf("metrics after: %d bytes held, %d waiting, refused %q; want 0, 0, none", held, waiting, refused)
			}
		})
	}
}

// TestCheckpointKeepFollowsLimit: the kept positions one upload may list
// follow MaxCheckpointBody, one per CheckpointBytesPerKept bytes, instead
// of a fixed 4,000,000. At a limit of 100 such shares, an upload of the
// limit's size listing 100 positions is stored, its decoded list counted
// in the budget; 101 get 413 naming the limit before the body is held.
func TestCheckpointKeepFollowsLimit(t *testing.T) {
	const kept = 100
	limit := int64(kept * CheckpointBytesPerKept)
	e := newEnv(t, false, func(c *Config) { c.MaxCheckpointBody = limit })
	if e.api.cfg.MaxCheckpointKeep != kept {
		t.Fatalf("MaxCheckpointKeep %d at a limit of %d bytes, want %d", e.api.cfg.MaxCheckpointKeep, limit, kept)
	}
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, kept+2)
	positions := func(n int) []uint64 {
		p := make([]uint64, n)
		for i := range p {
			p[i] = uint64(i + 1)
		}
		return p
	}
	// One byte of count and one a position: the body is limit-1 bytes.
	_, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: kept + 1, Data: make([]byte, limit-2-kept)}, positions(kept+1))
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 413 || IsTemporary(err) {
		t.Fatalf("upload listing %d positions: %v; want 413, permanent", kept+1, err)
	}
	if want := fmt.Sprintf("checkpoint lists %d kept positions, over this server's limit of %d (one per %d bytes of its limit of %d bytes)",
		kept+1, kept, CheckpointBytesPerKept, limit); ae.Msg != want {
		t.Errorf("413 says %q, want %q", ae.Msg, want)
	}
	if _, peak, _ := e.api.cpMem.state(); peak != 0 {
		t.Errorf("the refused upload held %d bytes of the budget, want none", peak)
	}
	data := make([]byte, limit-1-kept) // the body exactly the limit
	st, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: kept + 1, Data: data}, positions(kept))
	if err != nil {
		t.Fatalf("upload of %d bytes listing %d positions: %v", limit, kept, err)
	}
	if st.Kept != kept {
		t.Errorf("stored with %d kept, want %d", st.Kept, kept)
	}
	if held, peak, _ := e.api.cpMem.state(); held != 0 || peak != limit+8*kept {
		t.Errorf("budget: %d bytes held after, %d at most; want 0 and the body and decoded list's %d", held, peak, limit+8*kept)
	}
}

// TestCheckpointKeepDerived: at any size limit the keep cap is the limit's
// share, above the old fixed 4,000,000 at the largest limit, and the
// memory budget fits the largest upload with its decoded list alone.
func TestCheckpointKeepDerived(t *testing.T) {
	for _, tc := range []struct {
		body, memory int64
		keep         int
	}{
		{0, 0, DefaultMaxCheckpointBody / CheckpointBytesPerKept},
		{MaxCheckpointBodyLimit, 0, MaxCheckpointBodyLimit / CheckpointBytesPerKept},
		{MaxCheckpointBodyLimit, 1, MaxCheckpointBodyLimit / CheckpointBytesPerKept},
		{1000, 1, 1000 / CheckpointBytesPerKept},
	} {
		c := Config{MaxCheckpointBody: tc.body, CheckpointMemory: tc.memory}
		c.fill()
		if c.MaxCheckpointKeep != tc.keep {
			t.Errorf("limit %d: MaxCheckpointKeep %d, want %d", tc.body, c.MaxCheckpointKeep, tc.keep)
		}
		if hold := c.MaxCheckpointBody + 8*int64(c.MaxCheckpointKeep); c.CheckpointMemory < hold {
			t.Errorf("limit %d: CheckpointMemory %d under the largest upload's %d", tc.body, c.CheckpointMemory, hold)
		}
	}
	if k := MaxCheckpointBodyLimit / CheckpointBytesPerKept; k <= 4_000_000 {
		t.Errorf("keep cap at the largest limit %d, not above the old 4,000,000", k)
	}
}
