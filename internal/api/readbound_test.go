package api

import (
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestReadBeyondBounds: a spool that answers a read with more entries or
// more bytes than the client asked for (the server only lowers them, and
// lets a first entry alone exceed max_bytes) gets ErrProtocol, read no
// further than the bound. Before, the client took whatever came: a spool
// that never ended its response filled the device's memory (a read asking
// for one entry took 1.9 million and 300 MB in 25 s, and went on).
func TestReadBeyondBounds(t *testing.T) {
	for _, tc := range []struct {
		name            string
		sizes           []int
		maxCount        int
		maxBytes        int64
		ok              bool
		wantMsgContains string
	}{
		{"as many as asked", []int{10, 10, 10}, 3, 0, true, ""},
		{"one more than asked", []int{10, 10, 10, 10}, 3, 0, false, "more than the 3 entries"},
		{"many more, one asked", make([]int, 5000), 1, 0, false, "more than the 1 entries"},
		{"beyond the default cap", make([]int, readCountCap+1), 0, 0, false, "more than the 10000 entries"},
		{"bytes as asked", []int{100, 100}, 0, 200, true, ""},
		{"a first entry beyond max_bytes", []int{1000}, 0, 200, true, ""},
		{"bytes beyond max_bytes", []int{100, 101}, 0, 200, false, "more than the 200 bytes"},
		{"an entry after a large first", []int{1000, 1}, 0, 200, false, "more than the 200 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b []byte
			for i, n := range tc.sizes {
				b = binary.AppendUvarint(b, uint64(i+1))
				b = binary.AppendUvarint(b, uint64(n))
				b = append(b, strings.Repeat("x", n)...)
			}
			b = append(b, 0)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ContentType)
				w.Header().Set("Cspool-Head", "1000000")
				w.Header().Set("Cspool-Checkpoint", "0")
				w.Write(b)
			}))
			defer srv.Close()
			c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			lr, err := c.ReadLog(testCtx(t), 0, tc.maxCount, tc.maxBytes, 0)
			if tc.ok {
				if err != nil || len(lr.Entries) != len(tc.sizes) {
					t.Fatalf("ReadLog: %d entries, %v; want %d and no error", len(lr.Entries), err, len(tc.sizes))
				}
				return
			}
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.wantMsgContains) {
				t.Fatalf("ReadLog: %d entries, %v; want ErrProtocol saying %q", len(lr.Entries), err, tc.wantMsgContains)
			}
		})
	}
}
