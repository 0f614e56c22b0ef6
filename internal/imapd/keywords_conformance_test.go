package imapd

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// cmdLines sends a command and returns every line up to its tagged reply,
// which must be OK.
func (rc *rawConn) cmdLines(tag, args string) []line {
	rc.t.Helper()
	rc.cmd(tag + " " + args)
	got := rc.readUntil(10*time.Second, func(ls []line) bool {
		return strings.HasPrefix(ls[len(ls)-1].text, tag+" ")
	})
	if !strings.HasPrefix(got[len(got)-1].text, tag+" OK") {
		rc.t.Fatalf("%s: got\n%s", args, joinLines(got))
	}
	return got
}

// flagsBefore checks, as a client keeping FLAGS would, that every keyword
// a FETCH shows was listed by the latest FLAGS before it (RFC 9051
// section 7.3.5); known is the FLAGS the client had before these lines.
func flagsBefore(t *testing.T, known string, ls []line) string {
	t.Helper()
	for _, l := range ls {
		if strings.HasPrefix(l.text, "* FLAGS (") {
			known = l.text
			continue
		}
		i := strings.Index(l.text, "FLAGS (")
		if !strings.Contains(l.text, " FETCH ") || i < 0 {
			continue
		}
		list := l.text[i+len("FLAGS ("):]
		list = list[:strings.IndexByte(list, ')')]
		for _, f := range strings.Fields(list) {
			if !strings.HasPrefix(f, `\`) && !hasWord(known, f) {
				t.Errorf("%q shows %s, not in the FLAGS the client has (%q); lines:\n%s", l.text, f, known, joinLines(ls))
			}
		}
	}
	return known
}

func hasWord(flagsLine, f string) bool {
	for _, w := range strings.Fields(strings.Trim(strings.TrimPrefix(flagsLine, "* FLAGS "), "()")) {
		if strings.EqualFold(w, f) {
			return true
		}
	}
	return false
}

func findLine(ls []line, prefix string) string {
	for _, l := range ls {
		if strings.HasPrefix(l.text, prefix) {
			return l.text
		}
	}
	return ""
}

// TestKeywordsInFlags: SELECT's FLAGS and PERMANENTFLAGS list the system
// flags and the keywords in use in that mailbox, not those only used in
// other mailboxes or removed from their last message.
func TestKeywordsInFlags(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	for _, st := range []struct {
		uid  imap.UID
		op   imap.StoreFlagsOp
		flag imap.Flag
	}{{1, imap.StoreFlagsAdd, "Work"}, {2, imap.StoreFlagsAdd, "$Gone"}, {2, imap.StoreFlagsDel, "$Gone"}, {3, imap.StoreFlagsAdd, "$label1"}} {
		if err := c.Store(imap.UIDSetNum(st.uid), &imap.StoreFlags{Op: st.op, Silent: true, Flags: []imap.Flag{st.flag}}, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	msg := "Subject: elsewhere\r\n\r\nx\r\n"
	ac := c.Append("Sent", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{"Elsewhere"}})
	ac.Write([]byte(msg))
	ac.Close()
	if _, err := ac.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Logout().Wait()

	rc := dialRaw(t, d.addr)
	rc.cmdLines("a1", `LOGIN alice "`+testPassword+`"`)
	sel := rc.cmdLines("a2", "SELECT INBOX")
	if got, want := findLine(sel, "* FLAGS"), `* FLAGS (\Seen \Answered \Flagged \Deleted \Draft $label1 Work)`; got != want {
		t.Errorf("SELECT INBOX: %q, want %q", got, want)
	}
	if got, want := findLine(sel, "* OK [PERMANENTFLAGS"), `* OK [PERMANENTFLAGS (\Seen \Answered \Flagged \Deleted \Draft $label1 Work \*)] Permanent flags`; got != want {
		t.Errorf("SELECT INBOX: %q, want %q", got, want)
	}
	sel = rc.cmdLines("a3", "EXAMINE Sent")
	if got, want := findLine(sel, "* FLAGS"), `* FLAGS (\Seen \Answered \Flagged \Deleted \Draft Elsewhere)`; got != want {
		t.Errorf("EXAMINE Sent: %q, want %q", got, want)
	}
	sel = rc.cmdLines("a4", "SELECT Trash")
	if got, want := findLine(sel, "* FLAGS"), `* FLAGS (\Seen \Answered \Flagged \Deleted \Draft)`; got != want {
		t.Errorf("SELECT Trash: %q, want %q", got, want)
	}
}

// TestKeywordAnnounced: a keyword new to the mailbox, set by this session,
// another session or another device, comes with an untagged FLAGS (and
// PERMANENTFLAGS where the session writes it itself) before any FETCH
// that shows it: in STORE's answer, in a FETCH, in IDLE, and in a non-UID
// FETCH while an EXPUNGE must wait (RFC 9051 section 7.5.1).
func TestKeywordAnnounced(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a := r.device("a")
	deliverAll(r, a)
	b := r.device("b")
	b.synced(r.Head())

	rc := dialRaw(t, a.addr)
	rc.cmdLines("a1", `LOGIN alice "`+testPassword+`"`)
	known := findLine(rc.cmdLines("a2", "SELECT INBOX"), "* FLAGS")
	other := a.client(nil)
	mustSelect(t, other, "INBOX")
	cb := b.client(nil)
	mustSelect(t, cb, "INBOX")

	// Its own STORE: FLAGS and PERMANENTFLAGS come before the FETCH.
	got := rc.cmdLines("s1", "STORE 1 +FLAGS (Own)")
	known = flagsBefore(t, known, got)
	if !hasWord(known, "Own") || findLine(got, "* OK [PERMANENTFLAGS") == "" {
		t.Errorf("STORE of a new keyword:\n%s", joinLines(got))
	}

	// Another session and another device, seen with NOOP.
	storeUID(t, other, 2, "FromSession")
	storeUID(t, cb, 3, "FromDevice")
	a.synced(r.Head())
	got = rc.cmdLines("n1", "NOOP")
	known = flagsBefore(t, known, got)
	if !strings.Contains(joinLines(got), "FETCH (UID 3 FLAGS (FromDevice") || !hasWord(known, "FromSession") {
		t.Errorf("NOOP after keywords from elsewhere:\n%s", joinLines(got))
	}

	// The same in IDLE.
	rc.cmd("i1 IDLE")
	rc.until("+ ")
	storeUID(t, cb, 4, "InIdle")
	got = rc.readUntil(10*time.Second, func(ls []line) bool {
		return strings.Contains(ls[len(ls)-1].text, "InIdle")
	})
	known = flagsBefore(t, known, got)
	rc.cmd("DONE")
	rc.until("i1 OK")

	// An EXPUNGE queued ahead of the FLAGS: a non-UID FETCH may not write
	// the EXPUNGE, so the FLAGS the store's flags need is written by the
	// FETCH itself.
	storeUID(t, other, 1, imap.FlagDeleted)
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	storeUID(t, other, 3, "BehindExpunge")
	got = rc.cmdLines("f1", "FETCH 1:4 (UID FLAGS)")
	known = flagsBefore(t, known, got)
	if strings.Contains(joinLines(got), "EXPUNGE") || !hasWord(known, "BehindExpunge") {
		t.Errorf("FETCH with an EXPUNGE waiting:\n%s", joinLines(got))
	}
	got = rc.cmdLines("n2", "NOOP")
	known = flagsBefore(t, known, got)
	if findLine(got, "* 1 EXPUNGE") == "" {
		t.Errorf("NOOP after the FETCH:\n%s", joinLines(got))
	}

	// A FLAGS queued ahead of the EXPUNGE, and a keyword set after it:
	// the FETCH writes the full list itself, then the poll after it
	// writes the older, shorter FLAGS from the queue. The client's list
	// shrank until a command that may write the EXPUNGE; the full list
	// now follows at once.
	storeUID(t, other, 2, "QueuedFirst")
	storeUID(t, other, 2, imap.FlagDeleted)
	if err := other.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	storeUID(t, other, 3, "AfterExpunge")
	got = rc.cmdLines("f2", "FETCH 1:3 (UID FLAGS)")
	flagsBefore(t, known, got)
	last := ""
	for _, l := range got {
		if strings.HasPrefix(l.text, "* FLAGS") {
			last = l.text
		}
	}
	if !hasWord(last, "AfterExpunge") || !hasWord(last, "QueuedFirst") {
		t.Errorf("the last FLAGS of a FETCH with an older FLAGS queued ahead of an EXPUNGE is %q, want every keyword:\n%s", last, joinLines(got))
	}
}
