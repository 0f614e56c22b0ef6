package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// TestKeywordsBounded: a STORE or APPEND that would bring the keywords in
// use in a mailbox beyond maxKeywords gets NO [LIMIT] (RFC 5530) and
// changes nothing; keywords in use already, and clearing keywords, are
// taken. One STORE 1:* of 6,715 keywords on 3,000 messages took 17 s to
// apply and the daemon to 860 MB, and its FETCH FLAGS 1:* was 141 MB.
func TestKeywordsBounded(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	kws := func(from, to int) string {
		var k []string
		for i := from; i <= to; i++ {
			k = append(k, fmt.Sprintf("k%04d", i))
		}
		return strings.Join(k, " ")
	}
	limit := "NO [LIMIT] the mailbox would have 257 keywords, and may have at most 256"
	msg := "From: a@example.org\r\nSubject: kw\r\n\r\nx\r\n"
	for _, c := range []struct{ cmd, want string }{
		{"STORE 1 +FLAGS.SILENT (" + kws(1, 256) + ")", "OK"},
		{"STORE 2 +FLAGS.SILENT (extra)", limit},
		{"STORE 2 FLAGS.SILENT (\\Seen extra)", limit},
		{fmt.Sprintf("APPEND INBOX (extra) {%d+}\r\n%s", len(msg), msg), limit},
		{"STORE 1:4 +FLAGS.SILENT (K0001 \\Flagged)", "OK"},
		{fmt.Sprintf("APPEND INBOX (k0003 \\Seen) {%d+}\r\n%s", len(msg), msg), "OK"},
		{fmt.Sprintf("APPEND Trash (%s) {%d+}\r\n%s", kws(1, 257), len(msg), msg), strings.Replace(limit, "[LIMIT]", "[LIMIT]", 1)},
		{"STORE 1:* +FLAGS.SILENT (" + kws(1, 6715) + ")", "NO [LIMIT] the mailbox would have 6715 keywords"},
		// k0002 leaves its last message: room for one more.
		{"STORE 1 -FLAGS.SILENT (k0002)", "OK"},
		{"STORE 2 +FLAGS.SILENT (extra)", "OK"},
		{"STORE 3 +FLAGS.SILENT (another)", limit},
	} {
		u, tagged := w.run(c.cmd)
		if !strings.Contains(tagged, " "+c.want) {
			t.Errorf("%.50s... (%d bytes): got %q (untagged %.100q), want %q", c.cmd, len(c.cmd), tagged, u, c.want)
		}
	}
	u := w.ok("FETCH 3 (FLAGS)")
	if f := u[len(u)-1]; f != "* 3 FETCH (FLAGS (\\Flagged k0001 \\Recent))\r\n" {
		t.Errorf("FETCH 3 (FLAGS) after the refused STOREs: %q, want only what was taken", f)
	}
	u = w.ok("SELECT INBOX")
	if got := strings.Join(u, ""); strings.Count(got, " k0") != 2*255 || !strings.Contains(got, " extra") {
		t.Errorf("SELECT INBOX: FLAGS and PERMANENTFLAGS should list the 256 keywords in use: %.300q", got)
	}
}
