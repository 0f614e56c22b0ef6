package syncer

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"cspool/internal/api"
	"cspool/internal/command"
	"cspool/internal/entry"
	"cspool/internal/keys"
	"cspool/internal/mailstore"
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
	s, _ := h.deviceWith("device", Config{Logger: slog.New(slog.NewTextHandler(&device, nil))})
	s.cfg.CheckpointMin = 1
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

// TestTailWithinKeepLimit: a spool takes a keep list of one position per
// api.CheckpointBytesPerKept bytes of its checkpoint size limit. A device
// that applied 300 flag changes writes a checkpoint of a few KB to a spool
// whose limit (12 KB) takes it, but not a keep list of its 10 live bodies
// and a tail of 300: the tail is cut to what the checkpoint's own size
// allows, and the checkpoint is stored, keeping the newest flag changes.
// With the whole tail the spool refused it (413), and compaction stopped.
func TestTailWithinKeepLimit(t *testing.T) {
	t.Parallel()
	if bytesPerKept != api.CheckpointBytesPerKept {
		t.Fatalf("bytesPerKept %d, the API's CheckpointBytesPerKept %d", bytesPerKept, api.CheckpointBytesPerKept)
	}
	h := newHTTPSpool(t)
	h.stop()
	h.mod = func(c *api.Config) { c.MaxCheckpointBody = 12 << 10 }
	h.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, ms := h.device("device")
	appendAll := func(author *keys.SecretKey, cmds []*command.Command) {
		t.Helper()
		var err error
		batch := make([][]byte, len(cmds))
		for i, c := range cmds {
			if batch[i], _, err = entry.Seal(c, author, h.user.Public(), "alice", nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.store.Append(ctx, "alice", batch); err != nil {
			t.Fatal(err)
		}
	}
	var mail []*command.Command
	for i := range 10 {
		mail = append(mail, msg(i))
	}
	appendAll(h.spoolKey, mail)
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, ms)
	var flags []*command.Command
	for i := range 300 {
		kind := command.SetFlags
		if i%20 >= 10 {
			kind = command.ClearFlags
		}
		flags = append(flags, &command.Command{Kind: kind, Flags: []string{`\Flagged`}, IDs: []command.ID{msgs[i%10].ID}})
	}
	appendAll(h.user, flags)
	if _, err := s.SyncOnce(ctx); err != nil {
		t.Fatal(err)
	}
	stats, pos, err := s.WriteCheckpoint(ctx)
	if err != nil || pos != 310 {
		t.Fatalf("checkpoint at %d: %v; want stored at 310", pos, err)
	}
	lr, err := h.store.Read(ctx, "alice", 10, 1000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	kept := len(lr)
	if kept == 0 || kept >= 300 || lr[len(lr)-1].Pos != 310 || stats.Deleted != 300-kept {
		t.Fatalf("after the checkpoint, %d flag changes kept (the last at %v), %d deleted; want the newest, fewer than 300, the rest deleted",
			kept, lr[len(lr)-1:], stats.Deleted)
	}
}

// TestCheckpointNearQuota: the spool says the user's log is near its
// quota (api.HeaderQuota on reads). A device holding 20 messages deletes
// one (of 20 KB): far from a tenth of its mail, but near the quota it
// writes a checkpoint at once, and the spool takes the message's room
// back (it waited for 1,000 entries and more than the messages left
// before); another deleted within the minute waits for the next.
//
// lateAnswer: the append's answer reaches the device only once its
// long-poll has brought the entry and the loop applied it, as under load
// when the submitting goroutine waits for a core. The checkpoint then
// waited for the next long-poll's end (5 minutes), the device not knowing
// yet that the deletion was its own.
func TestCheckpointNearQuota(t *testing.T) {
	t.Parallel()
	t.Run("answer first", func(t *testing.T) { t.Parallel(); checkpointNearQuota(t, false) })
	t.Run("answer late", func(t *testing.T) { t.Parallel(); checkpointNearQuota(t, true) })
}

// lateAppends is the API client whose appends return only once the loop
// applied what they appended (or ctx ended).
type lateAppends struct {
	*api.Client
	s *Syncer
}

func (l *lateAppends) AppendAt(ctx context.Context, user string, head uint64, batch [][]byte) (uint64, error) {
	first, err := l.Client.AppendAt(ctx, user, head, batch)
	if err == nil {
		_ = l.s.WaitApplied(ctx, first+uint64(len(batch))-1)
	}
	return first, err
}

func checkpointNearQuota(t *testing.T, lateAnswer bool) {
	h := newHTTPSpool(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	batch := make([][]byte, 20)
	for i := range batch {
		m := msg(i)
		m.Body = append(m.Body, bytes.Repeat([]byte("twenty kilobytes of a message\r\n"), 640)...)
		var err error
		if batch[i], _, err = entry.Seal(m, h.spoolKey, h.user.Public(), "alice", nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.store.Append(ctx, "alice", batch); err != nil {
		t.Fatal(err)
	}
	usage, err := h.store.Usage(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	h.stop()
	h.mod = func(c *api.Config) { c.Quota = usage + usage/20 } // 95% used
	h.start()
	var s *Syncer
	var ms *mailstore.Store
	if lateAnswer {
		client, err := api.NewClient("http://"+h.addr, "alice", h.user, nil)
		if err != nil {
			t.Fatal(err)
		}
		late := &lateAppends{Client: client}
		s, ms = h.deviceWith("device", Config{Source: late})
		late.s = s
	} else {
		s, ms = h.device("device")
	}
	s.cfg.CheckpointMin = 1000
	t.Cleanup(run(t, s))
	if err := s.WaitApplied(ctx, 20); err != nil {
		t.Fatal(err)
	}
	_, msgs := inbox(t, ms)
	if _, err := s.Submit(ctx, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[0].ID}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "a checkpoint after the EXPUNGE near the quota", func() bool { return s.Status().Checkpoint == 21 })
	after, err := h.store.Usage(ctx, "alice")
	if err != nil || after >= usage {
		t.Fatalf("usage %d (%v) after the checkpoint, want below the %d before", after, err, usage)
	}
	// Another within the minute: no second checkpoint for it (each is
	// the whole state).
	if _, err := s.Submit(ctx, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[1].ID}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the loop checks after its step; let it
	if cp := s.Status().Checkpoint; cp != 21 {
		t.Errorf("a second deletion within a minute brought a checkpoint at %d", cp)
	}
}
