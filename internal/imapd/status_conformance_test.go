package imapd

import (
	"strings"
	"testing"
)

// STATUS names at least one item (RFC 9051 section 9 and RFC 3501
// section 9: "(" status-att *(SP status-att) ")"), so STATUS with an
// empty list gets BAD, as Dovecot answers it; it was answered OK with
// "* STATUS INBOX ()". Nothing is written before the BAD, and a STATUS
// with items is answered as before.
func TestStatusEmptyListGetsBAD(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	for _, cmd := range []string{"STATUS INBOX ()", "STATUS INBOX ( )", "STATUS Trash ()"} {
		u, tagged := w.run(cmd)
		if len(u) != 0 || !strings.Contains(tagged, " BAD [CLIENTBUG] ") {
			t.Errorf("%s: got %q, %q; want BAD [CLIENTBUG] alone", cmd, u, tagged)
		}
	}
	u := w.ok("STATUS INBOX (MESSAGES)")
	expectUntagged(t, "STATUS INBOX (MESSAGES)", u, "* STATUS INBOX (MESSAGES 0)")
}
