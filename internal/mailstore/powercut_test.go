package mailstore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

// TestTornFirstBlockKeepsQueue: a power cut tore the database file's
// first block while a checkpoint copied page 1 back into it (the page
// holds the file's size, so the copy after nearly every commit that grew
// the file writes it; internal/devicedb's TestPowerCutKeepsCommits makes
// such cuts): the store opens again with every message and the change
// queued on the device and not yet sent. It was refused as encrypted with
// another key, and the daemon's hint said to move the file away, with
// that change in it.
func TestTornFirstBlockKeepsQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	key := &devicedb.Key{9}
	path := filepath.Join(t.TempDir(), "mail.db")
	s, err := OpenWith(path, Options{Parser: mimeform.Parser{}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	l := &testLog{}
	d1 := l.spool(deliverCmd(simpleMessage("one")))
	mustApply(t, s, d1)
	settled(s)
	s.mu.Lock()
	_, err = s.wdb.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	queued := entryID(1000)
	if _, err := s.Enqueue(ctx, queued, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{d1.ID}}); err != nil {
		t.Fatal(err)
	}
	// A message grows the file, so the WAL holds page 1 (the file's
	// size is in it) until it starts over, and a checkpoint copies it.
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("two")+strings.Repeat("a line of the body\r\n", 10000))))
	settled(s)

	// The files as the cut left them: the database's first block written
	// in its first sector only, the rest of it as it was.
	crashed := filepath.Join(t.TempDir(), "mail.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if suffix == "" {
			for i := 512; i < 4096; i++ {
				b[i] ^= 0x5a
			}
		}
		if err := os.WriteFile(crashed+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, err := OpenWith(crashed, Options{Parser: mimeform.Parser{}, Key: key})
	if err != nil {
		t.Fatalf("opening the store after the cut: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	q, err := r.Queue(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].ID != queued {
		t.Errorf("after the cut the queue holds %d changes, want the one queued (%s)", len(q), queued)
	}
	if n := countMessages(t, r); n != 2 {
		t.Errorf("after the cut %d messages, want 2", n)
	}
}
