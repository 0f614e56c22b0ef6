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

// CHECK is a command of the selected state (RFC 3501 section 6.4.1), and
// one in another state gets BAD or NO (RFC 3501 section 6): in the
// authenticated state, before any SELECT, after UNSELECT or CLOSE and
// after a SELECT that failed, it gets BAD, as Dovecot answers it; go-imap
// takes CHECK for NOOP in any state, and it was answered OK. With a
// mailbox selected it is still answered OK.
func TestCheckOnlyWhenSelected(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	bad := func(when string) {
		t.Helper()
		u, tagged := w.run("CHECK")
		if len(u) != 0 || !strings.Contains(tagged, " BAD [CLIENTBUG] ") {
			t.Errorf("CHECK %s: got %q, %q; want BAD [CLIENTBUG]", when, u, tagged)
		}
	}
	bad("before any SELECT")
	w.ok("SELECT INBOX")
	w.ok("CHECK")
	w.ok("UNSELECT")
	bad("after UNSELECT")
	w.ok("EXAMINE INBOX")
	w.ok("CHECK")
	w.ok("CLOSE")
	bad("after CLOSE")
	w.ok("SELECT INBOX")
	if _, tagged := w.run("SELECT nonexistent"); !strings.Contains(tagged, " NO ") {
		t.Fatalf("SELECT nonexistent: %q", tagged)
	}
	bad("after a SELECT that failed")
	w.ok("NOOP")
}
