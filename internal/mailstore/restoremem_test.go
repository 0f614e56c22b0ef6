package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// syntheticState is a checkpoint's state of n messages of about 2 KB in
// INBOX (as a new store has it), the bodies at positions 1 to n, at
// position n: what a new device restores from, made without applying a
// log. body returns the bytes at a position.
func syntheticState(n int) (sn *Snapshot, body func(uint64) []byte) {
	body = func(p uint64) []byte {
		var b strings.Builder
		fmt.Fprintf(&b, "From: Sender %d <s%d@example.org>\r\nTo: rcpt@example.org\r\nSubject: restore %d\r\n", p, p%97, p)
		fmt.Fprintf(&b, "Date: Tue, 14 Nov 2023 10:00:00 +0000\r\nMessage-ID: <restore-%d@example.org>\r\n\r\n", p)
		for b.Len() < 2000 {
			b.WriteString("lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n")
		}
		return []byte(b.String())
	}
	inbox := InboxID()
	sn = &Snapshot{Version: SnapshotVersion, Position: uint64(n), NextUIDValidity: 7,
		Mailboxes:     []SnapMailbox{{ID: inbox[:], Name: "INBOX", UIDValidity: 1, UIDNext: uint32(n) + 1, ModSeq: uint64(n)}},
		Subscriptions: []string{"INBOX"}}
	sn.Messages = make([]SnapMessage, n)
	ents := make([][]byte, n)
	for i := range sn.Messages {
		p := uint64(i + 1)
		id := entryID(p)
		d := sha256.Sum256(body(p))
		sn.Messages[i] = SnapMessage{ID: id[:], UID: uint32(p), Flags: uint8(p % 3), Date: 1700000000000, Size: 2000, ModSeq: p, Body: p, Digest: d[:]}
		ents[i] = binary.BigEndian.AppendUint64(id[:], p)
	}
	slices.SortFunc(sn.Messages, func(a, b SnapMessage) int { return bytes.Compare(a.ID, b.ID) })
	slices.SortFunc(ents, bytes.Compare)
	sn.Entries = bytes.Join(ents, nil)
	return sn, body
}

// fetchSynthetic is a restore's fetch that serves every position asked for
// with body's bytes.
func fetchSynthetic(body func(uint64) []byte) BodyFetcher {
	return func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		for _, p := range need {
			if err := put(p, body(p)); err != nil {
				return err
			}
		}
		return nil
	}
}

// encodedState is the encoding of syntheticState(n), made in a frame of
// its own: the decoded state is garbage once it returns.
func encodedState(t *testing.T, n int) ([]byte, func(uint64) []byte) {
	sn, body := syntheticState(n)
	enc, err := EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	return enc, body
}

// liveHeap is the Go heap in use after two collections (what a finalizer
// held goes in the second).
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// TestRestoreHeap: a new device restoring a state of 30,000 messages read
// from its encoding holds little of it in the Go heap: the messages and
// entries go into the restore's tables as they are decoded, the bodies
// are asked for a run at a time, and the changes of a mailbox past
// restoreChangesMax are one MailboxRestored. The heap in use is taken at
// every call of the fetcher (after the state is read and checked, while
// the bodies are stored) and once the restore has returned, with its
// Result: 0.5 and 0.1 MB (the fetcher's run of 4,096 positions and
// digests). Decoding the state whole (ReadSnapshot) and restoring it, as
// before, held 8.7 MB at the fetcher and 4.1 MB after (the Result's
// 30,000 MessageAdded), about 290 and 140 bytes a message.
func TestRestoreHeap(t *testing.T) {
	testproc.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("restores 30,000 messages")
	}
	const n = 30000
	ctx := context.Background()
	enc, body := encodedState(t, n)
	s := openTest(t)
	all := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		for _, p := range need {
			if err := put(p, body(p)); err != nil {
				return err
			}
		}
		return nil
	}
	// The store restores a state of 10 messages first, so that what its
	// first restore sets up once is not counted.
	small, _ := encodedState(t, 10)
	if _, _, err := s.RestoreFrom(ctx, bytes.NewReader(small), nil, all); err != nil {
		t.Fatal(err)
	}
	base := liveHeap()
	var peak int64
	fetch := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		peak = max(peak, liveHeap()-base)
		for _, p := range need {
			if err := put(p, body(p)); err != nil {
				return err
			}
		}
		return nil
	}
	res, info, err := s.RestoreFrom(ctx, bytes.NewReader(enc), nil, fetch)
	if err != nil {
		t.Fatal(err)
	}
	after := liveHeap() - base
	runtime.KeepAlive(res)
	if info.Messages != n || info.Bodies != n {
		t.Fatalf("restored %d messages, %d bodies: want %d", info.Messages, info.Bodies, n)
	}
	got, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := EncodeSnapshot(got); !bytes.Equal(again, enc) {
		t.Fatal("the restored store's state is not the one restored")
	}
	// INBOX's changes are one MailboxRestored; the other mailboxes of a
	// new store are not in the state.
	for _, c := range res.Changes {
		if (c.Name == "INBOX") != (c.Kind == MailboxRestored) || c.Kind == MessageAdded {
			t.Errorf("change %+v: want INBOX's MailboxRestored, and the other mailboxes deleted", c)
		}
	}
	t.Logf("%d messages (encoded %.1f MB): heap in use %.2f MB at the fetcher, %.2f MB after with the Result",
		n, float64(len(enc))/1e6, float64(peak)/1e6, float64(after)/1e6)
	// The state decoded whole is about 160 bytes a message: allow a
	// fifth of that.
	if limit := int64(32 * n); peak > limit || after > limit {
		t.Errorf("the restore held %d bytes at the fetcher and %d after, more than %d (32 a message): the state is held", peak, after, limit)
	}
}

