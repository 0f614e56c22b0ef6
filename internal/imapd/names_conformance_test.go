package imapd

import (
	"context"
	"strings"
	"testing"
)

// Mailbox names (RFC 3501 section 5.1 and 5.1.3, RFC 9051 section 5.1):
// modified UTF-7, every printable atom character, quoted and literal
// names; accepted and listed back exactly, or refused with a reason.
func TestNamesConformance(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	// Each is created as written and listed back as the wire form given.
	for _, c := range []struct{ create, listed string }{
		{`"&AOQA5A-"`, `"&AOQA5A-"`},                                                 // äö
		{`"Projekte &APwA,A-"`, `"Projekte &APwA,A-"`},                               // Projekte üü
		{`"&ZeVnLIqe-"`, `"&ZeVnLIqe-"`},                                             // 日本語
		{`"&2D3eAA-"`, `"&2D3eAA-"`},                                                 // U+1F600, a surrogate pair
		{`"Fish &- Chips"`, `"Fish &- Chips"`},                                       // & itself
		{`!#$'+,-.0:;<=>?@^_` + "`" + `|~[]`, `"!#$'+,-.0:;<=>?@^_` + "`" + `|~[]"`}, // every atom-specials-free printable
		{`"with space"`, `"with space"`},
		{`"quote\"and\\back"`, `"quote\"and\\back"`},
		{"{9}\r\nliteral n", `"literal n"`},
		{`"Parent/Child/"`, `"Parent/Child"`},
	} {
		w.ok("CREATE " + c.create)
		u := w.ok(`LIST "" ` + c.listed)
		if len(u) != 1 || !strings.HasSuffix(strings.TrimSuffix(u[0], "\r\n"), ` "/" `+c.listed) {
			t.Errorf("CREATE %s then LIST %s: %q", c.create, c.listed, u)
		}
		u = w.ok("STATUS " + c.listed + " (MESSAGES)")
		if len(u) != 1 || !strings.HasPrefix(u[0], "* STATUS "+c.listed+" (MESSAGES 0)") {
			t.Errorf("STATUS %s: %q", c.listed, u)
		}
	}
	// Refusals: NO [CANNOT] with the reason, never [SERVERBUG]; names
	// quoted as the client spells them.
	for _, c := range []struct{ cmd, want, text string }{
		{`CREATE "Projekte &APwA/A-"`, "NO [CANNOT]", "not modified UTF-7"}, // "/" is not modified base64
		{`CREATE "&Jjo"`, "NO [CANNOT]", "not modified UTF-7"},              // no "-"
		// go-imap refuses these too (RFC 3501 section 5.1.3), and they got
		// NO [SERVERBUG]: a run that encodes printable ASCII ("a", which
		// represents itself), two runs with nothing between them, a run
		// with base64 padding.
		{`CREATE "&AGE-"`, "NO [CANNOT]", "not modified UTF-7"},
		{`SELECT "x&AGE-"`, "NO [CANNOT]", "not modified UTF-7"},
		{`CREATE "&AOQ-&AOQ-"`, "NO [CANNOT]", "not modified UTF-7"},
		{`CREATE "&AOQ=-"`, "NO [CANNOT]", "not modified UTF-7"},
		{`CREATE "/lead"`, "NO [CANNOT]", "empty level"},
		{`CREATE "two//slashes"`, "NO [CANNOT]", "empty level"},
		{`CREATE "Projekte &APwA,A-"`, "NO [ALREADYEXISTS]", `"Projekte &APwA,A-"`},
		{`DELETE "nope &APwA,A-"`, "NO [NONEXISTENT]", `"nope &APwA,A-"`},
		{`RENAME "nope &APwA,A-" x`, "NO [NONEXISTENT]", `"nope &APwA,A-"`},
		{`SELECT "nope &APwA,A-"`, "NO [NONEXISTENT]", `"nope &APwA,A-"`},
		{`RENAME "&AOQA5A-" "Projekte &APwA,A-"`, "NO [ALREADYEXISTS]", `"Projekte &APwA,A-"`},
		{`APPEND "nope &APwA,A-" {3}` + "\r\nhi\n", "NO [TRYCREATE]", `"nope &APwA,A-"`},
		// An atom is 7-bit (RFC 9051 section 9); GNU Mailutils sends a
		// name from its URL as it is, and these got NO [SERVERBUG].
		{`EXAMINE Projekte/Grüße`, "BAD [CLIENTBUG]", `"Projekte/Grüße" holds 8-bit characters`},
		{`STATUS Grüße (MESSAGES)`, "BAD [CLIENTBUG]", `"Grüße" holds 8-bit characters`},
		{`CREATE Grüße`, "BAD [CLIENTBUG]", `"Grüße" holds 8-bit characters`},
		{`LIST "" Grüße*`, "BAD [CLIENTBUG]", `"Grüße*" holds 8-bit characters`},
		{"SELECT Gr\xfc\xdfe", "BAD [CLIENTBUG]", `"Gr?e" holds 8-bit characters`},
	} {
		_, tagged := w.run(c.cmd)
		if status(tagged) != c.want || !strings.Contains(tagged, c.text) {
			t.Errorf("%s: got %q, want %s with %s", c.cmd, tagged, c.want, c.text)
		}
	}
	// After ENABLE UTF8=ACCEPT (RFC 6855) names are UTF-8 both ways, in
	// error texts too.
	w.ok(`ENABLE UTF8=ACCEPT`)
	u := w.ok(`LIST "" "Projekte*"`)
	expectUntagged(t, "LIST after UTF8=ACCEPT", u, `* LIST (\HasNoChildren) "/" "Projekte üü"`)
	_, tagged := w.run(`DELETE "nope üü"`)
	if status(tagged) != "NO [NONEXISTENT]" || !strings.Contains(tagged, `"nope üü"`) {
		t.Errorf("DELETE after UTF8=ACCEPT: %q", tagged)
	}
}

