package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

// appendNumbered appends n entries "entry P" to alice's log through c.
func appendNumbered(t *testing.T, c *Client, n int) {
	t.Helper()
	var batch [][]byte
	for p := 1; p <= n; p++ {
		batch = append(batch, fmt.Appendf(nil, "entry %d", p))
	}
	if first, err := c.Append(testCtx(t), "alice", batch); err != nil || first != 1 {
		t.Fatalf("Append = %d, %v; want 1", first, err)
	}
}

// readAllLog reads the whole log with ReadLog, checking every entry's data,
// and returns the positions and the last checkpoint position reported.
func readAllLog(t *testing.T, c *Client, pageCount int) ([]uint64, uint64) {
	t.Helper()
	var pos []uint64
	var cp uint64
	after := uint64(0)
	for i := 0; i < 10_000; i++ {
		lr, err := c.ReadLog(testCtx(t), after, pageCount, 0, 0)
		if err != nil {
			t.Fatalf("ReadLog(after %d): %v", after, err)
		}
		cp = lr.Checkpoint
		if len(lr.Entries) == 0 {
			return pos, cp
		}
		for _, e := range lr.Entries {
			if want := fmt.Sprintf("entry %d", e.Pos); string(e.Data) != want {
				t.Errorf("entry %d holds %q, want %q", e.Pos, e.Data, want)
			}
			pos = append(pos, e.Pos)
		}
		after = lr.Entries[len(lr.Entries)-1].Pos
	}
	t.Fatal("ReadLog did not reach the end")
	return nil, 0
}

func TestCheckpointRoundTrip(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 10)

	_, err := c.Checkpoint(ctx)
	var ae *Error
	if !errors.Is(err, spool.ErrNoCheckpoint) || !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("Checkpoint before any: %v; want 404 matching spool.ErrNoCheckpoint", err)
	}
	lr, err := c.ReadLog(ctx, 0, 0, 0, 0)
	if err != nil || lr.Checkpoint != 0 || lr.Head != 10 || len(lr.Entries) != 10 {
		t.Fatalf("ReadLog before compaction = %d entries, head %d, checkpoint %d, %v; want 10, 10, 0", len(lr.Entries), lr.Head, lr.Checkpoint, err)
	}

	data := make([]byte, 5<<20)
	rand.Read(data)
	st, err := c.PutCheckpoint(ctx, spool.Checkpoint{Pos: 6, Data: data}, []uint64{4, 2, 4})
	if err != nil {
		t.Fatalf("PutCheckpoint: %v", err)
	}
	if want := (spool.CompactStats{Deleted: 4, Bytes: 4 * int64(len("entry 1")), Kept: 2}); st != want {
		t.Errorf("PutCheckpoint stats %+v, want %+v", st, want)
	}
	cp, err := c.Checkpoint(ctx)
	if err != nil || cp.Pos != 6 || !bytes.Equal(cp.Data, data) {
		t.Fatalf("Checkpoint = pos %d, %d bytes, %v; want pos 6 with the 5 MiB uploaded", cp.Pos, len(cp.Data), err)
	}
	pos, cpPos := readAllLog(t, c, 0)
	if fmt.Sprint(pos) != "[2 4 7 8 9 10]" || cpPos != 6 {
		t.Errorf("log after compaction: %v, checkpoint %d; want [2 4 7 8 9 10], 6", pos, cpPos)
	}

	for _, p := range []uint64{6, 5} {
		_, err := c.PutCheckpoint(ctx, spool.Checkpoint{Pos: p, Data: []byte("stale")}, nil)
		if !errors.Is(err, spool.ErrStaleCheckpoint) || !errors.As(err, &ae) || ae.Status != 409 || IsTemporary(err) {
			t.Errorf("PutCheckpoint at %d after 6: %v; want permanent 409 matching spool.ErrStaleCheckpoint", p, err)
		}
	}
	if cp, err := c.Checkpoint(ctx); err != nil || cp.Pos != 6 || !bytes.Equal(cp.Data, data) {
		t.Errorf("Checkpoint after stale uploads = pos %d, %v; want the one at 6", cp.Pos, err)
	}
	// An empty checkpoint with no kept entries, at the head.
	if _, err := c.PutCheckpoint(ctx, spool.Checkpoint{Pos: 10}, nil); err != nil {
		t.Fatalf("PutCheckpoint at the head: %v", err)
	}
	if cp, err := c.Checkpoint(ctx); err != nil || cp.Pos != 10 || len(cp.Data) != 0 {
		t.Errorf("empty Checkpoint = pos %d, %d bytes, %v; want pos 10, empty", cp.Pos, len(cp.Data), err)
	}
	if first, err := c.Append(ctx, "alice", [][]byte{[]byte("entry 11")}); err != nil || first != 11 {
		t.Errorf("Append after compacting everything = %d, %v; want 11", first, err)
	}
	if pos, _ := readAllLog(t, c, 0); fmt.Sprint(pos) != "[11]" {
		t.Errorf("log = %v, want [11]", pos)
	}
	// Bob's log is untouched and has no checkpoint.
	if _, err := e.client(t, "bob", e.bob).Checkpoint(ctx); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Errorf("bob's Checkpoint: %v, want ErrNoCheckpoint", err)
	}
}

