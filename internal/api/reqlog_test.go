package api

import (
	"bytes"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log destination the server's goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRequestLogLine: every request, a parked long-poll and the renewal
// served after it on its connection included, is logged with one line of
// the same fields: id, method, path, status, bytes, ms, remote, the
// signer's key id and the error, if any.
func TestRequestLogLine(t *testing.T) {
	var out lockedBuffer
	e := newEnv(t, false, func(c *Config) {
		c.MaxWait = time.Second
		c.Logger = slog.New(slog.NewTextHandler(&out, nil))
	})
	ctx := testCtx(t)
	c := e.client(t, "alice", e.alice)
	for range 2 {
		if _, _, err := c.Read(ctx, 0, 0, 0, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.client(t, "alice", e.bob).Head(ctx); err == nil {
		t.Fatal("bob's key read alice's head")
	}
	id := e.alice.Public().KeyID()
	bobID := e.bob.Public().KeyID()
	var lines []string
	waitFor(t, "three request lines", func() bool {
		lines = nil
		for l := range strings.SplitSeq(strings.TrimSpace(out.String()), "\n") {
			if strings.Contains(l, `msg="http request"`) {
				lines = append(lines, l)
			}
		}
		return len(lines) == 3
	})
	for i, l := range lines {
		want := []string{"level=INFO", " id=", " method=GET", " status=200", " bytes=", " ms=", " remote=127.0.0.1:",
			" path=/v1/users/alice/entries", " key_id=" + hex.EncodeToString(id[:])}
		if i == 2 {
			want = []string{"level=INFO", " method=GET", " path=/v1/users/alice/head", " status=403",
				" key_id=" + hex.EncodeToString(bobID[:]), " err="}
		}
		for _, w := range want {
			if !strings.Contains(l, w) {
				t.Errorf("log line %d %q lacks %q", i+1, l, w)
			}
		}
	}
}
