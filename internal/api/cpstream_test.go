package api

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"cspool/internal/spool"
)

// TestPutCheckpointFromFile: a checkpoint uploaded from a section of a file
// (bytes before and after it that are no part of it) is stored as it is,
// by a client whose clock is off, so that the server refuses the first
// request and the body is read and sent again.
func TestPutCheckpointFromFile(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	appendNumbered(t, c, 10)
	c.now = func() time.Time { return time.Now().Add(-time.Hour) }

	data := make([]byte, 3<<20+17)
	rand.Read(data)
	f, err := os.Create(filepath.Join(t.TempDir(), "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, b := range [][]byte{[]byte("before"), data, []byte("after")} {
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	st, err := c.PutCheckpointFrom(ctx, 6, io.NewSectionReader(f, int64(len("before")), int64(len(data))), []uint64{4, 2, 4})
	if err != nil {
		t.Fatalf("PutCheckpointFrom: %v", err)
	}
	if want := (spool.CompactStats{Deleted: 4, Bytes: 4 * int64(len("entry 1")), Kept: 2}); st != want {
		t.Fatalf("PutCheckpointFrom = %+v, want %+v", st, want)
	}
	cp, err := c.Checkpoint(ctx)
	if err != nil || cp.Pos != 6 || !bytes.Equal(cp.Data, data) {
		t.Fatalf("Checkpoint = position %d, %d bytes (equal: %v), %v; want 6 and the %d bytes uploaded",
			cp.Pos, len(cp.Data), bytes.Equal(cp.Data, data), err, len(data))
	}
}