func TestCheckpointAuth(t *testing.T) {
	e := newEnv(t, false, nil)
	appendNumbered(t, e.client(t, "alice", e.alice), 3)
	path := "/v1/users/alice/checkpoint"
	body, _ := EncodeCheckpoint(nil, []byte("cp"))
	asCheckpoint := func(r *http.Request) { r.Header.Set("Content-Type", CheckpointContentType) }
	tests := []struct {
		name string
		rr   rawRequest
		want int
	}{
		{"spool key uploads", rawRequest{method: "PUT", path: path, query: "pos=1", body: body, key: e.spoolK, tamper: asCheckpoint}, 403},
		{"spool key downloads", rawRequest{method: "GET", path: path, key: e.spoolK}, 403},
		{"other user uploads", rawRequest{method: "PUT", path: path, query: "pos=1", body: body, key: e.bob, tamper: asCheckpoint}, 403},
		{"other user downloads", rawRequest{method: "GET", path: path, key: e.bob}, 403},
		{"unknown key uploads", rawRequest{method: "PUT", path: path, query: "pos=1", body: body, key: e.stranger, tamper: asCheckpoint}, 401},
		{"tampered body", rawRequest{method: "PUT", path: path, query: "pos=1", body: body, key: e.alice, tamper: func(r *http.Request) {
			asCheckpoint(r)
			b, _ := EncodeCheckpoint([]uint64{1}, []byte("cp"))
			r.Body, r.ContentLength = readerOnly{bytes.NewReader(b)}, int64(len(b))
		}}, 401},
		{"tampered pos", rawRequest{method: "PUT", path: path, query: "pos=1", body: body, key: e.alice, tamper: func(r *http.Request) {
			asCheckpoint(r)
			r.URL.RawQuery = "pos=2"
		}}, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if resp, msg := e.send(t, tc.rr); resp.StatusCode != tc.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, msg, tc.want)
			}
		})
	}
	if _, err := e.store.LatestCheckpoint(testCtx(t), "alice"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Errorf("refused uploads stored a checkpoint: %v", err)
	}
	// Through the client: bob's key acting as alice.
	_, err := e.client(t, "alice", e.bob).PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: 1}, nil)
	if !errors.Is(err, ErrForbidden) {
		t.Errorf("PutCheckpoint with bob's key on alice's log: %v, want ErrForbidden", err)
	}
}

