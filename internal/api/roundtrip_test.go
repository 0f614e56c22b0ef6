package api

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"cspool/internal/spool"
)

func TestRoundTrip(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	big := make([]byte, 8<<20)
	rand.Read(big)
	batches := [][][]byte{
		{[]byte("hello"), {0, 0, 0}, {}, []byte("\x00\xff\r\n.\r\n")},
		{big},
		{[]byte("last")},
	}
	var want [][]byte
	for _, b := range batches {
		first, err := c.Append(ctx, "alice", b)
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if first != uint64(len(want))+1 {
			t.Errorf("Append returned first %d, want %d", first, len(want)+1)
		}
		want = append(want, b...)
	}
	head, err := c.Head(ctx)
	if err != nil || head != uint64(len(want)) {
		t.Fatalf("Head = %d, %v; want %d", head, err, len(want))
	}
	var got []spool.Entry
	for after := uint64(0); after < head; {
		es, h, err := c.Read(ctx, after, 0, 0, 0)
		if err != nil {
			t.Fatalf("Read after %d: %v", after, err)
		}
		if h != head || len(es) == 0 {
			t.Fatalf("Read after %d: %d entries, head %d; want some, head %d", after, len(es), h, head)
		}
		got = append(got, es...)
		after = es[len(es)-1].Pos
	}
	if len(got) != len(want) {
		t.Fatalf("read %d entries, want %d", len(got), len(want))
	}
	for i, g := range got {
		if g.Pos != uint64(i+1) || !bytes.Equal(g.Data, want[i]) {
			t.Errorf("entry %d: pos %d, %d bytes; want pos %d, %d bytes", i, g.Pos, len(g.Data), i+1, len(want[i]))
		}
	}
	// Bob sees his own, empty log.
	es, h, err := e.client(t, "bob", e.bob).Read(ctx, 0, 0, 0, 0)
	if err != nil || len(es) != 0 || h != 0 {
		t.Errorf("bob's Read = %d entries, head %d, %v; want an empty log", len(es), h, err)
	}
}

func TestReadLimits(t *testing.T) {
	e := newEnv(t, false, func(c *Config) {
		c.MaxReadCount = 8
		c.MaxReadBytes = 1000
		c.ChunkBytes = 250 // several store reads per response
	})
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	var batch [][]byte
	for i := range 20 {
		batch = append(batch, bytes.Repeat([]byte{byte(i)}, 100))
	}
	batch[15] = make([]byte, 3000) // larger than every byte limit
	if _, err := c.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		after      uint64
		count      int
		bytes      int64
		wantFirst  uint64
		wantNumber int
	}{
		{0, 0, 0, 1, 8},        // server caps max_count at 8
		{0, 5, 0, 1, 5},        // max_count
		{0, 0, 250, 1, 2},      // max_bytes
		{0, 0, 50, 1, 1},       // at least one entry
		{0, 100, 100000, 1, 8}, // caps
		{12, 8, 1000, 13, 3},   // stops before the big entry at 16
		{15, 8, 1000, 16, 1},   // the big entry alone
		{16, 8, 1000, 17, 4},   // to the end
		{20, 8, 1000, 0, 0},    // nothing after the head
		{1000, 8, 1000, 0, 0},  // far past the head
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("after=%d,count=%d,bytes=%d", tc.after, tc.count, tc.bytes), func(t *testing.T) {
			es, head, err := c.Read(ctx, tc.after, tc.count, tc.bytes, 0)
			if err != nil {
				t.Fatal(err)
			}
			if head != 20 {
				t.Errorf("head %d, want 20", head)
			}
			if len(es) != tc.wantNumber {
				t.Fatalf("%d entries, want %d", len(es), tc.wantNumber)
			}
			for i, en := range es {
				if want := tc.wantFirst + uint64(i); en.Pos != want || !bytes.Equal(en.Data, batch[want-1]) {
					t.Errorf("entry %d: pos %d, want %d with its data", i, en.Pos, want)
				}
			}
		})
	}
}

func TestTLS(t *testing.T) {
	e := newEnv(t, false, nil)
	ts := httptest.NewTLSServer(e.api)
	t.Cleanup(ts.Close)
	ctx := testCtx(t)
	c, err := NewClient(ts.URL, "alice", e.alice, ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "alice", [][]byte{[]byte("over tls")}); err != nil {
		t.Fatalf("Append over TLS: %v", err)
	}
	es, _, err := c.Read(ctx, 0, 0, 0, 0)
	if err != nil || len(es) != 1 || string(es[0].Data) != "over tls" {
		t.Fatalf("Read over TLS = %v, %v", es, err)
	}
}

func TestErrorKinds(t *testing.T) {
	e := newEnv(t, false, func(c *Config) { c.RetryAfter = 7 * time.Second })
	ctx := testCtx(t)
	// Permanent: a key the server does not know.
	_, err := e.client(t, "alice", e.stranger).Head(ctx)
	if !errors.Is(err, ErrUnauthenticated) || IsTemporary(err) {
		t.Errorf("unknown key: %v; want permanent ErrUnauthenticated", err)
	}
	// Temporary: the store is gone (503).
	e.store.Close()
	_, err = e.client(t, "alice", e.alice).Append(ctx, "alice", [][]byte{[]byte("x")})
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 503 || !IsTemporary(err) || !errors.Is(err, spool.ErrUnavailable) {
		t.Errorf("closed store: %v; want temporary 503 matching spool.ErrUnavailable", err)
	}
	// Temporary: nobody listens.
	e.srv.Close()
	_, err = e.client(t, "alice", e.alice).Head(ctx)
	if !errors.Is(err, ErrTransport) || !IsTemporary(err) {
		t.Errorf("server down: %v; want temporary ErrTransport", err)
	}
}

func TestNewClientErrors(t *testing.T) {
	k := genKey(t)
	for _, u := range []string{"ftp://x", "http://", "http://h/prefix", "http://h?x=1", "::"} {
		if _, err := NewClient(u, "alice", k, nil); err == nil {
			t.Errorf("NewClient(%q) succeeded, want an error", u)
		}
	}
	if _, err := NewClient("http://h", "bad/name", k, nil); err == nil {
		t.Error("NewClient accepted a bad user name")
	}
	if _, err := NewClient("http://h", "alice", nil, nil); err == nil {
		t.Error("NewClient accepted a nil key")
	}
}
