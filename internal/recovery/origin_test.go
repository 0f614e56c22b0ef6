package recovery

import (
	"context"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestCheckpointAfterAdoptNamesPutBackBodies: the device that recovers
// holds the bodies of mail delivered after the backup, which the
// restoration puts back as Body entries. Once it adopts its restoration
// its checkpoints name those bodies at the Body entries, not at the
// positions they had in the history the restore removed (where the
// restored log now holds other entries): a new device set up from the
// next checkpoint it writes gets every body it names.
func TestCheckpointAfterAdoptNamesPutBackBodies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRig(t)
	a := r.device("a")
	m := r.deliver(3)
	a.mustSync()
	backup := r.backup()
	m = append(m, r.deliver(2)...) // m[3], m[4] at 4 and 5: the restore removes them
	a.mustSync()
	r.restore(backup)
	n := r.deliver(1) // at 4, where m[3] was
	if err := a.sync(); err == nil {
		t.Fatal("a after the restore: no alarm")
	}
	rep, err := a.recover()
	if err != nil {
		t.Fatalf("recover on a: %v", err)
	}
	if rep.Base != 3 || rep.Bodies != 2 {
		t.Fatalf("report %+v: want base 3, 2 bodies put back (m[3], m[4])", rep)
	}
	a.mustSync()

	// A new device rebuilds from the restoration, whose bodies it
	// fetched and checked: a names each body where it does.
	b := r.device("b")
	b.mustSync()
	bodies := func(d *device) map[string]uint64 {
		t.Helper()
		sn, err := d.ms.Snapshot(ctx)
		if err != nil {
			t.Fatalf("%s: snapshot: %v", d.name, err)
		}
		at := map[string]uint64{}
		for _, msg := range sn.Messages {
			at[string(msg.ID)] = msg.Body
		}
		return at
	}
	want := bodies(b)
	for id, pos := range bodies(a) {
		if want[id] != pos {
			t.Errorf("a names message %x's body at %d, the restoration at %d", id, pos, want[id])
		}
	}

	// a deletes mail and writes a checkpoint, which compacts the log; a
	// new device is set up from it.
	a.change(&command.Command{Kind: command.Expunge, IDs: []command.ID{n[0], m[0]}})
	a.mustSync()
	if _, _, err := a.s.WriteCheckpoint(ctx); err != nil {
		t.Fatalf("a: writing a checkpoint: %v", err)
	}
	c := r.device("c")
	c.mustSync()
	if st := c.s.Status(); st.Alarm != "" {
		t.Fatalf("c: alarm %q", st.Alarm)
	}
	if d := mailstore.Diff(a.dump(), c.dump(), 5); d != nil {
		t.Fatalf("c differs from a: %v", d)
	}
	for _, msg := range c.dump().Messages {
		if msg.ID == n[0] || msg.ID == m[0] {
			t.Errorf("c holds expunged message %x", msg.ID)
		}
	}
	if len(c.dump().Messages) != 4 {
		t.Errorf("c holds %d messages, want 4", len(c.dump().Messages))
	}
}
