package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"cspool/internal/spool"
)

// TestReadSized: ReadSized tells room the bytes of the entries it picked,
// the limits as Read's (a first entry larger than maxBytes whole), before
// it loads them, and returns those entries; an error from room is
// returned and nothing is loaded, not even an entry of 4 MiB.
func TestReadSized(t *testing.T) {
	const large = 4 << 20
	s := newOpener(t).fresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	batch := [][]byte{bytes.Repeat([]byte{1}, large), bytes.Repeat([]byte{2}, 10), bytes.Repeat([]byte{3}, 20), {}}
	if _, err := s.Append(ctx, "u", batch); err != nil {
		t.Fatal(err)
	}
	errFull := errors.New("full")
	for _, tc := range []struct {
		after    uint64
		maxCount int
		maxBytes int64
		told     int64
		entries  int
	}{
		{0, 10, 100, large, 1},
		{1, 10, 100, 30, 3},
		{1, 10, 15, 10, 1},
		{1, 2, 100, 30, 2},
		{3, 10, 100, 0, 1},
		{4, 10, 100, -1, 0},
		{0, 10, 1 << 30, large + 30, 4},
	} {
		name := fmt.Sprintf("after %d, at most %d entries and %d bytes", tc.after, tc.maxCount, tc.maxBytes)
		told := int64(-1)
		es, _, err := s.ReadSized(ctx, "u", tc.after, tc.maxCount, tc.maxBytes, nil, func(n int64) error { told = n; return nil })
		if err != nil || len(es) != tc.entries || told != tc.told {
			t.Errorf("ReadSized %s: %d entries, room told %d, %v; want %d entries, %d told", name, len(es), told, err, tc.entries, tc.told)
			continue
		}
		for i, e := range es {
			if want := tc.after + uint64(i) + 1; e.Pos != want || !bytes.Equal(e.Data, batch[want-1]) || e.Data == nil {
				t.Errorf("ReadSized %s: entry %d at %d with %d bytes; want the %d bytes appended at %d", name, i, e.Pos, len(e.Data), len(batch[want-1]), want)
			}
		}
		if tc.entries == 0 {
			continue
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		es, buf, err := s.ReadSized(ctx, "u", tc.after, tc.maxCount, tc.maxBytes, nil, func(int64) error { return errFull })
		runtime.ReadMemStats(&after)
		if !errors.Is(err, errFull) || es != nil || cap(buf) != 0 {
			t.Errorf("ReadSized %s, room refusing: %d entries, a buffer of %d, %v; want none and its error", name, len(es), cap(buf), err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; tc.told == large && alloc >= large/2 {
			t.Errorf("ReadSized %s, room refusing the %d bytes told: %d bytes allocated; want the entry never loaded", name, large, alloc)
		}
	}
}

// TestReadSizedBuffer: ReadSized copies the entries' bytes into the buffer
// given when they fit in its capacity, each entry's Data capped at its
// own end, and into a buffer of its own, returned, when they do not.
func TestReadSizedBuffer(t *testing.T) {
	const n, size = 50, 3000
	s := newOpener(t).fresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
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
			if &e.Data[0] != &got[i*size] {
				t.Fatalf("%s: entry %d is not at byte %d of the buffer returned", name, i, i*size)
			}
		}
	}
	buf := make([]byte, 0, n*size+100)
	es, got, err := s.ReadSized(ctx, "u", 0, n, 1<<30, buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if &got[:1][0] != &buf[:1][0] {
		t.Fatalf("ReadSized with room for the entries in the buffer given returned another buffer")
	}
	check("into a buffer with room", got, es)
	small := make([]byte, 0, size)
	es, got, err = s.ReadSized(ctx, "u", 0, n, 1<<30, small, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cap(got) < n*size || &got[:1][0] == &small[:1][0] {
		t.Fatalf("ReadSized with a buffer of %d bytes returned one of %d, want a new one of at least %d", cap(small), cap(got), n*size)
	}
	check("into a buffer too small", got, es)
}

// TestReadSizedAppendMeanwhile: entries appended between the pick and
// the load (here, while room is told) are not loaded: the entries
// returned are those whose size room was told.
func TestReadSizedAppendMeanwhile(t *testing.T) {
	s := newOpener(t).fresh(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Append(ctx, "u", [][]byte{make([]byte, 100), make([]byte, 200)}); err != nil {
		t.Fatal(err)
	}
	var told int64
	es, _, err := s.ReadSized(ctx, "u", 0, 10, 1<<20, nil, func(n int64) error {
		told = n
		_, err := s.Append(ctx, "u", [][]byte{make([]byte, 300), make([]byte, 400)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var loaded int64
	for _, e := range es {
		loaded += int64(len(e.Data))
	}
	if len(es) != 2 || told != 300 || loaded != told {
		t.Fatalf("ReadSized with 2 entries appended while room was told: %d entries of %d bytes, room told %d; want the 2 entries of 300 bytes told", len(es), loaded, told)
	}
	if es, err := s.Read(ctx, "u", 0, 10, 1<<20); err != nil || len(es) != 4 {
		t.Fatalf("Read after: %d entries, %v; want 4", len(es), err)
	}
}
