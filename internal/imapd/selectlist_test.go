package imapd

import (
	"strings"
	"testing"
)

// TestSelectListsTheMailbox: in IMAP4rev2, SELECT and EXAMINE answer with a
// LIST response naming the mailbox, its attributes accurate (RFC 9051
// section 6.3.2, a required response); there was none. In IMAP4rev1 there
// is none.
func TestSelectListsTheMailbox(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	w.ok("CREATE INBOX/sub")
	if u := w.ok("SELECT INBOX"); strings.Contains(strings.Join(u, ""), "* LIST") {
		t.Errorf("IMAP4rev1 SELECT: %q, want no LIST", u)
	}
	w.ok("ENABLE IMAP4rev2")
	for _, c := range []struct{ cmd, want string }{
		{"SELECT INBOX", `* LIST (\HasChildren) "/" INBOX`},
		{"EXAMINE Trash", `* LIST (\HasNoChildren \Trash) "/" "Trash"`},
		{"SELECT INBOX/sub", `* LIST (\HasNoChildren) "/" "INBOX/sub"`},
	} {
		u := w.ok(c.cmd)
		n := 0
		for _, l := range u {
			if strings.HasPrefix(l, "* LIST") {
				n++
				if strings.TrimSpace(l) != c.want {
					t.Errorf("%s: %q, want %q", c.cmd, strings.TrimSpace(l), c.want)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d LIST responses in %q, want 1", c.cmd, n, u)
		}
	}
}
