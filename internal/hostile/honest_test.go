package hostile

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"cspool/internal/command"
)

// TestHonestProxyRaisesNothing is the control: through the proxy with no
// View (forwarding) and with the zero View (the proxy's own read path),
// two devices making changes over a few hundred entries raise no alarm,
// reject nothing and end with equal states.
func TestHonestProxyRaisesNothing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		view *View
	}{
		{"forwarding", nil},
		{"own read path", &View{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			a, b := r.device("a"), r.device("b")
			r.proxy.Set("a", tc.view)
			r.proxy.Set("b", tc.view)
			for round := 0; round < 10; round++ {
				r.deliver(25)
				a.mustSync(t)
				b.mustSync(t)
				msgs := a.inbox(t)
				a.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`\Seen`}, IDs: []command.ID{msgs[round].ID}})
				b.submit(t, &command.Command{Kind: command.Move, Mailbox: "Archive", IDs: []command.ID{msgs[round+1].ID}})
				a.submit(t, &command.Command{Kind: command.CreateMailbox, Mailbox: fmt.Sprintf("Box%d", round)})
				b.submit(t, &command.Command{Kind: command.SetFlags, Flags: []string{`$Label`}, IDs: []command.ID{msgs[round+2].ID}})
			}
			a.mustSync(t)
			b.mustSync(t)
			head, err := r.store.Head(context.Background(), user)
			if err != nil {
				t.Fatal(err)
			}
			if head < 250 {
				t.Fatalf("head %d: want a few hundred entries", head)
			}
			for _, d := range []*device{a, b} {
				st := d.s.Status()
				if st.Alarm != "" || st.Rejected != 0 || d.position(t) != head {
					t.Errorf("device %s: alarm %q, %d rejected, position %d: want no alarm, none rejected, position %d",
						d.name, st.Alarm, st.Rejected, d.position(t), head)
				}
				rej, err := d.ms.Rejected(context.Background(), 0)
				if err != nil || len(rej) != 0 {
					t.Errorf("device %s: rejections %v, %v: want none", d.name, rej, err)
				}
			}
			if !bytes.Equal(a.state(t), b.state(t)) {
				t.Error("the two devices' states differ after an honest sync")
			}
		})
	}
}
