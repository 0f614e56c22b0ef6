package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"runtime/debug"
	"testing"

	"cspool/internal/testproc"
)

// TestResponseChunksReuseBuffers: a read answered in several chunks reads
// them into buffers the server uses again (spool.IntoReader), so serving
// it allocates about its bytes once (the driver's copy of each row), not
// twice: over a read of 3 MB, the second and later responses allocate
// less than one and a half times the bytes they send.
func TestResponseChunksReuseBuffers(t *testing.T) {
	testproc.SkipUnderRace(t) // the detector changes what is allocated
	e := newEnv(t, false, nil)
	c := e.client(t, "alice", e.alice)
	const n, size = 300, 10 << 10
	var batch [][]byte
	for i := 1; i <= n; i++ {
		batch = append(batch, append(fmt.Appendf(nil, "entry %d ", i), bytes.Repeat([]byte{'x'}, size)...))
	}
	if _, err := c.Append(testCtx(t), "alice", batch); err != nil {
		t.Fatal(err)
	}
	// A plain GET whose body is discarded: what is allocated is the
	// server's.
	read := func() int64 {
		q := url.Values{"after": {"0"}, "max_count": {fmt.Sprint(n)}, "max_bytes": {fmt.Sprint(8 << 20)}}
		resp, err := c.do(testCtx(t), "reading", http.MethodGet, "/v1/users/alice/entries", q, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	read() // the buffers made once
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	least := int64(-1)
	var sent int64
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sent = read()
		runtime.ReadMemStats(&after)
		if d := int64(after.TotalAlloc - before.TotalAlloc); least < 0 || d < least {
			least = d
		}
	}
	if sent < n*size {
		t.Fatalf("response of %d bytes, want at least %d", sent, n*size)
	}
	if least > sent*3/2 {
		t.Errorf("a response of %d bytes allocated %d bytes (%.2f times), want at most 1.5 times", sent, least, float64(least)/float64(sent))
	}
}