// stagedTables counts the restore's tables in s's file.
func stagedTables(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.rdb.QueryRow("SELECT count(*) FROM sqlite_master WHERE name LIKE 'restore%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestoreFromFaults: a restore that stages its state in the database
// file (restorestage.go) and fails, or whose process dies, in its middle
// leaves the store as it was, without the restore's tables: a state cut
// off among its messages, a fetcher that fails at its second run of
// bodies (after the first is stored), and the files as a crash at that
// moment leaves them, opened again. Then the restore runs in full.
func TestRestoreFromFaults(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restores 6,000 messages")
	}
	ctx := context.Background()
	small, body := syntheticState(200)
	s := openTest(t)
	smallEnc, err := EncodeSnapshot(small)
	if err != nil {
		t.Fatal(err)
	}
	fetchAll := fetchSynthetic(body)
	if _, _, err := s.RestoreFrom(ctx, bytes.NewReader(smallEnc), nil, fetchAll); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s)
	unchanged := func(what string) {
		t.Helper()
		if after := dump(t, s); !reflect.DeepEqual(after, before) {
			t.Fatalf("%s: the store changed", what)
		}
		if n := stagedTables(t, s); n != 0 {
			t.Fatalf("%s: %d of the restore's tables left", what, n)
		}
	}
	big, _ := syntheticState(6000)
	enc, err := EncodeSnapshot(big)
	if err != nil {
		t.Fatal(err)
	}

	_, _, err = s.RestoreFrom(ctx, bytes.NewReader(enc[:len(enc)/2]), nil, fetchAll)
	var se *StateError
	if !errors.As(err, &se) || !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a state cut off in its middle: %v, want a *StateError of ErrSnapshot", err)
	}
	unchanged("a state cut off")

	crash := t.TempDir()
	calls := 0
	failing := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		if calls++; calls == 2 {
			for _, suffix := range []string{"", "-wal"} {
				b, err := os.ReadFile(s.Path() + suffix)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(crash, "mail.db"+suffix), b, 0o600); err != nil {
					return err
				}
				t.Logf("at the second run of bodies: mail.db%s of %d bytes", suffix, len(b))
			}
			return errors.New("the spool went away")
		}
		return fetchAll(ctx, need, put)
	}
	if _, _, err := s.RestoreFrom(ctx, bytes.NewReader(enc), nil, failing); err == nil || !strings.Contains(err.Error(), "the spool went away") {
		t.Fatalf("a fetcher failing at its second run: %v", err)
	}
	unchanged("a fetcher failing at its second run")

	crashed, err := Open(filepath.Join(crash, "mail.db"), mimeform.Parser{})
	if err != nil {
		t.Fatalf("opening the files a crash in the restore left: %v", err)
	}
	defer crashed.Close()
	if d := Diff(before, dump(t, crashed), 5); d != nil {
		t.Fatalf("the files a crash in the restore left hold another state: %v", d)
	}
	if n := stagedTables(t, crashed); n != 0 {
		t.Fatalf("the files a crash in the restore left hold %d of its tables", n)
	}

	if _, _, err := s.RestoreFrom(ctx, bytes.NewReader(enc), nil, fetchAll); err != nil {
		t.Fatal(err)
	}
	got, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := EncodeSnapshot(got); !bytes.Equal(again, enc) {
		t.Fatal("the restored store's state is not the one restored")
	}
	if n := stagedTables(t, s); n != 0 {
		t.Fatalf("%d of the restore's tables left after it", n)
	}
}

