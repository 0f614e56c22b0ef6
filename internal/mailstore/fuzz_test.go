package mailstore

import (
	"bytes"
	"context"
	"testing"
)

// FuzzDecodeSnapshot: a checkpoint state that decodes re-encodes to the same
// bytes (one encoding per state), and nothing panics. Seeds: real snapshots
// of generated logs and a few broken shapes; testdata/fuzz/FuzzDecodeSnapshot
// holds the inputs that once broke the rule.
func FuzzDecodeSnapshot(f *testing.F) {
	ctx := context.Background()
	for _, n := range []int{1, 12, 60} {
		s := openTest(f)
		mustApply(f, s, generateLog(uint64(n), n)...)
		sn, err := s.Snapshot(ctx)
		if err != nil {
			f.Fatal(err)
		}
		b, err := EncodeSnapshot(sn)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x01, 0x01})
	f.Add([]byte{0xa1, 0x01, 0x18, 0x01}) // version 1 with a non-minimal integer
	f.Fuzz(func(t *testing.T, b []byte) {
		sn, err := DecodeSnapshot(b)
		if err != nil {
			return
		}
		again, err := EncodeSnapshot(sn)
		if err != nil {
			t.Fatalf("decoded %x into a state that does not encode: %v", b, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("decode then encode changed\n%x\ninto\n%x", b, again)
		}
	})
}