func TestCheckpointMalformed(t *testing.T) {
	e := newEnv(t, false, func(c *Config) {
		c.MaxCheckpointBody = 1000
		c.MaxCheckpointKeep = 3
	})
	appendNumbered(t, e.client(t, "alice", e.alice), 5)
	path := "/v1/users/alice/checkpoint"
	ok, _ := EncodeCheckpoint([]uint64{1, 2}, []byte("cp"))
	put := func(query string, body []byte) rawRequest {
		return rawRequest{method: "PUT", path: path, query: query, body: body, key: e.alice,
			tamper: func(r *http.Request) { r.Header.Set("Content-Type", CheckpointContentType) }}
	}
	tests := []struct {
		name string
		rr   rawRequest
		want int
	}{
		{"no pos", put("", ok), 400},
		{"pos zero", put("pos=0", ok), 400},
		{"pos not a number", put("pos=x", ok), 400},
		{"pos negative", put("pos=-1", ok), 400},
		{"pos beyond head", put("pos=6", ok), 400},
		{"pos beyond 2^63", put("pos=18446744073709551615", ok), 400},
		{"kept beyond pos", put("pos=1", ok), 400},
		{"empty body", put("pos=2", []byte{}), 400},
		{"count larger than the body", put("pos=2", []byte{3, 1}), 400},
		{"non-minimal count", put("pos=2", []byte{0x80, 0x00}), 400},
		{"zero difference", put("pos=2", []byte{2, 1, 0}), 400},
		{"overflowing position", put("pos=2", append([]byte{2, 1}, bytes.Repeat([]byte{0xff}, 9)...)), 400},
		{"too many kept", put("pos=5", []byte{4, 1, 1, 1, 1}), 413},
		{"body over the limit", put("pos=2", append([]byte{0}, make([]byte, 1000)...)), 413},
		{"entries content type", rawRequest{method: "PUT", path: path, query: "pos=2", body: ok, key: e.alice}, 415},
		{"get with a body", rawRequest{method: "GET", path: path, body: ok, key: e.alice}, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if resp, msg := e.send(t, tc.rr); resp.StatusCode != tc.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, msg, tc.want)
			}
		})
	}
	if _, err := e.store.LatestCheckpoint(testCtx(t), "alice"); !errors.Is(err, spool.ErrNoCheckpoint) {
		t.Errorf("refused uploads stored a checkpoint: %v", err)
	}
	if resp, msg := e.send(t, put("pos=2", ok)); resp.StatusCode != 200 {
		t.Errorf("well-formed upload after the bad ones: %d %s", resp.StatusCode, msg)
	}
}

// plainStore hides every capability but spool.Store.
type plainStore struct{ spool.Store }

func TestCheckpointNotImplemented(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.Store = plainStore{c.Store} })
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 2)
	var ae *Error
	if _, err := c.PutCheckpoint(ctx, spool.Checkpoint{Pos: 1}, nil); !errors.As(err, &ae) || ae.Status != 501 || IsTemporary(err) {
		t.Errorf("PutCheckpoint on a store that cannot compact: %v; want permanent 501", err)
	}
	if _, err := c.Checkpoint(ctx); !errors.As(err, &ae) || ae.Status != 501 || errors.Is(err, spool.ErrNoCheckpoint) {
		t.Errorf("Checkpoint on a store that cannot compact: %v; want 501, not ErrNoCheckpoint", err)
	}
	if lr, err := c.ReadLog(ctx, 0, 0, 0, 0); err != nil || lr.Checkpoint != 0 || len(lr.Entries) != 2 {
		t.Errorf("ReadLog = %d entries, checkpoint %d, %v; want 2 entries, checkpoint 0", len(lr.Entries), lr.Checkpoint, err)
	}
}

func TestReadCheckpointHeader(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.ChunkBytes = 40 }) // several chunks per response
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 30)
	get := rawRequest{method: "GET", path: "/v1/users/alice/entries", key: e.alice}
	resp, _ := e.send(t, get)
	if h := resp.Header.Get("Cspool-Checkpoint"); h != "0" {
		t.Errorf("Cspool-Checkpoint before compaction = %q, want 0", h)
	}
	keep := []uint64{1, 3, 4, 10, 19}
	if _, err := c.PutCheckpoint(testCtx(t), spool.Checkpoint{Pos: 20, Data: []byte("cp")}, keep); err != nil {
		t.Fatal(err)
	}
	resp, _ = e.send(t, get)
	if h := resp.Header.Get("Cspool-Checkpoint"); h != "20" {
		t.Errorf("Cspool-Checkpoint after compaction = %q, want 20", h)
	}
	// Holes are skipped, in one response and in pages.
	want := fmt.Sprint(append(keep, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30))
	for _, page := range []int{0, 1, 2, 4} {
		if pos, cp := readAllLog(t, c, page); fmt.Sprint(pos) != want || cp != 20 {
			t.Errorf("read in pages of %d: %v, checkpoint %d; want %s, 20", page, pos, cp, want)
		}
	}
	es, head, err := c.Read(testCtx(t), 0, 0, 0, 0)
	if err != nil || head != 30 || len(es) != 15 {
		t.Errorf("Read = %d entries, head %d, %v; want 15, 30", len(es), head, err)
	}
}

