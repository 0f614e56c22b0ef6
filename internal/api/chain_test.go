package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"cspool/internal/spool"
)

// chainOver returns the chain hashes of data (index 0: position 0).
func chainOver(data [][]byte) []spool.Hash {
	hs := make([]spool.Hash, len(data)+1)
	for i, d := range data {
		hs[i+1] = spool.ChainNext(hs[i], d)
	}
	return hs
}

func numberedData(n int) [][]byte {
	var d [][]byte
	for p := 1; p <= n; p++ {
		d = append(d, fmt.Appendf(nil, "entry %d", p))
	}
	return d
}

// TestReadChainHeaders: every read carries both hashes, in their one
// encoding; the client recomputes them from the entries; compaction does
// not change them, also at positions it deleted.
func TestReadChainHeaders(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.ChunkBytes = 40 }) // several chunks per response
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 30)
	want := chainOver(numberedData(30))

	resp, _ := e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/entries", query: "after=3", key: e.alice})
	for name, w := range map[string]spool.Hash{HeaderChainStart: want[3], HeaderChainHead: want[30]} {
		if got := resp.Header.Get(name); got != fmt.Sprintf("%x", w[:]) {
			t.Errorf("%s = %q, want %x", name, got, w[:])
		}
	}

	check := func(stage string) {
		t.Helper()
		for _, after := range []uint64{0, 1, 5, 17, 20, 29, 30} {
			for _, page := range []int{0, 1, 4} {
				lr, err := c.ReadLog(testCtx(t), after, page, 0, 0)
				if err != nil {
					t.Fatalf("%s: ReadLog(after %d, %d): %v", stage, after, page, err)
				}
				if !lr.Chained || lr.StartHash != want[after] || lr.HeadHash != want[30] {
					t.Errorf("%s: after %d: chained %v, start %x, head %x; want %x, %x",
						stage, after, lr.Chained, lr.StartHash[:4], lr.HeadHash[:4], want[after][:4], want[30][:4])
				}
			}
		}
		// A device that follows the log recomputes the head hash.
		h, after := want[0], uint64(0)
		for i := 0; i < 100 && after < 30; i++ {
			lr, err := c.ReadLog(testCtx(t), after, 3, 0, 0)
			if err != nil || lr.StartHash != h {
				t.Fatalf("%s: ReadLog(after %d): start %x, %v; want %x", stage, after, lr.StartHash[:4], err, h[:4])
			}
			for _, en := range lr.Entries {
				if en.Pos == after+1 {
					h = spool.ChainNext(h, en.Data)
				} else {
					h = want[en.Pos] // a hole: take the next hash from what is left
				}
				after = en.Pos
			}
			if after == lr.Head && h != lr.HeadHash {
				t.Errorf("%s: entries up to the head hash to %x, header says %x", stage, h[:4], lr.HeadHash[:4])
			}
		}
		if after != 30 {
			t.Fatalf("%s: read up to %d, want 30", stage, after)
		}
	}
	check("before compaction")
	if _, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: 20, Data: []byte("cp")}, []uint64{1, 3, 4, 10, 19}); err != nil {
		t.Fatal(err)
	}
	check("after compaction")
}

