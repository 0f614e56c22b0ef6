package entry

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"testing/cryptotest"
	"testing/iotest"

	"cspool/internal/command"
)

// TestSealFromEqualsSeal: a streamed entry is the one Seal returns, byte
// for byte, given the same randomness, for bodies around every chunk and
// padding boundary, with and without a body prefix and padding, read in
// pieces of any size; Open opens it.
func TestSealFromEqualsSeal(t *testing.T) {
	f := newFixture(t)
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 100, MinPadded, ChunkSize - 200, ChunkSize, 3 * ChunkSize, parallelMin + 12345, 9*ChunkSize + 1, 2<<20 + 7}
	for i, n := range sizes {
		body := make([]byte, n)
		for j := range body {
			body[j] = byte(r.Uint32())
		}
		digest := sha256.Sum256(body)
		for _, tc := range []struct {
			name string
			cmd  *command.Command
			o    Options
		}{
			{"checkpoint", &command.Command{Kind: command.Checkpoint, Position: 7, Digest: digest[:], Body: body}, Options{}},
			{"unpadded", &command.Command{Kind: command.Checkpoint, Position: 7, Digest: digest[:], Body: body}, Options{NoPadding: true}},
			{"delivery with a prefix", deliver(body), Options{BodyPrefix: []byte("Received: by test\r\n")}},
		} {
			if n == 0 && tc.cmd.Kind == command.Deliver {
				continue // a delivery has a body
			}
			t.Run(fmt.Sprintf("%d/%s", n, tc.name), func(t *testing.T) {
				seed := uint64(100*i + len(tc.name))
				cryptotest.SetGlobalRandom(t, seed)
				o := tc.o
				want, wantID, err := Seal(tc.cmd, f.user, f.user.Public(), "alice", &o)
				if err != nil {
					t.Fatal(err)
				}
				cryptotest.SetGlobalRandom(t, seed)
				head := *tc.cmd
				head.Body = nil
				var out bytes.Buffer
				var src io.Reader = bytes.NewReader(body)
				if i%2 == 1 {
					src = iotest.HalfReader(src)
				}
				o = tc.o
				size, id, err := SealFrom(&out, &head, src, int64(len(body)), f.user, f.user.Public(), "alice", &o)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(out.Bytes(), want) || id != wantID || size != int64(len(want)) {
					t.Fatalf("streamed entry of %d bytes (id %v, size %d) differs from Seal's of %d (id %v)", out.Len(), id, size, len(want), wantID)
				}
				o2, err := Open(out.Bytes(), f.user, "alice", f.user.Public())
				if err != nil {
					t.Fatal(err)
				}
				if got := o2.Cmd.Body; !bytes.Equal(got[len(tc.o.BodyPrefix):], body) {
					t.Fatal("opened body differs")
				}
			})
		}
	}
}

// TestSealerLength: a body shorter or longer than announced is an error,
// not an entry.
func TestSealerLength(t *testing.T) {
	f := newFixture(t)
	c := &command.Command{Kind: command.Checkpoint, Position: 1, Digest: make([]byte, 32)}
	for _, tc := range []struct {
		announced int64
		given     int
	}{{1000, 999}, {1000, 1001}, {3 * ChunkSize, 3*ChunkSize - 1}, {3 * ChunkSize, 3*ChunkSize + 1}} {
		s, err := NewSealer(io.Discard, c, tc.announced, f.user, f.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := s.Write(make([]byte, tc.given))
		cerr := s.Close()
		if werr == nil && cerr == nil {
			t.Errorf("%d bytes written of %d announced: no error", tc.given, tc.announced)
		}
	}
	if _, err := NewSealer(io.Discard, deliver([]byte("x")), 1, f.user, f.user.Public(), "alice", nil); err == nil {
		t.Error("a streamed command with a Body: no error")
	}
	failing := errors.New("disk full")
	s, err := NewSealer(&failAfter{n: 100 << 10, err: failing}, c, 1<<20, f.user, f.user.Public(), "alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, werr := s.Write(make([]byte, 1<<20))
	if cerr := s.Close(); !errors.Is(werr, failing) && !errors.Is(cerr, failing) {
		t.Errorf("a writer failing: %v, %v; want its error", werr, cerr)
	}
}

// failAfter takes n bytes, then fails.
type failAfter struct {
	n   int
	err error
}

func (w *failAfter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, w.err
	}
	w.n -= len(p)
	return len(p), nil
}

// zeros reads as n zero bytes without allocating.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(p)), z.n))
	clear(p[:k])
	z.n -= int64(k)
	return k, nil
}

// TestSealFromMemory: streaming a body of 32 MB allocates a few chunks'
// worth, not the body (Seal allocates the whole entry).
func TestSealFromMemory(t *testing.T) {
	f := newFixture(t)
	const n = 32 << 20
	c := &command.Command{Kind: command.Checkpoint, Position: 1, Digest: make([]byte, 32)}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	size, _, err := SealFrom(io.Discard, c, &zeros{n}, n, f.user, f.user.Public(), "alice", nil)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("sealing %d bytes into %d allocated %d bytes; want at most 4 MiB", n, size, alloc)
	}
}
