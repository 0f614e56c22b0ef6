package imapd

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestFloodedSessionEnded: a session that selected a mailbox and then
// reads nothing gets at most maxUnread updates queued; past that it gets
// nothing more, and its next command is answered with BYE and the end of
// the connection (RFC 9051 section 7.1.5). A session that polls now and
// then, with NOOP, is never ended. Each update queued for a silent
// session stayed there until go-imap's 35 minutes without a command ran
// out: another session setting and clearing \Seen on 3,000 messages 20
// times grew each such session by 11 MB, and without end.
func TestFloodedSessionEnded(t *testing.T) {
	t.Parallel()
	const n = 1000
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for i := range n {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nSubject: %d\r\n\r\nx\r\n", i))
	}
	d.synced(pos)
	silent := loginWire(t, d.addr)
	silent.ok("SELECT INBOX")
	polling := loginWire(t, d.addr)
	polling.ok("SELECT INBOX")
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	// 14,000 flag changes; maxUnread(1000) is 12,000.
	for i := range 7 {
		w.ok(`STORE 1:* +FLAGS.SILENT (\Seen)`)
		w.ok(`STORE 1:* -FLAGS.SILENT (\Seen)`)
		if u := polling.ok("NOOP"); len(u) < n {
			t.Errorf("NOOP %d of the session that polls: %d updates, want at least %d", i, len(u), n)
		}
	}
	silent.n++
	silent.send(fmt.Sprintf("t%d NOOP\r\n", silent.n))
	if got := silent.response(); !strings.HasPrefix(got, "* BYE too many changes to the selected mailbox") {
		t.Errorf("NOOP of the silent session: got %.100q, want BYE", got)
	}
	silent.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if rest, err := io.ReadAll(silent.br); err != nil || len(rest) > 0 {
		t.Errorf("after BYE: %.100q, %v; want the connection closed", rest, err)
	}
	w.ok("NOOP")
	polling.ok("FETCH 1 (FLAGS)")
	if u := loginWire(t, d.addr).ok("SELECT INBOX"); !strings.Contains(strings.Join(u, ""), fmt.Sprintf("* %d EXISTS", n)) {
		t.Errorf("SELECT after: %q", u)
	}
}
