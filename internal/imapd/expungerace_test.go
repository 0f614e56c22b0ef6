package imapd

import (
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
)

// TestExpungeOrderedWithChanges: another session's MOVE of a \Deleted
// message, or its STORE -FLAGS (\Deleted), made while an EXPUNGE is
// between its read of the flags and the apply of its command, comes after
// that EXPUNGE. The Expunge command names ids, and the store removes them
// wherever they are then, whatever their flags: the MOVE was answered OK
// [COPYUID] and the message then expunged from its destination, lost; the
// STORE was answered with the message's flags without \Deleted, and the
// message expunged after all.
func TestExpungeOrderedWithChanges(t *testing.T) {
	t.Parallel()
	for _, change := range []string{"UID MOVE 2 Kept", `UID STORE 2 -FLAGS (\Deleted)`} {
		t.Run(strings.Fields(change)[1], func(t *testing.T) {
			t.Parallel()
			d, a, b := twoSessions(t, 3)
			a.ok(`UID STORE 2 +FLAGS.SILENT (\Deleted)`)

			// The EXPUNGE waits in its submit, after its read of the
			// flags, until released.
			reading, release := make(chan struct{}), make(chan struct{})
			d.sub.set(false, func(cmds []*command.Command) {
				if len(cmds) == 1 && cmds[0].Kind == command.Expunge {
					close(reading)
					select {
					case <-release:
					case <-time.After(30 * time.Second):
					}
				}
			})
			expunged := make(chan string, 1)
			go func() {
				_, tagged := b.run("EXPUNGE")
				expunged <- tagged
			}()
			<-reading
			changed := make(chan string, 1)
			var untagged []string
			go func() {
				var tagged string
				untagged, tagged = a.run(change)
				changed <- tagged
			}()
			// The change runs now, or (ordered) waits for the EXPUNGE.
			select {
			case <-changed:
				changed <- "" // answered before the EXPUNGE: the old order
			case <-time.After(500 * time.Millisecond):
			}
			close(release)
			d.sub.set(false, nil)
			if tag := <-expunged; !strings.Contains(tag, " OK") {
				t.Fatalf("EXPUNGE: %q", tag)
			}
			tagged := <-changed
			if tagged == "" {
				tagged = "answered before the EXPUNGE"
			}
			w := loginWire(t, d.addr)
			inKept := strings.Join(w.ok("STATUS Kept (MESSAGES)"), "")
			moved := strings.Contains(strings.Join(untagged, "")+tagged, "COPYUID")
			if moved && !strings.Contains(inKept, "MESSAGES 1") {
				t.Errorf("%s answered %q %q, and the message is not in Kept (%q): expunged from where it was moved", change, untagged, tagged, inKept)
			}
			if strings.HasPrefix(change, "UID STORE") {
				for _, u := range untagged {
					if strings.Contains(u, "UID 2") && !strings.Contains(u, `\Deleted`) {
						t.Errorf("%s answered %q: message 2 without \\Deleted, which the EXPUNGE then removed", change, u)
					}
				}
			}
		})
	}
}