// compactingStore compacts alice's log right before its n-th Read, as a
// device would between two chunks of a response.
type compactingStore struct {
	*sqlitestore.Store
	reads atomic.Int32
	n     int32
	cp    spool.Checkpoint
}

func (s *compactingStore) Read(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64) ([]spool.Entry, error) {
	if s.reads.Add(1) == s.n {
		if _, err := s.Compact(ctx, user, s.cp, nil); err != nil {
			return nil, err
		}
	}
	return s.Store.Read(ctx, user, after, maxCount, maxBytes)
}

// ReadInto is Read's, for the chunks a response reads into its buffers.
func (s *compactingStore) ReadInto(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte) ([]spool.Entry, []byte, error) {
	if s.reads.Add(1) == s.n {
		if _, err := s.Compact(ctx, user, s.cp, nil); err != nil {
			return nil, buf, err
		}
	}
	return s.Store.ReadInto(ctx, user, after, maxCount, maxBytes, buf)
}

// TestCompactionDuringResponse: a compaction between two chunks of one
// response ends the response before the chunk that may lack entries, and
// the next read reports the new checkpoint.
func TestCompactionDuringResponse(t *testing.T) {
	var cs *compactingStore
	e := newEnv(t, false, func(c *Config) {
		cs = &compactingStore{Store: c.Store.(*sqlitestore.Store), n: 2, cp: spool.Checkpoint{Pos: 15, Data: []byte("cp")}}
		c.Store = cs
		c.ChunkBytes = 40 // five entries per chunk
	})
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 30)
	cs.reads.Store(0)
	lr, err := c.ReadLog(testCtx(t), 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := lr.Entries[len(lr.Entries)-1].Pos
	if lr.Checkpoint != 0 || last >= 15 {
		t.Fatalf("first response: checkpoint %d, entries up to %d; want checkpoint 0 and the first chunk only", lr.Checkpoint, last)
	}
	lr, err = c.ReadLog(testCtx(t), last, 0, 0, 0)
	if err != nil || lr.Checkpoint != 15 || lr.Checkpoint <= last {
		t.Fatalf("next response: checkpoint %d, %v; want 15, above the reader's position %d", lr.Checkpoint, err, last)
	}
	if len(lr.Entries) == 0 || lr.Entries[0].Pos != 16 {
		t.Errorf("next response starts at %v, want 16", lr.Entries)
	}
}

// TestReadLogNeedsCheckpointHeader: ReadLog refuses a response without the
// header, Read does not need it.
func TestReadLogNeedsCheckpointHeader(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Cspool-Head", "0")
		if r.URL.Query().Get("after") == "1" {
			w.Header().Set("Cspool-Checkpoint", "5") // beyond the head
		}
		w.Write([]byte{0})
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL, "alice", genKey(t), srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadLog(testCtx(t), 0, 0, 0, 0); !errors.Is(err, ErrProtocol) {
		t.Errorf("ReadLog without Cspool-Checkpoint: %v, want ErrProtocol", err)
	}
	if _, err := c.ReadLog(testCtx(t), 1, 0, 0, 0); !errors.Is(err, ErrProtocol) {
		t.Errorf("ReadLog with a checkpoint beyond the head: %v, want ErrProtocol", err)
	}
	if _, _, err := c.Read(testCtx(t), 0, 0, 0, 0); err != nil {
		t.Errorf("Read without Cspool-Checkpoint: %v", err)
	}
}

// ReadSized is Read's, for the first chunk of a response.
func (s *compactingStore) ReadSized(ctx context.Context, user string, after uint64, maxCount int, maxBytes int64, buf []byte, room func(int64) error) ([]spool.Entry, []byte, error) {
	if s.reads.Add(1) == s.n {
		if _, err := s.Compact(ctx, user, s.cp, nil); err != nil {
			return nil, buf, err
		}
	}
	return s.Store.ReadSized(ctx, user, after, maxCount, maxBytes, buf, room)
}
