package syncer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// logLines is a log's text, safe for concurrent writers.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns the lines holding all of parts.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

// TestCheckpointRefusedAsTooLarge: when the spool refuses a checkpoint as
// larger than its limit (413), the daemon logs it once, as an error naming
// the checkpoint's size and the spool's answer (its limit) and what to
// raise, and uploads no checkpoint again at the following syncs, for
// checkpointRefusedWait; after it, it tries again.
func TestCheckpointRefusedAsTooLarge(t *testing.T) {
	t.Parallel()
	h := newHTTPSpool(t)
	var server, device logLines
	h.stop()
	h.mod = func(c *api.Config) {
		c.MaxCheckpointBody = 100 // smaller than any sealed checkpoint
		c.Logger = slog.New(slog.NewTextHandler(&server, nil))
	}
	h.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms, err := mailstore.Open(filepath.Join(h.dir, "device.db"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{User: "alice", UserKey: h.user, SpoolKey: h.spoolKey.Public(), Source: client, Store: ms,
		Logger: slog.New(slog.NewTextHandler(&device, nil)), CheckpointMin: 1})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	change := func() {
		// Another device's change: no body to keep, so a checkpoint is due.
		n++
		b, _, err := entry.Seal(&command.Command{Kind: command.CreateMailbox, Mailbox: fmt.Sprint("Box", n)}, h.user, h.user.Public(), "alice", nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.store.Append(ctx, "alice", [][]byte{b}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SyncOnce(ctx); err != nil {
			t.Fatal(err)
		}
	}
	puts := func() int { return server.count("method=PUT", "path=/v1/users/alice/checkpoint") }
	refusals := func() int {
		return device.count("level=ERROR", "refused this mailbox's checkpoint as too large", "--max-checkpoint-size",
			"checkpoint_bytes=", "limit of 100 bytes")
	}
	for range 3 {
		change()
		s.maybeCheckpoint(ctx)
	}
	if p, r, w := puts(), refusals(), device.count("writing checkpoint failed"); p != 1 || r != 1 || w != 0 {
		t.Fatalf("three syncs with a checkpoint due, over the spool's limit: %d uploads, %d refusals logged, %d other failures; want 1, 1, 0\n%s",
			p, r, w, device.buf.String())
	}
	if cp := s.Status().Checkpoint; cp != 0 {
		t.Errorf("status says checkpoint %d, want none stored", cp)
	}
	s.mu.Lock()
	s.cpRefused = s.cpRefused.Add(-checkpointRefusedWait)
	s.mu.Unlock()
	change()
	s.maybeCheckpoint(ctx)
	if p, r := puts(), refusals(); p != 2 || r != 2 {
		t.Errorf("after checkpointRefusedWait: %d uploads, %d refusals logged; want 2, 2", p, r)
	}
}
