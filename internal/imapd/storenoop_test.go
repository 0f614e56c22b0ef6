package imapd

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"cspool/internal/command"
)

// TestStoreUnchangedWritesNothing: a STORE that changes no message's
// flags is answered as before (a FETCH of each message's flags, unless
// .SILENT) and writes no entry; one that changes some names only those.
// Each such STORE of 1:* wrote 16 bytes a message of the mailbox to the
// log, the spool and every device, however often a client sent it.
func TestStoreUnchangedWritesNothing(t *testing.T) {
	const n = 40
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for i := 0; i < n; i++ {
		pos = r.Deliver(fmt.Appendf(nil, "From: bob@example.org\r\nSubject: %d\r\nMessage-ID: <noop-%d@example.org>\r\n\r\nbody %d\r\n", i, i, i))
	}
	d.synced(pos)
	var mu sync.Mutex
	var submitted []int // the number of messages of each command submitted
	d.sub.set(false, func(cmds []*command.Command) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cmds {
			submitted = append(submitted, len(c.IDs))
		}
	})
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 OK")
	for i, tc := range []struct {
		line    string
		fetches int   // FETCH responses
		want    []int // messages of each command submitted
	}{
		{`STORE 1:* +FLAGS (\Seen)`, n, []int{n}},
		{`STORE 1:* +FLAGS (\Seen)`, n, nil},
		{`STORE 1:* +FLAGS.SILENT (\seen)`, 0, nil},
		{`STORE 1:* -FLAGS (\Flagged)`, n, nil},
		{`STORE 1:* FLAGS (\Seen)`, n, nil},
		{`STORE 1:* +FLAGS.SILENT (\Seen $Label)`, 0, []int{n}},
		{`STORE 1:* +FLAGS.SILENT ($label)`, 0, nil},
		{`STORE 1:* FLAGS.SILENT ($LABEL \Seen)`, 0, nil},
		{`STORE 2 -FLAGS.SILENT ($LABEL)`, 0, []int{1}},
		{`STORE 1:* +FLAGS ($Label)`, n, []int{1}},
		{`UID STORE 1:* +FLAGS.SILENT (\Seen)`, 0, nil},
		{`STORE 1:* FLAGS.SILENT ()`, 0, []int{n}},
		{`STORE 1:* FLAGS.SILENT ()`, 0, nil},
		{`STORE 1:* -FLAGS.SILENT (\Seen)`, 0, nil},
	} {
		mu.Lock()
		submitted = nil
		mu.Unlock()
		tag := fmt.Sprintf("s%d", i)
		rc.cmd(tag + " " + tc.line)
		got := rc.until(tag + " ")
		if !strings.Contains(got, tag+" OK") {
			t.Fatalf("%s: %s", tc.line, got)
		}
		if c := strings.Count(got, " FETCH ("); c != tc.fetches {
			t.Errorf("%s: %d FETCH responses, want %d:\n%s", tc.line, c, tc.fetches, got)
		}
		mu.Lock()
		if fmt.Sprint(submitted) != fmt.Sprint(tc.want) {
			t.Errorf("%s: commands of %v messages submitted, want %v", tc.line, submitted, tc.want)
		}
		mu.Unlock()
	}
	rc.cmd("f FETCH 2 (FLAGS)")
	if got := rc.until("f "); !strings.Contains(got, `* 2 FETCH (FLAGS (\Recent))`) {
		t.Errorf("message 2 after the STOREs: %s", got)
	}
}
