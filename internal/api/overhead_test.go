package api

import (
	"bufio"
	"bytes"
	"testing"
)

// TestFramingOverhead measures the read framing's bytes beyond the entries'
// own, for typical response shapes, and bounds it.
func TestFramingOverhead(t *testing.T) {
	tests := []struct {
		name      string
		first     uint64
		count     int
		size      int
		maxPerMil float64 // overhead bound in parts per thousand
	}{
		{"10 KB entries at position 1e6", 1_000_000, 800, 10 << 10, 1},
		{"1 KB commands", 5000, 1000, 1 << 10, 6},
		{"200-byte flag changes", 5000, 1000, 200, 30},
		{"one 50 MB message", 42, 1, 50 << 20, 0.001},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		ew := &entryWriter{w: bufio.NewWriter(&out)}
		data := make([]byte, tc.size)
		for i := range tc.count {
			if err := ew.write(tc.first+uint64(i), data); err != nil {
				t.Fatal(err)
			}
		}
		if err := ew.end(); err != nil {
			t.Fatal(err)
		}
		raw := tc.count * tc.size
		over := float64(out.Len()-raw) / float64(raw) * 1000
		t.Logf("%s: %d bytes for %d raw, overhead %.4f‰ (base64 in JSON: 333‰)", tc.name, out.Len(), raw, over)
		if over > tc.maxPerMil {
			t.Errorf("%s: overhead %.4f‰, want at most %.3f‰", tc.name, over, tc.maxPerMil)
		}
	}
}