// TestRestoreSharedBodies: a restore counts the references of the bodies
// it stores itself only where they can be other than one (recount): two
// messages of one entry's body, and two entries with the same bytes,
// stored once. Every body's count is the number of its messages,
// and none is left unused.
func TestRestoreSharedBodies(t *testing.T) {
	ctx := context.Background()
	sn, body := syntheticState(6)
	bytesAt := func(p uint64) []byte {
		if p == 3 {
			return body(4)
		}
		return body(p)
	}
	for i := range sn.Messages {
		m := &sn.Messages[i]
		switch m.Body {
		case 2:
			m.Body = 1
		}
		d := sha256.Sum256(bytesAt(m.Body))
		m.Digest = d[:]
	}
	s := openTest(t)
	fetch := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		for _, p := range need {
			if err := put(p, bytesAt(p)); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := s.Restore(ctx, sn, fetch); err != nil {
		t.Fatal(err)
	}
	var bad, bodies, unused int
	if err := s.rdb.QueryRow(`SELECT count(*), coalesce(sum(refs != (SELECT count(*) FROM messages WHERE body = bid)), 0),
		coalesce(sum(NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)), 0) FROM bodies`).Scan(&bodies, &bad, &unused); err != nil {
		t.Fatal(err)
	}
	if bodies != 4 || bad != 0 || unused != 0 {
		t.Fatalf("%d bodies, %d with a count other than their messages', %d unused: want 4, 0, 0", bodies, bad, unused)
	}
	if stagedTables(t, s) != 0 {
		t.Fatal("the restore's tables are left")
	}
}

// bodyCounts returns how many bodies s holds, how many of them have a
// count of references other than their messages', and how many no
// message uses.
func bodyCounts(t *testing.T, s *Store) (bodies, bad, unused int) {
	t.Helper()
	if err := s.rdb.QueryRow(`SELECT count(*), coalesce(sum(refs != (SELECT count(*) FROM messages WHERE body = bid)), 0),
		coalesce(sum(NOT EXISTS (SELECT 1 FROM messages WHERE body = bid)), 0) FROM bodies`).Scan(&bodies, &bad, &unused); err != nil {
		t.Fatal(err)
	}
	return bodies, bad, unused
}

// TestRestoreBodiesFirst: a restore commits the bodies it stores, a run
// of 4,096 at a time, before the transaction that writes the state
// (storeBodies), and a failure or a crash after some of them are
// committed still leaves the old state, and nothing of the restore that a
// later one does not use or remove. A store at 200 messages restores 6,000
// with a fetcher that fails at its second run: at that moment the first
// run's bodies are committed (a reader sees them) and a copy of the files
// is what a crash leaves. The failed restore leaves no body unused; the
// copy, opened, holds the old state, and then restores another state,
// whose messages use the bodies from position 3,001 on: the bodies the
// crash left that it uses are not fetched again, the others are removed,
// and every count of references is its body's messages.
func TestRestoreBodiesFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("restores 6,000 messages")
	}
	ctx := context.Background()
	small, body := syntheticState(200)
	big, _ := syntheticState(6000)
	other, _ := syntheticState(6000)
	other.Messages = slices.DeleteFunc(other.Messages, func(m SnapMessage) bool { return m.Body <= 3000 })
	fetched := 0
	fetchAll := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		for _, p := range need {
			fetched++
			if err := put(p, body(p)); err != nil {
				return err
			}
		}
		return nil
	}
	s := openTest(t)
	if _, err := s.Restore(ctx, small, fetchAll); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s)

	crash := t.TempDir()
	calls, seen := 0, 0
	failing := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		if calls++; calls == 2 {
			if err := s.rdb.QueryRow("SELECT count(*) FROM bodies").Scan(&seen); err != nil {
				return err
			}
			for _, suffix := range []string{"", "-wal"} {
				b, err := os.ReadFile(s.Path() + suffix)
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(crash, "mail.db"+suffix), b, 0o600); err != nil {
					return err
				}
			}
			return errors.New("the spool went away")
		}
		return fetchAll(ctx, need, put)
	}
	if _, err := s.Restore(ctx, big, failing); err == nil || !strings.Contains(err.Error(), "the spool went away") {
		t.Fatalf("a fetcher failing at its second run: %v", err)
	}
	if want := 200 + stageRun; seen != want {
		t.Fatalf("at the fetcher's second run a reader saw %d bodies: want %d (the first run's committed)", seen, want)
	}
	if after := dump(t, s); !reflect.DeepEqual(after, before) {
		t.Fatal("the failed restore changed the state")
	}
	if n, bad, unused := bodyCounts(t, s); n != 200 || bad != 0 || unused != 0 || stagedTables(t, s) != 0 {
		t.Fatalf("after the failed restore: %d bodies, %d miscounted, %d unused, %d of its tables: want 200, 0, 0, 0",
			n, bad, unused, stagedTables(t, s))
	}

	// A reader that holds no lock (export, NoMigrate) leaves the tables:
	// they could be a running restore's.
	reader, err := OpenWith(filepath.Join(crash, "mail.db"), Options{Parser: mimeform.Parser{}, NoMigrate: true})
	if err != nil {
		t.Fatalf("opening the files a crash left to read: %v", err)
	}
	if n := stagedTables(t, reader); n == 0 {
		t.Fatal("opened without the lock (NoMigrate), the files a crash left lost the restore's tables")
	}
	reader.Close()
	crashed, err := Open(filepath.Join(crash, "mail.db"), mimeform.Parser{})
	if err != nil {
		t.Fatalf("opening the files a crash left: %v", err)
	}
	defer crashed.Close()
	if d := Diff(before, dump(t, crashed), 5); d != nil {
		t.Fatalf("the files a crash left hold another state: %v", d)
	}
	if n := stagedTables(t, crashed); n != 0 {
		t.Fatalf("the files a crash left, opened, hold %d of the restore's tables", n)
	}
	if _, _, unused := bodyCounts(t, crashed); unused != stageRun {
		t.Fatalf("the files a crash left hold %d bodies no message uses: want the first run's %d", unused, stageRun)
	}
	fetched = 0
	if _, err := crashed.Restore(ctx, other, fetchAll); err != nil {
		t.Fatal(err)
	}
	if want := 6000 - (200 + stageRun); fetched != want {
		t.Fatalf("the restore after the crash fetched %d bodies: want %d (those the crash left not again)", fetched, want)
	}
	if n, bad, unused := bodyCounts(t, crashed); n != 3000 || bad != 0 || unused != 0 {
		t.Fatalf("after the restore: %d bodies, %d miscounted, %d unused: want 3000, 0, 0", n, bad, unused)
	}
	got, err := crashed.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := EncodeSnapshot(other)
	if again, _ := EncodeSnapshot(got); !bytes.Equal(again, want) {
		t.Fatal("the restored store's state is not the one restored")
	}
}

