package hostile

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/mailstore"
	"cspool/internal/spool"
)

// TestCheckpointFromOtherSideOfFork: the spool hides device a's expunge
// from device b (renumbering the log after it, so b sees no hole), keeps
// the checkpoint b then writes, and serves it to a together with b's story.
// Restored from it, a would show the expunged message again, and nothing
// a could check afterwards contradicts b's story: a must refuse the
// checkpoint because it lacks the expunge a applied at position 6.
func TestCheckpointFromOtherSideOfFork(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, b := r.device("a"), r.device("b")
	r.deliver(5)
	a.mustSync(t)
	b.mustSync(t)
	victim := a.inbox(t)[0].ID
	hide := Drop(6, true)
	r.proxy.Set("b", &View{Rewrite: hide, HoldCheckpoints: true})
	a.submit(t, &command.Command{Kind: command.Expunge, IDs: []command.ID{victim}})
	before := a.state(t)
	r.deliver(3) // real 7..9, shown to b as 6..8
	b.mustSync(t)
	if _, pos, err := b.s.WriteCheckpoint(ctx); err != nil || pos != 8 {
		t.Fatalf("b's checkpoint: position %d, %v: want 8", pos, err)
	}
	cp, ok := r.proxy.Held("b")
	if !ok || cp.Pos != 8 {
		t.Fatalf("the proxy holds %v (%v): want b's checkpoint at 8", cp.Pos, ok)
	}
	// A hole right after a's position, as if the checkpoint had let the
	// spool delete that entry: a rebuilds from the checkpoint instead of
	// reading on (where the read itself would not extend a's chain).
	holed := func(h []spool.Entry) []spool.Entry { return Drop(7, false)(hide(h)) }
	r.proxy.Set("a", &View{Rewrite: holed, Checkpoint: &cp})
	err := a.sync(t)
	alarmed(t, a, err, "(fork)", 6, before)
	if alarm := a.s.Status().Alarm; !strings.Contains(alarm, "the checkpoint at position 8 does not hold entry") {
		t.Fatalf("alarm %q: want it to name the checkpoint and the entry it lacks", alarm)
	}
	if a.s.Status().Restores != 0 {
		t.Fatalf("device a restored from the forked checkpoint")
	}
	for _, m := range a.inbox(t) {
		if m.ID == victim {
			t.Fatalf("the expunged message %s came back", m.ID)
		}
	}
}

// TestCheckpointOverAppliedHistory is the honest control of the test
// above: a device that applied its own command is rebuilt from another
// device's checkpoint that covers it, through the forwarding proxy, with no
// alarm and the same state as the checkpoint's writer.
func TestCheckpointOverAppliedHistory(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	a, b := r.device("a"), r.device("b")
	r.deliver(5)
	a.mustSync(t)
	msgs := a.inbox(t)
	a.submit(t, &command.Command{Kind: command.Expunge, IDs: []command.ID{msgs[0].ID}})
	r.deliver(3)
	b.mustSync(t)
	b.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[1].ID}})
	if _, pos, err := b.s.WriteCheckpoint(ctx); err != nil || pos != 10 {
		t.Fatalf("b's checkpoint: position %d, %v: want 10", pos, err)
	}
	a.mustSync(t)
	if a.s.Status().Restores != 1 || a.position(t) != 10 {
		t.Fatalf("device a: %d restores, position %d: want rebuilt from the checkpoint at 10", a.s.Status().Restores, a.position(t))
	}
	if !bytes.Equal(a.state(t), b.state(t)) {
		t.Fatal("device a's state after the restore differs from b's")
	}
}

// waitPending waits until the device has recorded n appended entries it
// has not yet seen in the log.
func waitPending(t *testing.T, d *device, n int) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		p, err := d.ms.PendingAppends(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(p) == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("device %s never recorded %d appended entries", d.name, n)
}

// appendOnly submits cmd without the sync loop, so nothing is applied,
// and returns once the spool answered the append and the device recorded
// where its entry is: the daemon dying right after the append.
func appendOnly(t *testing.T, d *device, cmd *command.Command) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := d.s.Submit(ctx, cmd)
		done <- err
	}()
	waitPending(t, d, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("device %s: submit: %v: want it cut off while waiting", d.name, err)
	}
}

