package mailstore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// sameDecoding checks that ReadSnapshot accepts b exactly when
// DecodeSnapshot does, with the same state, and refuses it with
// ErrSnapshot otherwise.
func sameDecoding(t *testing.T, name string, b []byte) {
	t.Helper()
	want, werr := DecodeSnapshot(b)
	got, gerr := ReadSnapshot(bytes.NewReader(b))
	switch {
	case (werr == nil) != (gerr == nil):
		t.Errorf("%s: DecodeSnapshot: %v; ReadSnapshot: %v", name, werr, gerr)
	case gerr != nil && !errors.Is(gerr, ErrSnapshot):
		t.Errorf("%s: ReadSnapshot: %v; want ErrSnapshot", name, gerr)
	case gerr == nil && !reflect.DeepEqual(got, want):
		t.Errorf("%s: ReadSnapshot gave\n%+v\nDecodeSnapshot\n%+v", name, got, want)
	}
}

// TestReadSnapshotAsDecode: ReadSnapshot accepts and refuses what
// DecodeSnapshot does: the vectors, snapshots of generated logs (several
// mailboxes, keywords, expunges) and of an adopted restoration (superseded
// entries, a chain hash), each with every byte changed in turn, cut at
// every length and with a byte more; TestSnapshotOneEncoding's
// non-canonical forms; the fuzz corpus.
func TestReadSnapshotAsDecode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var inputs [][]byte
	for _, v := range vectorSnapshots() {
		b, err := EncodeSnapshot(v.sn)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b)
	}
	for _, n := range []int{1, 12, 60} {
		s := openTest(t)
		mustApply(t, s, generateLog(uint64(n), n)...)
		sn, err := s.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := EncodeSnapshot(sn)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b)
	}
	for i, b := range inputs {
		sameDecoding(t, "input "+itoa(i), b)
		sameDecoding(t, "input "+itoa(i)+" with a byte more", append(bytes.Clone(b), 0))
		step := max(1, len(b)/400)
		for k := 0; k < len(b); k += step {
			sameDecoding(t, "input "+itoa(i)+" cut at "+itoa(k), b[:k])
			for _, x := range []byte{0x01, 0x20, 0x80, 0xff} {
				c := bytes.Clone(b)
				c[k] ^= x
				sameDecoding(t, "input "+itoa(i)+" byte "+itoa(k)+" ^ "+itoa(int(x)), c)
			}
		}
	}
	for _, b := range oneEncodingCases(t) {
		sameDecoding(t, "non-canonical form", b)
	}
	files, _ := filepath.Glob("testdata/fuzz/FuzzDecodeSnapshot/*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// The corpus files hold the input as a Go byte string literal.
		if i, j := bytes.IndexByte(b, '"'), bytes.LastIndexByte(b, '"'); i >= 0 && j > i {
			if s, err := unquote(b[i : j+1]); err == nil {
				sameDecoding(t, f, s)
			}
		}
	}
}

// FuzzReadSnapshot: ReadSnapshot and DecodeSnapshot agree on any input.
func FuzzReadSnapshot(f *testing.F) {
	for _, v := range vectorSnapshots() {
		b, err := EncodeSnapshot(v.sn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x01, 0x18, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) { sameDecoding(t, "input", b) })
}

func itoa(n int) string { return strconv.Itoa(n) }

func unquote(b []byte) ([]byte, error) {
	s, err := strconv.Unquote(string(b))
	return []byte(s), err
}
