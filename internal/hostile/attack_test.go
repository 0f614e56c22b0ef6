package hostile

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/syncer"
)

// alarmed checks that the device's sync failed with an integrity alarm
// whose text holds phrase, recorded in its store, and that it stayed at
// position pos with the state it had (before).
func alarmed(t *testing.T, d *device, err error, phrase string, pos uint64, before []byte) {
	t.Helper()
	if !errors.Is(err, syncer.ErrIntegrity) {
		t.Fatalf("device %s: sync returned %v: want an integrity alarm", d.name, err)
	}
	alarm := d.s.Status().Alarm
	if !strings.Contains(alarm, phrase) {
		t.Fatalf("device %s: alarm %q: want it to say %q", d.name, alarm, phrase)
	}
	recorded, rerr := d.ms.Alarms(context.Background())
	if rerr != nil || len(recorded) == 0 || recorded[len(recorded)-1].Detail != alarm {
		t.Fatalf("device %s: recorded alarms %v, %v: want the alarm recorded", d.name, recorded, rerr)
	}
	if got := d.position(t); got != pos {
		t.Fatalf("device %s: position %d after the alarm: want %d (nothing applied after the point of detection)", d.name, got, pos)
	}
	if before != nil && !bytes.Equal(d.state(t), before) {
		t.Fatalf("device %s: state changed by the sync that raised the alarm", d.name)
	}
	// Stopped for good: a second sync applies nothing either.
	if err := d.sync(t); !errors.Is(err, syncer.ErrIntegrity) || d.position(t) != pos {
		t.Fatalf("device %s: sync after the alarm: %v at position %d: want it refused at %d", d.name, err, d.position(t), pos)
	}
}

// TestDropWithHole: the spool leaves an entry out of a read, keeping the
// positions (a hole no checkpoint explains).
func TestDropWithHole(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(5)
	d.mustSync(t)
	before := d.state(t)
	r.deliver(5)
	r.proxy.Set("d", &View{Rewrite: Drop(8, false)})
	alarmed(t, d, d.sync(t), "skipped from position 7 to 9", 5, before)
}

// TestTruncatedLog: the spool shows the log cut at position 6 to a device
// that applied 10.
func TestTruncatedLog(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(10)
	d.mustSync(t)
	before := d.state(t)
	r.proxy.Set("d", &View{Rewrite: Truncate(6)})
	alarmed(t, d, d.sync(t), "rolled back", 10, before)
}

// TestRollbackRegrown: the spool goes back to its state at position 5 (a
// restored backup) and new mail lands after it, so its head passes the
// device's position again: the device's history at its position is not
// the spool's.
func TestRollbackRegrown(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(8)
	d.mustSync(t)
	before := d.state(t)
	r.proxy.Set("d", &View{Rewrite: DropRange(6, 8, true)})
	r.deliver(6) // real 9..14, shown as 6..11
	alarmed(t, d, d.sync(t), "rewritten, rolled back or forked", 8, before)
}

// TestReorderCommands: two commands one device wrote in turn, shown to
// another device in the opposite order; the liar keeps the chain headers
// consistent with what it shows.
func TestReorderCommands(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.device("a"), r.device("b")
	r.deliver(3)
	a.mustSync(t)
	b.mustSync(t)
	before := b.state(t)
	msgs := a.inbox(t)
	a.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[0].ID}})
	a.submit(t, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[0].ID}})
	r.proxy.Set("b", &View{Rewrite: Swap(4, 5)})
	alarmed(t, b, b.sync(t), "reordered or replayed", 3, before)
}

// TestReplayOldCommand: the spool serves an old command again at a new
// position: the user flagged a message, unflagged it, and the replay would
// flag it again. Deliveries follow in the same read.
func TestReplayOldCommand(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("d")
	r.deliver(3)
	d.mustSync(t)
	id := d.inbox(t)[0].ID
	d.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}})
	d.submit(t, &command.Command{Kind: command.ClearFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}})
	r.proxy.Set("d", &View{Rewrite: Replay(4, 5)}) // entry 4 again at 6
	r.deliver(2)                                   // real 6, 7; shown 7, 8
	err := d.sync(t)
	if !errors.Is(err, syncer.ErrIntegrity) || !strings.Contains(d.s.Status().Alarm, "entry 6 replays entry 4") {
		t.Fatalf("sync over a replay: %v, alarm %q: want the replay alarm for entry 6", err, d.s.Status().Alarm)
	}
	for _, m := range d.inbox(t) {
		for _, f := range m.Flags {
			if f == `\Flagged` {
				t.Fatalf("the replayed command flagged message %s again", m.ID)
			}
		}
	}
	// The replay is found before anything of the read is applied past it.
	alarmed(t, d, err, "replays", 5, nil)
}
