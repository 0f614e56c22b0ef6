package mailstore

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"cspool/internal/command"
)

// refused checks that err is a *Contradiction whose text holds phrase and
// that the store is as it was (before).
func refused(t *testing.T, s *Store, err error, phrase string, before *State) {
	t.Helper()
	var c *Contradiction
	if !errors.As(err, &c) || !strings.Contains(c.Detail, phrase) {
		t.Fatalf("got %v: want a Contradiction saying %q", err, phrase)
	}
	if d := Diff(before, dump(t, s), 5); d != nil {
		t.Fatalf("the refused call changed the store: %v", d)
	}
}

// TestRestoreExtendsHistory: a checkpoint restored over a store that
// applied entries must hold each of them at its position, and each entry
// the device appended at or below its position; a message the store holds
// under an id the checkpoint also holds must have the same bytes.
func TestRestoreExtendsHistory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	entries := generateLog(5, 120)
	writer := openTest(t)
	applyInBatches(t, writer, entries, 40)
	sn, err := writer.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kept := bodiesOf(entries)
	live := map[command.ID]bool{}
	for _, m := range sn.Messages {
		live[command.ID(m.ID)] = true
	}
	// a delivery among the first 60 whose message the checkpoint still holds
	di := slices.IndexFunc(entries[:60], func(e Entry) bool { return e.Cmd.Kind == command.Deliver && live[e.ID] })
	if di < 0 {
		t.Fatal("the generated log has no live delivery among its first 60 entries")
	}
	other := entryID(1 << 40)
	// an entry after 60 that the checkpoint holds at its position (not a
	// replay): one the device could have appended
	inCP := map[command.ID]uint64{}
	for b := sn.Entries; len(b) >= 24; b = b[24:] {
		inCP[command.ID(b[:16])] = binary.BigEndian.Uint64(b[16:24])
	}
	ai := 60 + slices.IndexFunc(entries[60:], func(e Entry) bool { return inCP[e.ID] == e.Pos })
	mineAt := Appended{ID: entries[ai].ID, Pos: entries[ai].Pos}

	cases := []struct {
		name   string
		prefix func() []Entry    // what the device applied
		append []Appended        // what it appended since, before the restore
		phrase string            // "" if the restore must succeed
		after  func(*Store) bool // checked after a successful restore
	}{
		{"same history", func() []Entry { return entries[:60] }, nil, "", nil},
		{"another entry at 60", func() []Entry {
			es := slices.Clone(entries[:60])
			es[59].ID = other
			return es
		}, nil, "does not hold entry", nil},
		{"an entry one position off", func() []Entry {
			// entry 60 hidden from the device, 61 shown in its place
			es := slices.Clone(entries[:59])
			moved := entries[60]
			moved.Pos = 60
			return append(es, moved)
		}, nil, "does not hold entry", nil},
		{"a delivery with other bytes under the same id", func() []Entry {
			es := slices.Clone(entries[:60])
			c := *es[di].Cmd
			c.Body = []byte("Subject: another story\r\n\r\nnot what the writer got\r\n")
			es[di].Cmd = &c
			return es
		}, nil, "other bytes", nil},
		{"appended entry in the checkpoint", func() []Entry { return entries[:60] },
			[]Appended{mineAt, {ID: other, Pos: 200}}, "",
			func(s *Store) bool {
				p, err := s.PendingAppends(ctx)
				return err == nil && len(p) == 1 && p[0].Pos == 200 // the one after the checkpoint stays
			}},
		{"appended entry missing from the checkpoint", func() []Entry { return entries[:60] },
			[]Appended{{ID: other, Pos: 70}}, "appended entry", nil},
		{"appended entry elsewhere in the checkpoint", func() []Entry { return entries[:60] },
			[]Appended{{ID: mineAt.ID, Pos: mineAt.Pos + 1}}, "appended entry", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev := openTest(t)
			prefix := tc.prefix()
			if _, err := dev.Apply(ctx, prefix, prefix[len(prefix)-1].Pos); err != nil {
				t.Fatal(err)
			}
			if err := dev.RecordAppended(ctx, tc.append); err != nil {
				t.Fatal(err)
			}
			before := dump(t, dev)
			n := 0
			_, err := dev.Restore(ctx, sn, fetchFrom(kept, &n))
			if tc.phrase != "" {
				refused(t, dev, err, tc.phrase, before)
				if n != 0 {
					t.Fatalf("%d bodies fetched before the refusal: want none", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			if tc.after != nil && !tc.after(dev) {
				t.Fatal("pending appends after the restore are not what the restore should leave")
			}
		})
	}
}

// TestAppendedChecked: an apply that reaches the position an appended
// entry was given must hold that entry there, or nothing of it is applied;
// an entry recorded at or below the position is checked at once.
func TestAppendedChecked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	l := &testLog{}
	mustApply(t, s, l.spool(deliverCmd(simpleMessage("one"))), l.spool(deliverCmd(simpleMessage("two"))))
	mine := entryID(1 << 41)
	if err := s.RecordAppended(ctx, []Appended{{ID: mine, Pos: 4}}); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s)
	// 3 and 4 are deliveries: the spool left this device's entry out.
	batch := []Entry{l.spool(deliverCmd(simpleMessage("three"))), l.spool(deliverCmd(simpleMessage("four")))}
	_, err := s.Apply(ctx, batch, 4)
	refused(t, s, err, "dropped or replaced the entry", before)
	// Up to 3 is fine: the entry is not due yet.
	mustApply(t, s, batch[0])
	if p, err := s.PendingAppends(ctx); err != nil || len(p) != 1 {
		t.Fatalf("pending appends %v, %v: want the entry at 4 still waiting", p, err)
	}
	mustApply(t, s, Entry{Pos: 4, ID: mine, Author: AuthorUser, Cmd: &command.Command{Kind: command.CreateMailbox, Mailbox: "Mine"}})
	if p, err := s.PendingAppends(ctx); err != nil || len(p) != 0 {
		t.Fatalf("pending appends %v, %v: want none once the entry is applied", p, err)
	}
	// Recorded after the sync got there: checked against what was applied.
	if err := s.RecordAppended(ctx, []Appended{{ID: mine, Pos: 4}}); err != nil {
		t.Fatalf("recording an entry applied at its position: %v", err)
	}
	before = dump(t, s)
	refused(t, s, s.RecordAppended(ctx, []Appended{{ID: entryID(1 << 42), Pos: 3}}), "holds entry", before)
	if p, err := s.PendingAppends(ctx); err != nil || len(p) != 0 {
		t.Fatalf("pending appends %v, %v: want nothing recorded by the refused calls", p, err)
	}
	// Clearing the alarms accepts the loss: the records go.
	if err := s.RecordAppended(ctx, []Appended{{ID: entryID(1 << 43), Pos: 9}}); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearAlarms(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := s.PendingAppends(ctx); err != nil || len(p) != 0 {
		t.Fatalf("pending appends %v, %v after ClearAlarms: want none", p, err)
	}
}

// TestSnapshotEntriesCanonical: the entries of a checkpoint are sorted by
// id, each once, at positions from 1 to the checkpoint's.
func TestSnapshotEntriesCanonical(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	applyInBatches(t, s, generateLog(3, 40), 40)
	good, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(b []byte)
	}{
		{"two swapped", func(b []byte) {
			var tmp [24]byte
			copy(tmp[:], b[:24])
			copy(b[:24], b[24:48])
			copy(b[24:48], tmp[:])
		}},
		{"an id twice", func(b []byte) { copy(b[24:40], b[:16]) }},
		{"position 0", func(b []byte) { clear(b[16:24]) }},
		{"beyond the checkpoint", func(b []byte) { b[16] = 0xff }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sn := *good
			sn.Entries = slices.Clone(good.Entries)
			tc.edit(sn.Entries)
			b, err := EncodeSnapshot(&sn)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := DecodeSnapshot(b); !errors.Is(err, ErrSnapshot) {
				t.Fatalf("decoding: %v, want ErrSnapshot", err)
			}
		})
	}
}
