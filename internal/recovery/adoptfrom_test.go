package recovery

import (
	"testing"

	"cspool/internal/command"
	"cspool/internal/mailstore"
)

// TestAdoptStreams: a device adopts a restoration by reading its state as
// it is decoded (mailstore.AdoptFrom), on both of the syncer's paths: the
// device that wrote it, whose rollback alarm the spool's newest checkpoint
// explains, and a device that follows the log to the restoration's entry
// (the superseded history holds a flag only: no body is put back, so the
// restoration's state is at the position that device reached, and it does
// not rebuild from the checkpoint). Neither decodes the state whole
// (mailstore.Adopt), as the syncer did before; the devices end with the
// same state, the flag in it.
func TestAdoptStreams(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, l := r.device("a"), r.device("l")
	m := r.deliver(3)
	a.mustSync()
	l.mustSync()
	backup := r.backup()
	a.change(&command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{m[0]}})
	a.mustSync() // a holds the flag at 4, which the restore removes
	r.restore(backup)
	r.deliver(1)
	l.mustSync()
	if err := a.sync(); err == nil {
		t.Fatal("a after the restore: no alarm")
	}
	rep, err := a.recover()
	if err != nil {
		t.Fatalf("recover on a: %v", err)
	}
	if rep.Restoration != 4 || rep.Bodies != 0 {
		t.Fatalf("report %+v: want the restoration's state at 4, no body put back", rep)
	}
	a.mustSync() // the alarm: the spool's newest checkpoint
	l.mustSync() // the log: the restoration's entry at 5
	for _, d := range []*device{a, l} {
		if w, s := d.st.whole.Load(), d.st.streamed.Load(); w != 0 || s != 1 {
			t.Errorf("%s adopted %d time(s) with the state decoded whole and %d as it was read; want 0 and 1", d.name, w, s)
		}
		if st := d.s.Status(); st.Position != 5 || st.Alarm != "" {
			t.Errorf("%s at %d, alarm %q; want 5 and none", d.name, st.Position, st.Alarm)
		}
	}
	want := a.dump()
	if d := mailstore.Diff(want, l.dump(), 5); d != nil {
		t.Fatalf("l differs from a after the restoration: %v", d)
	}
	for _, msg := range want.Messages {
		if msg.ID == m[0] && (len(msg.Flags) != 1 || msg.Flags[0] != `\Flagged`) {
			t.Errorf("m[0] has %v after the restoration, want \\Flagged", msg.Flags)
		}
	}
}
