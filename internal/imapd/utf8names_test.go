package imapd

import (
	"strconv"
	"strings"
	"testing"
)

// TestUTF8NamesWithAmpersand: once a client enabled UTF8=ACCEPT (as
// Thunderbird does) or IMAP4rev2, "&" in a mailbox name is an ordinary
// character both ways (RFC 6855 section 3, RFC 9051 section 5.1). go-imap
// showed such a client "Fish &- Chips" for the mailbox "Fish & Chips", and
// refused CREATE "Rock & Roll" as not modified UTF-7.
func TestUTF8NamesWithAmpersand(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	old := loginWire(t, d.addr) // IMAP4rev1, modified UTF-7
	old.ok(`CREATE "Fish &- Chips"`)
	old.ok(`CREATE Victim`)

	w := loginWire(t, d.addr)
	expectUntagged(t, "ENABLE", w.ok(`ENABLE UTF8=ACCEPT`), `* ENABLED UTF8=ACCEPT`)
	expectUntagged(t, "LIST", w.ok(`LIST "" "Fish*"`), `* LIST (\HasNoChildren) "/" "Fish & Chips"`)
	expectUntagged(t, "STATUS", w.ok(`STATUS "Fish & Chips" (MESSAGES)`), `* STATUS "Fish & Chips" (MESSAGES 0)`)

	// Names with "&" quoted, as an atom, as literals synchronizing and
	// not, as a LIST pattern; each listed back in UTF-8 here and in
	// modified UTF-7 to the other session.
	for _, c := range []struct{ cmd, name, mutf7 string }{
		{`CREATE "Rock & Roll"`, "Rock & Roll", "Rock &- Roll"},
		{`CREATE R&B`, "R&B", "R&-B"},
		{"CREATE {9}\r\nTom&Jerry", "Tom&Jerry", "Tom&-Jerry"},
		{"CREATE {6+}\r\nA & B-", "A & B-", "A &- B-"},
		{`CREATE "&-"`, "&-", "&--"},
		{`CREATE "Bills & Receipts/2026 & on"`, "Bills & Receipts/2026 & on", "Bills &- Receipts/2026 &- on"},
	} {
		w.ok(c.cmd)
		expectUntagged(t, "LIST after "+c.cmd, w.ok("LIST \"\" {"+strconv.Itoa(len(c.name))+"}\r\n"+c.name),
			`* LIST (\HasNoChildren) "/" "`+c.name+`"`)
		expectUntagged(t, "LIST (modified UTF-7) after "+c.cmd, old.ok(`LIST "" "`+c.mutf7+`"`),
			`* LIST (\HasNoChildren) "/" "`+c.mutf7+`"`)
	}

	// The other commands that take names.
	w.ok(`RENAME "Tom&Jerry" "Tom & Jerry"`)
	expectUntagged(t, "LIST after RENAME", w.ok(`LIST "" "Tom*"`), `* LIST (\HasNoChildren) "/" "Tom & Jerry"`)
	w.ok(`SUBSCRIBE "Tom & Jerry"`)
	expectUntagged(t, "LSUB", w.ok(`LSUB "" "Tom*"`), `* LSUB () "/" "Tom & Jerry"`)
	// APPEND: the name is translated, a keyword holding "&" is not.
	w.ok("APPEND \"Rock & Roll\" (\\Seen R&D) {4}\r\nhi\r\n")
	u := w.ok(`SELECT "Rock & Roll"`)
	if !strings.Contains(strings.Join(u, ""), "* 1 EXISTS") {
		t.Errorf("SELECT after APPEND: %q", u)
	}
	expectUntagged(t, "FETCH", w.ok(`FETCH 1 FLAGS`), `* 1 FETCH (FLAGS (\Seen R&D \Recent))`)
	w.ok("APPEND {11}\r\nRock & Roll (\\Seen) {4}\r\nho\r\n") // the name as a literal
	expectUntagged(t, "STATUS after APPEND", old.ok(`STATUS "Rock &- Roll" (MESSAGES)`), `* STATUS "Rock &- Roll" (MESSAGES 2)`)
	w.ok(`COPY 1 "Fish & Chips"`)
	w.ok(`UID MOVE 1:* "Tom & Jerry"`)
	expectUntagged(t, "STATUS after COPY and MOVE", old.ok(`STATUS "Tom &- Jerry" (MESSAGES)`), `* STATUS "Tom &- Jerry" (MESSAGES 2)`)
	expectUntagged(t, "STATUS after COPY", old.ok(`STATUS "Fish &- Chips" (MESSAGES)`), `* STATUS "Fish &- Chips" (MESSAGES 1)`)
	w.ok(`DELETE "Tom & Jerry"`)
	expectUntagged(t, "LIST after DELETE", old.ok(`LIST "" "Tom*"`))

	// A name literal read ahead is dropped with a command the library
	// refuses before it, never read as a command of its own.
	_, tagged := w.run("COPY bad {18+}\r\nz1 DELETE Victim\r\n")
	if !strings.HasPrefix(status(tagged), "BAD") {
		t.Errorf("COPY with a bad set: %q, want BAD", tagged)
	}
	expectUntagged(t, "LIST after the refused COPY", w.ok(`LIST "" Victim`), `* LIST (\HasNoChildren) "/" "Victim"`)

	// IMAP4rev2 spells names in UTF-8 too.
	v := loginWire(t, d.addr)
	v.ok(`ENABLE IMAP4rev2`)
	expectUntagged(t, "LIST after IMAP4rev2", v.ok(`LIST "" "Fish*"`), `* LIST (\HasNoChildren) "/" "Fish & Chips"`)
	// A session that did not enable either still spells "&" as "&-".
	expectUntagged(t, "LIST in modified UTF-7", old.ok(`LIST "" "Fish*"`), `* LIST (\HasNoChildren) "/" "Fish &- Chips"`)
	if _, tagged := old.run(`CREATE "Rock & Roll 2"`); status(tagged) != "NO [CANNOT]" {
		t.Errorf("CREATE with a bare & in modified UTF-7: %q, want NO [CANNOT]", tagged)
	}
}
