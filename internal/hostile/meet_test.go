package hostile

import (
	"testing"
	"time"

	"cspool/internal/command"
	"cspool/internal/spool"
)

// TestDetectedWhenHistoriesMeet: attacks a consistent liar can keep from a
// single device (the log it shows hashes to the heads it claims). Device
// a sees the honest log, device b the story; both sync without an alarm.
// Then one of them writes a command, which carries the head its author had
// applied, and the other must raise the alarm on applying it, stopping
// right before it.
func TestDetectedWhenHistoriesMeet(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		rewrite func(r *rig) func([]spool.Entry) []spool.Entry
		// the alarms when a's command reaches b, and b's reaches a
		atB, atA string
	}{
		{"fork: another message at 3", func(r *rig) func([]spool.Entry) []spool.Entry {
			return Replace(3, r.seal(&command.Command{Kind: command.Deliver, Date: time.Now().UnixMilli(), Body: message(99)}))
		}, "(fork)", "(fork)"},
		{"drop 3, renumbered", func(*rig) func([]spool.Entry) []spool.Entry { return Drop(3, true) },
			"reordered or replayed", "(fork)"},
		{"reorder deliveries 2 and 3", func(*rig) func([]spool.Entry) []spool.Entry { return Swap(2, 3) },
			"(fork)", "(fork)"},
		{"ciphertext of 3 altered, hashes fixed", func(*rig) func([]spool.Entry) []spool.Entry { return Flip(3, -20) },
			"(fork)", "(fork)"},
	}
	for _, tc := range cases {
		for _, writer := range []string{"a", "b"} {
			t.Run(tc.name+"/"+writer+" writes", func(t *testing.T) {
				r := newRig(t)
				a, b := r.device("a"), r.device("b")
				r.proxy.Set("b", &View{Rewrite: tc.rewrite(r)})
				r.deliver(5)
				a.mustSync(t)
				b.mustSync(t) // each device alone sees nothing wrong
				w, other, phrase := a, b, tc.atB
				if writer == "b" {
					w, other, phrase = b, a, tc.atA
				}
				pos, before := other.position(t), other.state(t)
				id := w.inbox(t)[0].ID
				w.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{id}})
				alarmed(t, other, other.sync(t), phrase, pos, before)
			})
		}
	}
}
