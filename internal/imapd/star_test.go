package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// TestStarAfterHeldExpunge: * is the client's last message (RFC 9051
// section 9) even when another session expunged it and the EXPUNGE is
// held back from this one (a FETCH, STORE or SEARCH by number may not
// send it, section 7.5.1). * was the last message still in the mailbox:
// STORE * flagged a message the client had not named, COPY * copied it,
// and UID STORE 5:* then UID EXPUNGE 5:* removed it.
func TestStarAfterHeldExpunge(t *testing.T) {
	t.Parallel()
	_, a, b := twoSessions(t, 5)
	b.ok("STORE 5 +FLAGS.SILENT (\\Deleted)")
	b.ok("EXPUNGE")
	// The expunge is held back from a's view, which still has 5.
	a.ok("FETCH 1 (UID)")
	// SELECTs refused before they leave the mailbox (a syntax error, a
	// name go-imap cannot decode) and a CLOSE with an argument: INBOX
	// stays selected, with the client's count (it was forgotten, and *
	// was the last message still there again).
	for _, c := range []string{`SELECT INBOX (CONDSTORE)`, `SELECT "&"`, `EXAMINE`, `CLOSE x`, `UNSELECT x`} {
		if _, tagged := a.run(c); strings.Contains(tagged, " OK") {
			t.Fatalf("%s: %q, want it refused", c, tagged)
		}
	}
	for _, c := range []struct{ cmd, tagged string }{
		{"STORE * +FLAGS (\\Flagged)", "OK"},
		{"STORE 5:* +FLAGS (\\Seen)", "OK"},
		{"FETCH * (UID)", "OK"},
		{"SEARCH *", "OK"},
		{"SEARCH 4:*", "OK"},
		{"COPY * Kept", "NO [EXPUNGEISSUED]"},
		// A UID command: the held EXPUNGE goes out after it.
		{"UID STORE 5:* +FLAGS (\\Deleted)", "OK"},
	} {
		untagged, tagged := a.run(c.cmd)
		if !strings.Contains(tagged, " "+c.tagged) {
			t.Errorf("%s: %q, want %s", c.cmd, tagged, c.tagged)
		}
		for _, u := range untagged {
			if strings.HasPrefix(u, "* 4 FETCH") || strings.Contains(u, "UID 4 ") || strings.Contains(u, "UID 4)") ||
				(strings.HasPrefix(u, "* SEARCH") && strings.TrimSpace(u) != "* SEARCH" && c.cmd == "SEARCH *") {
				t.Errorf("%s acted on message 4, which the client did not name: %q", c.cmd, u)
			}
		}
		if c.cmd == "SEARCH 4:*" && (len(untagged) != 1 || strings.TrimSpace(untagged[0]) != "* SEARCH 4") {
			t.Errorf("SEARCH 4:*: %q, want * SEARCH 4", untagged)
		}
	}
	a.ok("UID EXPUNGE 5:*")
	a.ok("NOOP")
	got := strings.Join(a.ok("UID FETCH 1:* (FLAGS)"), "")
	if _, line, ok := strings.Cut(got, "UID 4 "); !ok {
		t.Errorf("message 4 is gone after the commands on *: %q", got)
	} else if line, _, _ = strings.Cut(line, "\n"); strings.Contains(line, "Flagged") || strings.Contains(line, "Seen") || strings.Contains(line, "Deleted") {
		t.Errorf("message 4 after the commands on *: %q, want none of their flags", line)
	}
	if n := strings.Count(got, "FETCH"); n != 4 {
		t.Errorf("%d messages left, want 4: %q", n, got)
	}
	if u := b.ok("STATUS Kept (MESSAGES)"); !strings.Contains(strings.Join(u, ""), "MESSAGES 0") {
		t.Errorf("Kept: %q, want nothing copied", u)
	}
}

// twoSessions is a device with n messages in INBOX, a mailbox Kept, and
// two sessions with INBOX selected.
func twoSessions(t *testing.T, n int) (d *device, a, b *wire) {
	t.Helper()
	r := newRig(t)
	d = r.device("a")
	for i := 1; i <= n; i++ {
		d.synced(r.Deliver([]byte(fmt.Sprintf("From: a@example.org\r\nSubject: m%d\r\n\r\nbody %d\r\n", i, i))))
	}
	a, b = loginWire(t, d.addr), loginWire(t, d.addr)
	a.ok("CREATE Kept")
	a.ok("SELECT INBOX")
	b.ok("SELECT INBOX")
	return d, a, b
}
