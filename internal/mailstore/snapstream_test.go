package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"cspool/internal/command"
)

// streamed returns what WriteSnapshot writes and tells of s.
func streamed(t testing.TB, s *Store) (SnapshotInfo, []byte) {
	t.Helper()
	var info SnapshotInfo
	var out bytes.Buffer
	err := s.WriteSnapshot(context.Background(), func(i SnapshotInfo, encode func(io.Writer) error) error {
		info = i
		return encode(&out)
	})
	if err != nil {
		t.Fatalf("WriteSnapshot: %v", err)
	}
	return info, out.Bytes()
}

// checkStreamed checks that WriteSnapshot writes, byte for byte, what
// EncodeSnapshot makes of Snapshot, and describes it rightly.
func checkStreamed(t testing.TB, s *Store) {
	t.Helper()
	sn, err := s.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want, err := EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	info, got := streamed(t, s)
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("streamed snapshot of %d bytes differs from EncodeSnapshot's %d bytes at byte %d", len(got), len(want), i)
	}
	if info.Position != sn.Position || info.Size != int64(len(want)) || info.Digest != sha256.Sum256(want) ||
		info.Messages != len(sn.Messages) || !slices.Equal(info.Keep, sn.Keep()) {
		t.Fatalf("streamed snapshot described as position %d, %d bytes, %d messages, %d kept; want %d, %d, %d, %d",
			info.Position, info.Size, info.Messages, len(info.Keep), sn.Position, len(want), len(sn.Messages), len(sn.Keep()))
	}
}

// TestWriteSnapshotEqualsEncode: the streamed encoding is EncodeSnapshot's
// on stores of every shape: empty, random logs (several mailboxes, flags,
// keywords, expunges, subscriptions), with chain hashes, and with the
// superseded entries and renewed UIDVALIDITYs of an adopted restoration
// (TestRebaseAndAdopt checks those stores).
func TestWriteSnapshotEqualsEncode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		checkStreamed(t, openTest(t))
	})
	for seed := uint64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			s := openTest(t)
			entries := generateLog(seed, 400)
			for i := 0; i < len(entries); i += 100 {
				batch := entries[i:min(i+100, len(entries))]
				if _, err := s.Apply(ctx, batch, batch[len(batch)-1].Pos); err != nil {
					t.Fatal(err)
				}
				checkStreamed(t, s)
			}
		})
	}
	t.Run("chained", func(t *testing.T) {
		t.Parallel()
		s := openTest(t)
		l := newChainLog()
		applyChain(t, s, l, l.add(AuthorSpool, deliverCmd(simpleMessage("one")), 0),
			l.add(AuthorUser, &command.Command{Kind: command.CreateMailbox, Mailbox: "Ünïcode"}, 0),
			l.add(AuthorUser, &command.Command{Kind: command.Subscribe, Mailbox: "Ünïcode"}, 0))
		checkStreamed(t, s)
	})
	t.Run("queued", func(t *testing.T) {
		t.Parallel()
		s := openTest(t)
		mustApply(t, s, (&testLog{}).spool(deliverCmd(simpleMessage("x"))))
		if _, err := s.Enqueue(ctx, entryID(99), &command.Command{Kind: command.CreateMailbox, Mailbox: "Q"}); err != nil {
			t.Fatal(err)
		}
		err := s.WriteSnapshot(ctx, func(SnapshotInfo, func(io.Writer) error) error { return nil })
		if !errors.Is(err, ErrQueued) {
			t.Fatalf("WriteSnapshot with changes queued: %v, want ErrQueued", err)
		}
	})
}

// TestWriteLogSnapshot: with changes queued (an APPEND, a flag on a
// message of the log, an expunge of another), WriteLogSnapshot writes the
// log's state alone, byte for byte what WriteSnapshot wrote before they
// were queued, and leaves the queue and what it shows as they were.
func TestWriteLogSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	l := &testLog{}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))))
	wantInfo, want := streamed(t, s)
	inbox := mailboxID(t, s, "INBOX")
	queued := []*command.Command{
		{Kind: command.Append, Mailbox: "INBOX", MailboxID: inbox, Date: 1700000000000, Body: []byte(simpleMessage("queued"))},
		{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{entryID(1)}},
		{Kind: command.Expunge, IDs: []command.ID{entryID(2)}},
	}
	for i, c := range queued {
		if _, err := s.Enqueue(ctx, entryID(uint64(100+i)), c); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var info SnapshotInfo
	var got bytes.Buffer
	if err := s.WriteLogSnapshot(ctx, func(i SnapshotInfo, encode func(io.Writer) error) error {
		info = i
		return encode(&got)
	}); err != nil {
		t.Fatalf("WriteLogSnapshot with changes queued: %v", err)
	}
	if !bytes.Equal(got.Bytes(), want) || info.Digest != wantInfo.Digest || info.Position != wantInfo.Position {
		t.Fatalf("WriteLogSnapshot wrote %d bytes at position %d, want the %d bytes at position %d written before anything was queued",
			got.Len(), info.Position, len(want), wantInfo.Position)
	}
	after, err := s.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(before, after, 10); len(d) > 0 {
		t.Fatalf("the state shown changed with WriteLogSnapshot: %v", d)
	}
	if n, err := s.QueueLen(ctx); err != nil || n != len(queued) {
		t.Fatalf("%d changes (%v) queued after WriteLogSnapshot, want %d", n, err, len(queued))
	}
}

// checkRebaseStreamed checks that a Rebase's WriteSnapshot writes what
// EncodeSnapshot makes of its Snapshot, sn, with the same UIDVALIDITYs
// renewed.
func checkRebaseStreamed(t testing.TB, rb *Rebase, sn *Snapshot, renewed []string) {
	t.Helper()
	want, err := EncodeSnapshot(sn)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var info SnapshotInfo
	var names []string
	if err := rb.WriteSnapshot(func(i SnapshotInfo, r []string, encode func(io.Writer) error) error {
		info, names = i, r
		return encode(&out)
	}); err != nil {
		t.Fatalf("Rebase.WriteSnapshot: %v", err)
	}
	if !bytes.Equal(out.Bytes(), want) || info.Digest != sha256.Sum256(want) || !slices.Equal(info.Keep, sn.Keep()) || !slices.Equal(names, renewed) {
		t.Fatalf("the rebase's streamed snapshot (%d bytes, renewed %q) differs from its Snapshot (%d bytes, renewed %q)",
			out.Len(), names, len(want), renewed)
	}
}
