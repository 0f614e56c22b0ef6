package sqlitestore

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cspool/internal/spool"
)

// TestReadInto: ReadInto reads the entries' bytes into the buffer given
// when they fit in its capacity, each entry's Data capped at its own end
// (an append to one leaves the next as it was), and into a buffer of its
// own, returned, when they do not; the entries are Read's either way.
func TestReadInto(t *testing.T) {
	const n, size = 50, 3000
	s := openT(t, t.TempDir(), Options{})
	ctx := context.Background()
	batch := make([][]byte, n)
	for i := range batch {
		batch[i] = bytes.Repeat([]byte{byte(i)}, size)
	}
	if _, err := s.Append(ctx, "u", batch); err != nil {
		t.Fatal(err)
	}
	check := func(name string, got []byte, es []spool.Entry) {
		t.Helper()
		if len(es) != n {
			t.Fatalf("%s: %d entries, want %d", name, len(es), n)
		}
		for i, e := range es {
			if e.Pos != uint64(i+1) || !bytes.Equal(e.Data, batch[i]) {
				t.Fatalf("%s: entry %d: position %d, %d bytes; want %d and the %d bytes appended", name, i, e.Pos, len(e.Data), i+1, size)
			}
			if cap(e.Data) != len(e.Data) {
				t.Fatalf("%s: entry %d: capacity %d beyond its %d bytes", name, i, cap(e.Data), len(e.Data))
			}
			if len(got) > 0 && &e.Data[0] != &got[i*size] {
				t.Fatalf("%s: entry %d is not at byte %d of the buffer returned", name, i, i*size)
			}
		}
		_ = append(es[0].Data, 0xff)
		if !bytes.Equal(es[1].Data, batch[1]) {
			t.Fatalf("%s: appending to entry 1 changed entry 2", name)
		}
	}
	buf := make([]byte, 0, n*size+100)
	es, got, err := s.ReadInto(ctx, "u", 0, n, 1<<30, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &got[:1][0] != &buf[:1][0] {
		t.Fatalf("ReadInto with room for the entries returned another buffer")
	}
	check("into a buffer with room", got, es)
	small := make([]byte, 0, size)
	es, got, err = s.ReadInto(ctx, "u", 0, n, 1<<30, small)
	if err != nil {
		t.Fatal(err)
	}
	if cap(got) < n*size || &got[:1][0] == &small[:1][0] {
		t.Fatalf("ReadInto with a buffer of %d bytes returned one of %d, want a new one of at least %d", cap(small), cap(got), n*size)
	}
	check("into a buffer too small", got, es)
	es, err = s.Read(ctx, "u", 0, n, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	check("Read", nil, es)
}

// TestReadSized: ReadSized tells room the bytes of the entries it picked,
// the limits as Read's (a first entry larger than maxBytes whole), before
// it loads them; an error from room is returned and nothing is loaded,
// and room's nil is ReadInto.
func TestReadSized(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := s.Append(ctx, "u", [][]byte{make([]byte, 5000), make([]byte, 10), make([]byte, 20)}); err != nil {
		t.Fatal(err)
	}
	errFull := errors.New("full")
	for _, tc := range []struct {
		after    uint64
		maxBytes int64
		told     int64
		entries  int
	}{
		{0, 100, 5000, 1},
		{1, 100, 30, 2},
		{1, 15, 10, 1},
		{3, 100, -1, 0},
	} {
		told := int64(-1)
		es, _, err := s.ReadSized(ctx, "u", tc.after, 10, tc.maxBytes, nil, func(n int64) error { told = n; return nil })
		if err != nil || len(es) != tc.entries || told != tc.told {
			t.Errorf("ReadSized after %d within %d bytes: %d entries, room told %d, %v; want %d entries, %d told", tc.after, tc.maxBytes, len(es), told, err, tc.entries, tc.told)
		}
		if tc.entries == 0 {
			continue
		}
		es, buf, err := s.ReadSized(ctx, "u", tc.after, 10, tc.maxBytes, nil, func(int64) error { return errFull })
		if !errors.Is(err, errFull) || es != nil || cap(buf) != 0 {
			t.Errorf("ReadSized after %d, room refusing: %d entries, a buffer of %d, %v; want none and its error", tc.after, len(es), cap(buf), err)
		}
	}
}