// TestDroppedAppend: the spool takes device d's command (answering its
// position, 6), then leaves it out of what it shows d, renumbering the
// mail that follows into its place. d must raise the alarm when it
// applies past 6 without its entry there, instead of waiting for it until
// the client gives up: while Submit waits, after a restart in between, and
// when another device's checkpoint that lacks the entry comes first.
func TestDroppedAppend(t *testing.T) {
	t.Parallel()
	flag := func(id command.ID) *command.Command {
		return &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}}
	}
	hide := Drop(6, true)
	// start: device d has applied 5 deliveries, and the spool will hide
	// what lands at 6 from it.
	start := func(t *testing.T) (*rig, *device, []byte) {
		r := newRig(t)
		d := r.device("d")
		r.deliver(5)
		d.mustSync(t)
		r.proxy.Set("d", &View{Rewrite: hide})
		return r, d, d.state(t)
	}
	t.Run("while submitting", func(t *testing.T) {
		r, d, before := start(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		loop := make(chan error, 1)
		go func() { loop <- d.s.Run(ctx) }()
		submitted := make(chan error, 1)
		go func() {
			_, err := d.s.Submit(ctx, flag(d.inbox(t)[0].ID))
			submitted <- err
		}()
		waitPending(t, d, 1)
		r.deliver(2) // real 7, 8; shown as 6, 7
		err := <-submitted
		cancel()
		<-loop
		alarmed(t, d, err, "dropped or replaced the entry", 5, before)
	})
	t.Run("after a restart", func(t *testing.T) {
		r, d, before := start(t)
		appendOnly(t, d, flag(d.inbox(t)[0].ID))
		d = r.restart(d)
		r.deliver(2)
		alarmed(t, d, d.sync(t), "dropped or replaced the entry", 5, before)
	})
	t.Run("checkpoint without it", func(t *testing.T) {
		r, d, before := start(t)
		b := r.device("b")
		b.mustSync(t)
		r.proxy.Set("b", &View{Rewrite: hide, HoldCheckpoints: true})
		appendOnly(t, d, flag(d.inbox(t)[0].ID))
		r.deliver(3)
		b.mustSync(t)
		if _, pos, err := b.s.WriteCheckpoint(context.Background()); err != nil || pos != 8 {
			t.Fatalf("b's checkpoint: position %d, %v: want 8", pos, err)
		}
		cp, _ := r.proxy.Held("b")
		// A hole right after d's position, as if the checkpoint had let
		// the spool delete that entry: d rebuilds from the checkpoint.
		holed := func(h []spool.Entry) []spool.Entry { return Drop(6, false)(hide(h)) }
		r.proxy.Set("d", &View{Rewrite: holed, Checkpoint: &cp})
		alarmed(t, d, d.sync(t), "the checkpoint at position 8 holds entry", 5, before)
	})
}

// TestLostAppendAnswer: the spool stores device d's command but the
// answer never reaches d, so d does not know its position. Whether the
// entry then shows up (the honest case) or not (a spool that also drops
// it), d must not raise an alarm: it cannot tell a dropped append from a
// failed one. The change waits in d's queue under its entry id (its
// client was told OK): when the entry shows up, the apply takes it out of
// the queue; when it does not, d sends it again. Either way it is applied
// once.
func TestLostAppendAnswer(t *testing.T) {
	t.Parallel()
	for _, hidden := range []bool{false, true} {
		name := "entry shown"
		if hidden {
			name = "entry hidden"
		}
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			d := r.device("d")
			r.deliver(5)
			d.mustSync(t)
			id := d.inbox(t)[0].ID
			v := &View{LoseAppendAnswers: true}
			if hidden {
				v.Rewrite = Drop(6, true)
			}
			r.proxy.Set("d", v)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			outs, err := d.s.Submit(ctx, &command.Command{Kind: command.SetFlags, Flags: []string{`\Flagged`}, IDs: []command.ID{id}})
			if err != nil || len(outs) != 1 || outs[0].Status == mailstore.Rejected {
				t.Fatalf("submit with its answer lost: %+v, %v: want it queued", outs, err)
			}
			if head, err := r.store.Head(ctx, user); err != nil || head != 6 {
				t.Fatalf("spool head %d, %v: want the entry stored at 6", head, err)
			}
			// Later answers arrive; a spool that hid the entry goes on
			// hiding it.
			v = &View{}
			if hidden {
				v.Rewrite = Drop(6, true)
			}
			r.proxy.Set("d", v)
			r.deliver(2)
			d.mustSync(t)
			if !slices.Contains(d.inbox(t)[0].Flags, `\Flagged`) {
				t.Fatalf("message not flagged (entry hidden: %v)", hidden)
			}
			if q := d.s.Status().Queued; q != 0 {
				t.Fatalf("%d changes still queued", q)
			}
			if st := d.s.Status(); st.Alarm != "" {
				t.Fatalf("alarm %q", st.Alarm)
			}
			if head, err := r.store.Head(ctx, user); err != nil || head != 8+uint64(btoi(hidden)) {
				t.Fatalf("spool head %d, %v: want %d (sent again only when hidden)", head, err, 8+btoi(hidden))
			}
			// The lost answer is never recorded. The entry sent again got
			// its answer, position 9, where the spool that hid entry 6
			// shows something else: the alarm comes once d applies past it.
			want := 0
			if hidden {
				want = 1
			}
			if p, err := d.ms.PendingAppends(ctx); err != nil || len(p) != want || (hidden && p[0].Pos != 9) {
				t.Fatalf("pending appends %v, %v: want %d recorded (the entry sent again, at 9)", p, err, want)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
