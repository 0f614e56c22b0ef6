package imapd

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGnus drives Emacs's Gnus (its nnimap back end, written on Emacs's
// own IMAP code) in batch mode with the script testdata/gnus.el, through a
// proxy that records its IMAP conversation: it lists the folders (nested,
// one with "&", one with non-ASCII letters) and subscribes to them,
// fetches the summary (BODYSTRUCTURE, BODY.PEEK[HEADER.FIELDS ...]),
// reads a nested multipart message part by part and shows its
// quoted-printable part decoded, ticks one message, marks another read,
// moves one to Grüße and deletes and expunges one. Another session finds
// each change, and the conversation holds no NO or BAD.
func TestGnus(t *testing.T) {
	t.Parallel()
	emacs := needTool(t, "emacs")
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for _, m := range []string{messages["plain"], nestedMessage, messages["latin1"], messages["multipart"]} {
		pos = r.Deliver([]byte(m))
	}
	d.synced(pos)
	w := loginWire(t, d.addr)
	w.ok("CREATE Work/2025/")
	w.ok(`CREATE "Bills &- Tax"`)
	w.ok(`CREATE "Gr&APwA3w-e"`)
	proxy := newIMAPProxy(t, d.addr)
	dir := t.TempDir()
	_, port, _ := net.SplitHostPort(proxy.addr)
	auth := fmt.Sprintf("machine 127.0.0.1 port %s login alice password %q\n", port, testPassword)
	if err := os.WriteFile(filepath.Join(dir, "authinfo"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	out := runEmacs(t, emacs, "gnus.el", "HOME="+dir, "GNUSDIR="+dir, "GNUSPORT="+port)
	defer func() {
		if t.Failed() {
			t.Logf("emacs:\n%s", out)
		}
	}()
	// Another session finds each change: 2 read and ticked, 4 read, 3
	// deleted and expunged, 1 moved to Grüße.
	if inbox, _ := scanBox(t, d, "INBOX"); inbox != `2[\Seen \Flagged] 4[\Seen]` {
		t.Errorf("INBOX after Gnus: %s, want 2[\\Seen \\Flagged] 4[\\Seen]", inbox)
	}
	w.ok(`SELECT "Gr&APwA3w-e"`)
	u := w.ok("FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
	if got := strings.Join(u, ""); len(u) != 1 || !strings.Contains(got, "Lunch on Friday") {
		t.Errorf("Grüße after Gnus moved a message there: %q", u)
	}
	checkConversation(t, proxy.lines())
}
