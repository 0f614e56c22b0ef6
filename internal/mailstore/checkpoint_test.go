package mailstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"cspool/internal/command"
)

// bodiesOf maps each Deliver/Append entry's position to its body: what the
// spool keeps for a checkpoint.
func bodiesOf(entries []Entry) map[uint64][]byte {
	m := map[uint64][]byte{}
	for _, e := range entries {
		if e.Cmd != nil && (e.Cmd.Kind == command.Deliver || e.Cmd.Kind == command.Append) {
			m[e.Pos] = e.Cmd.Body
		}
	}
	return m
}

func fetchFrom(bodies map[uint64][]byte, asked *int) BodyFetcher {
	return func(ctx context.Context, need []uint64, put func(uint64, []byte) error) error {
		for _, p := range need {
			*asked++
			b, ok := bodies[p]
			if !ok {
				return fmt.Errorf("entry %d was compacted away", p)
			}
			if err := put(p, b); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestSnapshotRestore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for seed := uint64(1); seed <= 3; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			entries := generateLog(seed, 300)
			full := openTest(t)
			applyInBatches(t, full, entries, 50)
			sn, err := full.Snapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := EncodeSnapshot(sn)
			if err != nil {
				t.Fatal(err)
			}
			sn2, err := DecodeSnapshot(enc)
			if err != nil {
				t.Fatal(err)
			}
			again, _ := EncodeSnapshot(sn2)
			if !bytes.Equal(enc, again) {
				t.Fatal("snapshot encoding does not round trip")
			}
			// Keep only the entries the snapshot names, as the spool would.
			all := bodiesOf(entries)
			kept := map[uint64][]byte{}
			for _, p := range sn2.Keep() {
				b, ok := all[p]
				if !ok {
					t.Fatalf("snapshot keeps position %d, which holds no body", p)
				}
				kept[p] = b
			}

			// A new device rebuilds from the checkpoint alone.
			fresh := openTest(t)
			asked := 0
			res, err := fresh.Restore(ctx, sn2, fetchFrom(kept, &asked))
			if err != nil {
				t.Fatal(err)
			}
			if d := Diff(dump(t, full), dump(t, fresh), 10); d != nil {
				t.Fatalf("restored store differs from the one that applied the log: %v", d)
			}
			added := 0
			for _, c := range res.Changes {
				if c.Kind == MessageAdded {
					added++
				}
			}
			if added != len(sn2.Messages) {
				t.Errorf("restore reported %d added messages, want %d", added, len(sn2.Messages))
			}

			// A device that applied a prefix catches up by restoring, asks
			// only for bodies it lacks, and its UIDs stay.
			old := openTest(t)
			applyInBatches(t, old, entries[:150], 50)
			asked = 0
			if _, err := old.Restore(ctx, sn2, fetchFrom(kept, &asked)); err != nil {
				t.Fatal(err)
			}
			if d := Diff(dump(t, full), dump(t, old), 10); d != nil {
				t.Fatalf("caught-up store differs: %v", d)
			}
			if asked >= len(sn2.Keep()) && len(sn2.Keep()) > 0 {
				t.Errorf("device with half the log fetched %d of %d bodies", asked, len(sn2.Keep()))
			}
			// Applying the rest of the log after the checkpoint works as usual.
			if _, err := old.Restore(ctx, sn2, fetchFrom(kept, &asked)); !errors.Is(err, ErrPosition) {
				t.Fatalf("restoring the same checkpoint twice: got %v, want ErrPosition", err)
			}
		})
	}
}

func TestRestoreRejectsWrongBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	entries := generateLog(7, 100)
	full := openTest(t)
	applyInBatches(t, full, entries, 50)
	sn, err := full.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn.Messages) == 0 {
		t.Skip("log left no messages")
	}
	bad := map[uint64][]byte{}
	for _, p := range sn.Keep() {
		bad[p] = []byte("not the message")
	}
	fresh := openTest(t)
	before := dump(t, fresh)
	n := 0
	if _, err := fresh.Restore(ctx, sn, fetchFrom(bad, &n)); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("got %v, want ErrSnapshot", err)
	}
	if d := Diff(before, dump(t, fresh), 5); d != nil {
		t.Fatalf("a failed restore changed the store: %v", d)
	}
	// One wrong body among right ones, in the middle of a group of
	// bodies checked together: refused by its position, nothing kept.
	keep := sn.Keep()
	one := bodiesOf(entries)
	wrong := keep[len(keep)/2]
	one[wrong] = []byte("not the message either")
	if _, err := fresh.Restore(ctx, sn, fetchFrom(one, &n)); !errors.Is(err, ErrSnapshot) ||
		!strings.Contains(err.Error(), fmt.Sprintf("entry %d does not hold", wrong)) {
		t.Fatalf("one wrong body at %d: got %v, want ErrSnapshot naming it", wrong, err)
	}
	if d := Diff(before, dump(t, fresh), 5); d != nil {
		t.Fatalf("a restore refused for one body changed the store: %v", d)
	}
	if _, err := DecodeSnapshot([]byte{0xa0}); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("empty map: got %v", err)
	}
}

// TestRestoreTakesTheStatesOrigins: a store that holds a state's bodies
// under other origins (as one that adopted a restoration before the
// restore placed them) takes the positions the state names, which its
// next checkpoint names; a state naming one entry with two digests is
// refused even when the store holds both bodies, which would otherwise
// both take that entry as their origin.
func TestRestoreTakesTheStatesOrigins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := &testLog{}
	entries := []Entry{l.spool(deliverCmd(simpleMessage("x"))), l.spool(deliverCmd(simpleMessage("y"))),
		l.spool(deliverCmd(simpleMessage("x2"))), l.spool(deliverCmd(simpleMessage("y2")))}
	full := openTest(t)
	mustApply(t, full, entries...)
	sn, err := full.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := openTest(t)
	mustApply(t, s, entries[:2]...)
	// Another origin for y, as a store that applied a history a
	// restoration superseded holds it.
	if _, err := s.wdb.ExecContext(ctx, "UPDATE bodies SET origin = 7 WHERE origin = 2"); err != nil {
		t.Fatal(err)
	}
	n := 0
	twice := *sn
	twice.Messages = slices.Clone(sn.Messages)
	for i := range twice.Messages {
		if twice.Messages[i].Body == 2 {
			twice.Messages[i].Body = 1
		}
	}
	if _, err := s.Restore(ctx, &twice, fetchFrom(bodiesOf(entries), &n)); !errors.Is(err, ErrSnapshot) ||
		!strings.Contains(err.Error(), "entry 1 named with two digests") {
		t.Fatalf("a state naming entry 1 with x and y, both held: %v, want ErrSnapshot naming it", err)
	}
	if _, err := s.Restore(ctx, sn, fetchFrom(bodiesOf(entries), &n)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range got.Messages {
		if m.Body != sn.Messages[i].Body {
			t.Errorf("message %x named at %d, the state it restored at %d", m.ID, m.Body, sn.Messages[i].Body)
		}
	}
}
