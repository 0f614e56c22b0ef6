package imapd

import (
	"strings"
	"testing"
)

// UID COPY and UID MOVE of UIDs that name no message, and COPY of an empty
// saved search result, do nothing and answer OK (RFC 9051 section 6.4.9:
// "it is possible for a UID FETCH command to return an OK without any
// data or a UID COPY, UID MOVE, or UID STORE to return an OK without
// performing any operations"; RFC 5182 section 2.1). They were answered
// NO [EXPUNGEISSUED] "none of these messages exist any more", telling the
// client another session had expunged messages it never had.
func TestUIDCopyOfNoMessage(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	for _, cmd := range []string{
		"UID COPY 99 Trash",
		"UID COPY 5:4294967295 Trash",
		"UID MOVE 99,100 Trash",
		"SEARCH RETURN (SAVE) SUBJECT nothing-has-this",
		"COPY $ Trash",
		"UID MOVE $ Trash",
	} {
		u, tagged := w.run(cmd)
		if status(tagged) != "OK" || strings.Contains(tagged, "COPYUID") || len(u) != 0 {
			t.Errorf("%s: got %q %q, want OK alone, without COPYUID", cmd, u, tagged)
		}
	}
	u := w.ok("STATUS Trash (MESSAGES)")
	expectUntagged(t, "STATUS Trash", u, `* STATUS "Trash" (MESSAGES 0)`)
	u = w.ok("STATUS INBOX (MESSAGES)")
	expectUntagged(t, "STATUS INBOX", u, `* STATUS INBOX (MESSAGES 4)`)
	// A UID that names a message is copied, among others that do not.
	_, tagged := w.run("UID COPY 2,99 Trash")
	if !strings.HasPrefix(status(tagged), "OK [COPYUID") {
		t.Errorf("UID COPY 2,99: got %q, want OK [COPYUID ...]", tagged)
	}
}
