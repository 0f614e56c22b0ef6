package imapd

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"cspool/internal/command"
)

// TestSelectAfterBrokenAppend breaks a connection after an APPEND's
// message was sent whole, while the device is still storing it (its
// submit held), and selects INBOX on a new connection, as mbsync does
// when run again after a move broke off: the SELECT waits for that
// APPEND, and shows the message. Answered at once, it showed INBOX
// without it, and mbsync, not finding the message by its X-TUID field,
// appended it a second time.
func TestSelectAfterBrokenAppend(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	d.sub.set(false, func(cmds []*command.Command) {
		if len(cmds) > 0 && cmds[0].Kind == command.Append {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}
	})
	released := false
	free := func() {
		if !released {
			released = true
			close(release)
		}
	}
	defer free()
	w1 := loginWire(t, d.addr)
	raw := "From: old@example.org\r\nSubject: the answer was lost\r\nX-TUID: AbCdEfGhIjKl\r\n\r\nHello.\r\n"
	w1.send(fmt.Sprintf("a1 APPEND INBOX (\\Seen) {%d+}\r\n%s\r\n", len(raw), raw))
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("the APPEND was not submitted")
	}
	w1.c.Close()
	w2 := loginWire(t, d.addr)
	w2.send("s1 SELECT INBOX\r\n")
	// While the APPEND is held, no answer may come; a second is enough
	// to see one that comes at once.
	w2.c.SetReadDeadline(time.Now().Add(time.Second))
	if line, err := w2.br.ReadString('\n'); err == nil {
		t.Errorf("SELECT answered while an APPEND into INBOX was underway: %q", line)
	}
	free()
	var got []string
	for range 50 {
		l := w2.response()
		got = append(got, l)
		if strings.HasPrefix(l, "s1 ") {
			break
		}
	}
	if !strings.Contains(strings.Join(got, ""), "* 1 EXISTS") {
		t.Errorf("SELECT after the broken APPEND: %q, want 1 EXISTS", got)
	}
}
