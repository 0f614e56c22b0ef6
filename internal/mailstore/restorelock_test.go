package mailstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

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
	t.Parallel()
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

// schemaOf lists s's tables, indexes, triggers and views with their SQL.
func schemaOf(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	rows, err := s.rdb.Query("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var typ, name, tbl, q string
		if err := rows.Scan(&typ, &name, &tbl, &q); err != nil {
			t.Fatal(err)
		}
		out = append(out, typ+" "+name+" on "+tbl+": "+q)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRestoreTakesChangesWhileWriting: a restore writes the restored
// messages and entries before its last step, a run of them a
// transaction (buildState), and a local change made meanwhile is
// answered while the restore waits after its first run (before, they
// were written in the last step, under the store's write lock, and a
// change waited for all of them: 7.8 s at 100,000, minutes at a million).
// A store holding the messages of positions 3,901 to 4,200 restores
// 8,000 from their encoding; after the first run of messages (positions
// 1 to 4,096) a STORE \Flagged on 4,000, an EXPUNGE of 4,050 (its run is
// written, naming its body, which the expunge removes), an EXPUNGE of
// 4,150 (its run is not written: its body is missing then) and an
// APPEND are made on the device and answered while the hook still holds
// the restore; an APPEND of the bytes of position 7,000 was queued before
// the restore began (the restore uses the body it stored, which taking
// the change back at the last step removes and fetches again, under
// another id). The restored state holds them, applied again on top,
// once, and queued once; its schema is the store's as before (the copies
// renamed), its references are whole and every body is counted and used.
// The files as a kill right after the changes leaves them hold the old
// state with the changes queued and none of the restore's tables;
// restoring there again gives the same state.
func TestRestoreTakesChangesWhileWriting(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restores 8,000 messages")
	}
	ctx := context.Background()
	held, body := syntheticState(6000)
	held.Messages = slices.DeleteFunc(held.Messages, func(m SnapMessage) bool { return m.Body <= 3900 || m.Body > 4200 })
	fetchAll := fetchSynthetic(body)
	s := openTest(t)
	if _, err := s.Restore(ctx, held, fetchAll); err != nil {
		t.Fatal(err)
	}
	schema := schemaOf(t, s)
	early := command.ID{0xee, 0}
	if _, err := s.Enqueue(ctx, early, &command.Command{Kind: command.Append, Mailbox: "INBOX", Date: 1700000001000, Body: body(7000)}); err != nil {
		t.Fatal(err)
	}
	enc, _ := encodedState(t, 8000)
	flagged, built, pending := entryID(4000), entryID(4050), entryID(4150)
	appended := command.ID{0xee, 4}
	changes := []struct {
		id  command.ID
		cmd *command.Command
	}{
		{command.ID{0xee, 1}, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{flagged}}},
		{command.ID{0xee, 2}, &command.Command{Kind: command.Expunge, IDs: []command.ID{built}}},
		{command.ID{0xee, 3}, &command.Command{Kind: command.Expunge, IDs: []command.ID{pending}}},
		{appended, &command.Command{Kind: command.Append, Mailbox: "INBOX", Date: 1700000001000, Body: []byte(simpleMessage("appended while the restore writes"))}},
	}

	var events []string // appended on the restore's goroutine only
	crash := t.TempDir()
	var crashed string
	answered := make(chan error, 1)
	runs := 0
	s.buildHook = func() {
		if runs++; runs != 1 {
			return
		}
		go func() {
			for _, c := range changes {
				res, err := s.Enqueue(ctx, c.id, c.cmd)
				if err == nil && (len(res.Outcomes) != 1 || res.Outcomes[0].Status != Applied) {
					err = fmt.Errorf("%s queued: %+v, want applied provisionally", c.cmd.Kind, res.Outcomes)
				}
				if err != nil {
					answered <- fmt.Errorf("queueing a %s while the restore writes its messages: %w", c.cmd.Kind, err)
					return
				}
			}
			answered <- nil
		}()
		// Not a measure of time: the changes are answered at once or
		// wait for the restore, which waits here.
		select {
		case err := <-answered:
			if err != nil {
				t.Error(err)
				return
			}
			events = append(events, "changes answered")
			crashed = killCopy(t, s, crash)
		case <-time.After(time.Minute):
			t.Error("the changes made after the restore's first run of messages are not answered while it waits: they wait for the restore's last step")
		}
		events = append(events, "first run released")
	}
	if _, _, err := s.RestoreFrom(ctx, bytes.NewReader(enc), nil, fetchAll); err != nil {
		t.Fatalf("restore with local changes while it writes its messages: %v", err)
	}
	events = append(events, "restored")
	if want := []string{"changes answered", "first run released", "restored"}; !slices.Equal(events, want) {
		if len(events) == 2 {
			<-answered // the changes went in after the restore: wait for them
		}
		t.Fatalf("events %q, want %q", events, want)
	}

	// bodies: how many, each counted and used (0: not checked, in the
	// files a kill left, where the bodies the restore stored stay unused
	// until the next restore).
	check := func(s *Store, what string, position uint64, messages, bodies int) *State {
		t.Helper()
		st := dump(t, s)
		if st.Position != position || len(st.Messages) != messages {
			t.Fatalf("%s: position %d, %d messages: want %d, %d", what, st.Position, len(st.Messages), position, messages)
		}
		seen := map[command.ID]bool{}
		for _, m := range st.Messages {
			seen[m.ID] = true
			if isFlagged := slices.Contains(m.Flags, `\Flagged`); isFlagged != (m.ID == flagged) {
				t.Fatalf("%s: message %s flagged: %v", what, m.ID, isFlagged)
			}
		}
		if !seen[flagged] || seen[built] || seen[pending] || !seen[appended] || !seen[early] {
			t.Fatalf("%s: flagged %v, expunged %v and %v, appended %v and %v: want true, false, false, true, true",
				what, seen[flagged], seen[built], seen[pending], seen[appended], seen[early])
		}
		if n, err := s.QueueLen(ctx); err != nil || n != 1+len(changes) {
			t.Fatalf("%s: %d changes queued (%v), want %d", what, n, err, 1+len(changes))
		}
		if n := stagedTables(t, s); n != 0 {
			t.Fatalf("%s: %d of the restore's tables", what, n)
		}
		if n, bad, unused := bodyCounts(t, s); bodies > 0 && (n != bodies || bad != 0 || unused != 0) {
			t.Fatalf("%s: %d bodies, %d miscounted, %d unused: want %d, 0, 0", what, n, bad, unused, bodies)
		}
		if got := schemaOf(t, s); !slices.Equal(got, schema) {
			t.Fatalf("%s: the schema is not the store's:\n%q\nwant\n%q", what, got, schema)
		}
		var fk int
		if err := s.rdb.QueryRow("SELECT count(*) FROM pragma_foreign_key_check").Scan(&fk); err != nil || fk != 0 {
			t.Fatalf("%s: %d rows name a row that is not there (%v)", what, fk, err)
		}
		var ok string
		if err := s.rdb.QueryRow("PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
			t.Fatalf("%s: integrity check %q (%v)", what, ok, err)
		}
		return st
	}
	after := check(s, "after the restore", 8000, 8000, 7999)
	// The restored tables take writes as the store's did.
	if _, err := s.Enqueue(ctx, command.ID{0xee, 5}, &command.Command{Kind: command.ClearFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{entryID(7000)}}); err != nil {
		t.Fatalf("a change after the restore: %v", err)
	}

	if crashed == "" {
		t.Fatal("no copy was made at the local changes")
	}
	c, err := Open(crashed, mimeform.Parser{})
	if err != nil {
		t.Fatalf("opening the files a kill during the restore left: %v", err)
	}
	defer c.Close()
	check(c, "the files a kill left, opened", 6000, 300, 0)
	if _, _, err := c.RestoreFrom(ctx, bytes.NewReader(enc), nil, fetchAll); err != nil {
		t.Fatalf("restoring again after the kill: %v", err)
	}
	check(c, "restored again after the kill", 8000, 8000, 7999)
	if d := Diff(after, dump(t, c), 5); d != nil {
		t.Fatalf("restored after the kill, the state differs from the restore not killed: %v", d)
	}
}