// TestRestoreLocalChangeBetweenRuns: a local change made while a restore
// stores its bodies (between two runs, each a transaction of its own)
// is kept, and does not make the restore fetch a body the change took
// out, which taking the change back puts back: a store holding the
// messages of positions 5,801 to 6,000 restores 8,000; after the first
// run, a message of position 5,900 is expunged on the device (its body,
// used by it alone, goes). The restore completes with the expunge queued
// and applied on top, and every body counted and used.
func TestRestoreLocalChangeBetweenRuns(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("restores 8,000 messages")
	}
	ctx := context.Background()
	held, body := syntheticState(6000)
	held.Messages = slices.DeleteFunc(held.Messages, func(m SnapMessage) bool { return m.Body <= 5800 })
	big, _ := syntheticState(8000)
	fetchAll := fetchSynthetic(body)
	s := openTest(t)
	if _, err := s.Restore(ctx, held, fetchAll); err != nil {
		t.Fatal(err)
	}
	gone := entryID(5900)
	calls := 0
	var expunged error
	done := make(chan struct{})
	fetch := func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		if calls++; calls == 1 {
			// It waits for the store's lock, which the run holds.
			go func() {
				defer close(done)
				_, expunged = s.Enqueue(ctx, command.ID{0xee, 1}, &command.Command{Kind: command.Expunge, IDs: []command.ID{gone}})
			}()
		}
		return fetchAll(ctx, need, put)
	}
	if _, err := s.Restore(ctx, big, fetch); err != nil {
		t.Fatalf("restore with a local expunge between its runs: %v", err)
	}
	<-done
	if expunged != nil {
		t.Fatal(expunged)
	}
	if calls < 2 {
		t.Fatalf("the fetcher was called %d times: want a run after the expunge", calls)
	}
	st := dump(t, s)
	if st.Position != 8000 || len(st.Messages) != 7999 {
		t.Fatalf("after the restore: position %d, %d messages: want 8000, 7999", st.Position, len(st.Messages))
	}
	for _, m := range st.Messages {
		if m.ID == gone {
			t.Fatal("the message expunged on the device during the restore is back")
		}
	}
	if n, bad, unused := bodyCounts(t, s); n != 7999 || bad != 0 || unused != 0 {
		t.Fatalf("after the restore: %d bodies, %d miscounted, %d unused: want 7999, 0, 0", n, bad, unused)
	}
}
