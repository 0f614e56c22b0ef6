package mailstore

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// hookReader hands out r's bytes and calls at once, the first time more
// than half of them were read.
type hookReader struct {
	r     *bytes.Reader
	half  int64
	read  int64
	at    func()
	fired bool
}

func (h *hookReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.read += int64(n)
	if !h.fired && h.read > h.half {
		h.fired = true
		h.at()
	}
	return n, err
}

// killCopy copies the store's files into dir as a process killed at
// this moment leaves them, and returns the copy's path.
func killCopy(t *testing.T, s *Store, dir string) string {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(s.Path() + suffix)
		if err != nil && !(suffix != "" && os.IsNotExist(err)) {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "mail.db"+suffix), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "mail.db")
}

// TestRestoreTakesChangesWhileStaging: a restore's first step holds the
// store's write lock only while it writes a run of rows, not while it
// reads and decodes the state, nor while it checks the state: a store
// holding the messages of positions 5,801 to 6,000 restores 8,000 from
// their encoding, and halfway through the state's bytes the write lock is
// free and a local flag change on a message it holds is queued (it would
// wait for the whole step before); the restore's check finds the lock
// free too. The restored state holds the change, applied again on top,
// once, and queued once. The files as a kill right after the change
// leaves them hold the old state with the change queued and none of the
// restore's tables; restoring there again gives the same state.
func TestRestoreTakesChangesWhileStaging(t *testing.T) {
	if testing.Short() {
		t.Skip("restores 8,000 messages")
	}
	ctx := context.Background()
	held, body := syntheticState(6000)
	held.Messages = slices.DeleteFunc(held.Messages, func(m SnapMessage) bool { return m.Body <= 5800 })
	fetchAll := fetchSynthetic(body)
	s := openTest(t)
	if _, err := s.Restore(ctx, held, fetchAll); err != nil {
		t.Fatal(err)
	}
	enc, _ := encodedState(t, 8000)
	target := entryID(5900)
	flag := &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{target}}

	var events []string
	crash := t.TempDir()
	var crashed string
	r := &hookReader{r: bytes.NewReader(enc), half: int64(len(enc) / 2), at: func() {
		if !s.mu.TryLock() {
			t.Error("halfway through the state's bytes the store's write lock is held: a local change waits for the whole first step")
			return
		}
		s.mu.Unlock()
		res, err := s.Enqueue(ctx, command.ID{0xee, 2}, flag)
		if err != nil {
			t.Errorf("queueing a flag change while the state is staged: %v", err)
			return
		}
		if len(res.Outcomes) != 1 || res.Outcomes[0].Status != Applied {
			t.Errorf("the flag change queued during the restore: %+v, want applied provisionally", res.Outcomes)
		}
		events = append(events, "change queued")
		crashed = killCopy(t, s, crash)
	}}
	check := func(*Restored) error {
		if !s.mu.TryLock() {
			t.Error("the restore's check runs with the store's write lock held")
		} else {
			s.mu.Unlock()
		}
		events = append(events, "state checked")
		return nil
	}
	if _, _, err := s.RestoreFrom(ctx, r, check, fetchAll); err != nil {
		t.Fatalf("restore with a local change while its state is staged: %v", err)
	}
	events = append(events, "restored")
	if want := []string{"change queued", "state checked", "restored"}; !slices.Equal(events, want) {
		t.Fatalf("events %q, want %q", events, want)
	}
	flagged := func(s *Store, what string, wantMessages int) *State {
		t.Helper()
		st := dump(t, s)
		if len(st.Messages) != wantMessages {
			t.Fatalf("%s: %d messages, want %d", what, len(st.Messages), wantMessages)
		}
		found := false
		for _, m := range st.Messages {
			if m.ID == target {
				found = slices.Contains(m.Flags, `\Flagged`)
			} else if slices.Contains(m.Flags, `\Flagged`) {
				t.Fatalf("%s: message %s is flagged too", what, m.ID)
			}
		}
		if !found {
			t.Fatalf("%s: the message flagged on the device is not flagged", what)
		}
		if n, err := s.QueueLen(ctx); err != nil || n != 1 {
			t.Fatalf("%s: %d changes queued (%v), want the flag change once", what, n, err)
		}
		if n := stagedTables(t, s); n != 0 {
			t.Fatalf("%s: %d of the restore's tables", what, n)
		}
		return st
	}
	after := flagged(s, "after the restore", 8000)
	if after.Position != 8000 {
		t.Fatalf("after the restore: position %d, want 8000", after.Position)
	}
	if n, bad, unused := bodyCounts(t, s); n != 8000 || bad != 0 || unused != 0 {
		t.Fatalf("after the restore: %d bodies, %d miscounted, %d unused: want 8000, 0, 0", n, bad, unused)
	}

	if crashed == "" {
		t.Fatal("no copy was made at the local change")
	}
	c, err := Open(crashed, mimeform.Parser{})
	if err != nil {
		t.Fatalf("opening the files a kill during the restore left: %v", err)
	}
	defer c.Close()
	if st := flagged(c, "the files a kill left, opened", 200); st.Position != 6000 {
		t.Fatalf("the files a kill left: position %d, want the old 6000", st.Position)
	}
	if _, _, err := c.RestoreFrom(ctx, io.Reader(bytes.NewReader(enc)), nil, fetchAll); err != nil {
		t.Fatalf("restoring again after the kill: %v", err)
	}
	flagged(c, "restored again after the kill", 8000)
	if d := Diff(after, dump(t, c), 5); d != nil {
		t.Fatalf("restored after the kill, the state differs from the restore not killed: %v", d)
	}
}
