package api

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"
)

// Frozen vectors of the checkpoint upload framing (docs/API.md §5).
var checkpointVectors = []struct {
	keep []uint64
	data string
	hex  string
}{
	{nil, "", "00"},
	{nil, "cp", "006370"},
	{[]uint64{1}, "", "0101"},
	{[]uint64{2, 4, 5}, "x", "0302020178"},
	{[]uint64{300, 301}, "", "02ac0201"},
	{[]uint64{1 << 63}, "", "0180808080808080808001"},
	{[]uint64{1, 1<<64 - 1}, "", "0201feffffffffffffffff01"},
}

func TestCheckpointVectors(t *testing.T) {
	for _, v := range checkpointVectors {
		want, _ := hex.DecodeString(v.hex)
		got, err := EncodeCheckpoint(v.keep, []byte(v.data))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("EncodeCheckpoint(%v, %q) = %x, %v; want %s", v.keep, v.data, got, err, v.hex)
		}
		keep, data, err := DecodeCheckpoint(want, 10)
		if err != nil || fmt.Sprint(keep) != fmt.Sprint(v.keep) || string(data) != v.data {
			t.Errorf("DecodeCheckpoint(%s) = %v, %q, %v; want %v, %q", v.hex, keep, data, err, v.keep, v.data)
		}
	}
	for _, keep := range [][]uint64{{0}, {2, 2}, {3, 1}} {
		if _, err := EncodeCheckpoint(keep, nil); err == nil {
			t.Errorf("EncodeCheckpoint(%v) succeeded, want an error: positions must increase from 1", keep)
		}
	}
	for _, h := range []string{"", "80", "8000", "0100", "0201", "030101", "02ffffffffffffffffff0101", "0281808080808080808080"} {
		b, _ := hex.DecodeString(h)
		if keep, _, err := DecodeCheckpoint(b, 10); err == nil {
			t.Errorf("DecodeCheckpoint(%s) = %v, want an error", h, keep)
		}
	}
	if _, _, err := DecodeCheckpoint([]byte{3, 1, 1, 1}, 2); err == nil {
		t.Error("DecodeCheckpoint over the kept limit succeeded")
	}
}

// FuzzDecodeCheckpoint: an upload that decodes re-encodes to the same bytes
// (one encoding per upload), and nothing panics.
func FuzzDecodeCheckpoint(f *testing.F) {
	for _, v := range checkpointVectors {
		b, _ := hex.DecodeString(v.hex)
		f.Add(b)
	}
	f.Add([]byte{0x80, 0x00})
	f.Add([]byte{2, 1, 0})
	f.Add([]byte{5, 1})
	f.Fuzz(func(t *testing.T, body []byte) {
		keep, data, err := DecodeCheckpoint(body, 1<<20)
		if err != nil {
			return
		}
		again, err := EncodeCheckpoint(keep, data)
		if err != nil {
			t.Fatalf("decoded %x into kept positions %v that do not encode: %v", body, keep, err)
		}
		if !bytes.Equal(again, body) {
			t.Fatalf("decode then encode changed %x into %x", body, again)
		}
	})
}