// TestRenameRefusedBeforeTheLog: a RENAME the apply rejects (into the
// mailbox's own hierarchy; one that would give a mailbox below it the name
// of another) is refused before its entry is appended. It was answered NO
// only once the entry had been appended and rejected, and every device
// then listed a rejected entry in its status ("position 39: invalid
// (cannot rename "x" into itself)") for good.
func TestRenameRefusedBeforeTheLog(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	for _, c := range []string{`CREATE "x"`, `CREATE "a/x"`, `CREATE "b/x"`, `DELETE "b"`} {
		w.ok(c)
	}
	for _, c := range []struct{ cmd, want, text string }{
		{`RENAME "x" "x/y"`, "NO [CANNOT]", `"x" cannot be renamed into itself`},
		{`RENAME "a" "a/b/c"`, "NO [CANNOT]", `"a" cannot be renamed into itself`},
		{`RENAME "a" "b"`, "NO [ALREADYEXISTS]", `"b/x" exists already ("a/x" would be renamed to it)`},
	} {
		_, tagged := w.run(c.cmd)
		if status(tagged) != c.want || !strings.Contains(tagged, c.text) {
			t.Errorf("%s: got %q, want %s with %s", c.cmd, tagged, c.want, c.text)
		}
	}
	w.ok(`RENAME "a" "c"`)
	u := w.ok(`LIST "" "c*"`)
	expectUntagged(t, "LIST after the rename", u, `* LIST (\HasChildren) "/" "c"`, `* LIST (\HasNoChildren) "/" "c/x"`)

	// A rename that would give a mailbox below it a name over 1000 bytes,
	// which no command can carry: it was done, and that mailbox could be
	// neither deleted nor renamed again (NO [SERVERBUG], the change could
	// not be submitted), on every device.
	child := strings.Repeat("x", 990)
	long := strings.Repeat("y", 900)
	w.ok(`CREATE "p/` + child + `"`)
	_, tagged := w.run(`RENAME "p" "` + long + `"`)
	if status(tagged) != "NO [CANNOT]" || !strings.Contains(tagged, "names are at most 1000 bytes long") {
		t.Errorf("RENAME giving a child a name of %d bytes: got %q, want NO [CANNOT] naming the length", len(long)+1+len(child), tagged)
	}
	w.ok(`DELETE "p/` + child + `"`)
	// One byte less is taken, and the child can be deleted.
	short := long[:1000-len(child)-1]
	w.ok(`CREATE "p/` + child + `"`)
	w.ok(`RENAME "p" "` + short + `"`)
	w.ok(`DELETE "` + short + "/" + child + `"`)
	if n, err := d.store.RejectedCount(context.Background()); err != nil || n != 0 {
		t.Errorf("the device holds %d rejected entries (%v), want none", n, err)
	}
}