// TestReadChainUnderAppends: reads racing appends are consistent: each
// response starts at the reader's hash, and one that reaches its head hashes
// to the head it reports.
func TestReadChainUnderAppends(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.ChunkBytes = 100 })
	c := e.client(t, "alice", e.alice)
	const writers, batches = 4, 30
	var (
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				batch := [][]byte{fmt.Appendf(nil, "w%d b%d", w, b), fmt.Appendf(nil, "w%d b%d second", w, b)}
				if _, err := c.Append(testCtx(t), "alice", batch); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	var h spool.Hash
	after, reachedHead := uint64(0), 0
	for i := 0; i < 100_000; i++ {
		lr, err := c.ReadLog(testCtx(t), after, 5, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !lr.Chained || lr.StartHash != h {
			t.Fatalf("read after %d: chained %v, start %x, want %x", after, lr.Chained, lr.StartHash[:4], h[:4])
		}
		for _, en := range lr.Entries {
			h = spool.ChainNext(h, en.Data)
			after = en.Pos
		}
		if after == lr.Head {
			reachedHead++
			if h != lr.HeadHash {
				t.Fatalf("read up to the head %d: entries hash to %x, header says %x", after, h[:4], lr.HeadHash[:4])
			}
		}
		select {
		case <-done:
			if after == writers*batches*2 {
				t.Logf("%d reads reached the head they reported", reachedHead)
				return
			}
		default:
		}
	}
	t.Fatalf("read up to %d, want %d", after, writers*batches*2)
}

// TestReadChainMandatory: every read at or below the head carries both
// hashes, also from a store with no optional capability (every store keeps
// the chain); only a read that starts beyond the head has none, and ReadLog
// then reports Chained false.
func TestReadChainMandatory(t *testing.T) {
	plain := newEnv(t, false, func(c *Config) { c.Store = plainStore{c.Store} })
	chained := newEnv(t, false, nil)
	for _, e := range []*env{plain, chained} {
		appendNumbered(t, e.client(t, "alice", e.alice), 2)
	}
	for _, tc := range []struct {
		name  string
		e     *env
		after uint64
		want  bool
	}{
		{"store without checkpoints", plain, 0, true},
		{"at the head", chained, 2, true},
		{"beyond the head", chained, 9, false},
	} {
		c := tc.e.client(t, "alice", tc.e.alice)
		resp, _ := tc.e.send(t, rawRequest{method: "GET", path: "/v1/users/alice/entries", query: fmt.Sprintf("after=%d", tc.after), key: tc.e.alice})
		start, head := resp.Header.Get(HeaderChainStart), resp.Header.Get(HeaderChainHead)
		if (start != "" && head != "") != tc.want || (start == "") != (head == "") {
			t.Errorf("%s: chain headers %q, %q; want both: %v", tc.name, start, head, tc.want)
		}
		if lr, err := c.ReadLog(testCtx(t), tc.after, 0, 0, 0); err != nil || lr.Chained != tc.want {
			t.Errorf("%s: ReadLog: chained %v, %v; want %v, nil", tc.name, lr.Chained, err, tc.want)
		}
	}
}

// TestChainHeaderParse: ReadLog takes only both headers in their one
// encoding.
func TestChainHeaderParse(t *testing.T) {
	good := strings.Repeat("0123456789abcdef", 4)
	var want spool.Hash
	for i := range want {
		want[i] = []byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}[i%8]
	}
	for _, tc := range []struct {
		name        string
		start, head []string // nil: header absent
		ok, chained bool
	}{
		{"both", []string{good}, []string{good}, true, true},
		{"neither", nil, nil, true, false},
		{"start only", []string{good}, nil, false, false},
		{"head only", nil, []string{good}, false, false},
		{"uppercase", []string{strings.ToUpper(good)}, []string{good}, false, false},
		{"short", []string{good}, []string{good[1:]}, false, false},
		{"long", []string{good + "0"}, []string{good}, false, false},
		{"not hex", []string{good}, []string{"g" + good[1:]}, false, false},
		{"empty", []string{""}, []string{good}, false, false},
		{"spaces", []string{" " + good[1:]}, []string{good}, false, false},
		{"twice", []string{good, good}, []string{good}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ContentType)
				w.Header().Set("Cspool-Head", "0")
				w.Header().Set("Cspool-Checkpoint", "0")
				if tc.start != nil {
					w.Header()[HeaderChainStart] = tc.start
				}
				if tc.head != nil {
					w.Header()[HeaderChainHead] = tc.head
				}
				w.Write([]byte{0})
			}))
			defer srv.Close()
			c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			lr, err := c.ReadLog(testCtx(t), 0, 0, 0, 0)
			if !tc.ok {
				if !errors.Is(err, ErrProtocol) {
					t.Errorf("ReadLog: %v, want ErrProtocol", err)
				}
				return
			}
			if err != nil || lr.Chained != tc.chained {
				t.Fatalf("ReadLog: chained %v, %v; want %v", lr.Chained, err, tc.chained)
			}
			if tc.chained && (lr.StartHash != want || lr.HeadHash != want) {
				t.Errorf("hashes %x, %x; want %x", lr.StartHash, lr.HeadHash, want)
			}
		})
	}
}

// TestReadLogInto: the entries' bytes land one after another in the
// buffer's spare capacity, after what it holds, each slice capped at its
// own end; an entry that does not fit gets its own allocation; the bytes
// are the log's either way.
func TestReadLogInto(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.ChunkBytes = 40 }) // several chunks per response
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 30)
	want := numberedData(30)
	buf := append(make([]byte, 0, 64), "kept"...)
	lr, err := c.ReadLogInto(testCtx(t), 0, 0, 0, 0, buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.Entries) != 30 {
		t.Fatalf("read %d entries, want 30", len(lr.Entries))
	}
	off := len("kept")
	for i, en := range lr.Entries {
		if !bytes.Equal(en.Data, want[i]) {
			t.Fatalf("entry %d: %q, want %q", en.Pos, en.Data, want[i])
		}
		inBuf := unsafe.SliceData(en.Data) == unsafe.SliceData(buf[off:cap(buf)])
		if fits := off+len(want[i]) <= cap(buf); inBuf != fits {
			t.Fatalf("entry %d (%d bytes at %d of %d): in the buffer %v, want %v", en.Pos, len(en.Data), off, cap(buf), inBuf, fits)
		}
		if inBuf {
			if cap(en.Data) != len(en.Data) {
				t.Fatalf("entry %d: capacity %d past its %d bytes", en.Pos, cap(en.Data), len(en.Data))
			}
			off += len(en.Data)
		}
	}
	if off == len("kept") {
		t.Fatal("no entry was read into the buffer")
	}
	if string(buf[:len("kept")]) != "kept" {
		t.Fatalf("the buffer's own bytes became %q", buf[:len("kept")])
	}
}

// TestReadLogEach: every entry of the read is handed over as it is read,
// in order, with its index and the very bytes the read returns, and is
// never handed over twice.
func TestReadLogEach(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.ChunkBytes = 40 }) // several chunks per response
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 30)
	want := numberedData(30)
	var handed []spool.Entry
	lr, err := c.ReadLogEach(testCtx(t), 0, 0, 0, 0, make([]byte, 0, 256), func(i int, en spool.Entry) {
		if i != len(handed) {
			t.Errorf("entry %d handed over as index %d, want %d", en.Pos, i, len(handed))
		}
		handed = append(handed, en)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lr.Entries) != 30 || len(handed) != 30 {
		t.Fatalf("read %d entries and handed over %d, want 30 and 30", len(lr.Entries), len(handed))
	}
	for i, en := range lr.Entries {
		h := handed[i]
		if h.Pos != en.Pos || unsafe.SliceData(h.Data) != unsafe.SliceData(en.Data) || len(h.Data) != len(en.Data) {
			t.Fatalf("index %d: handed over position %d (%d bytes), the read returned position %d (%d bytes) elsewhere", i, h.Pos, len(h.Data), en.Pos, len(en.Data))
		}
		if !bytes.Equal(en.Data, want[i]) {
			t.Fatalf("entry %d: %q, want %q", en.Pos, en.Data, want[i])
		}
	}
}
