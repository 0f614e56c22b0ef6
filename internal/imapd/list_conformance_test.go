package imapd

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The hierarchy as LIST, LSUB and their extensions show it, from the RFCs'
// grammar and examples: RFC 3501 sections 6.3.8 and 6.3.9, RFC 9051
// section 6.3.9, RFC 5258 (LIST-EXTENDED), RFC 5819 (LIST-STATUS), RFC 6154
// (SPECIAL-USE), RFC 3348 (CHILDREN).

// hierarchy makes the tree the LIST tests look at: Work/2025/Q1 (Work
// deleted again, so it is a level with no mailbox), Projects (created with
// a trailing delimiter), Projects/cspool, and subscriptions to
// Work/2025/Q1 and to Gone (deleted after subscribing).
func hierarchy(t *testing.T, w *wire) {
	t.Helper()
	w.ok(`CREATE Work/2025/Q1`)
	w.ok(`DELETE Work`)
	w.ok(`CREATE Projects/`)
	w.ok(`CREATE "Projects/cspool"`)
	w.ok(`CREATE Gone`)
	w.ok(`SUBSCRIBE Work/2025/Q1`)
	w.ok(`SUBSCRIBE Gone`)
	w.ok(`DELETE Gone`)
}

func TestListDelimiterDiscovery(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	hierarchy(t, w)
	// RFC 3501 section 6.3.8: "" as the mailbox name returns the
	// delimiter and the root of the reference; no name here starts with
	// the delimiter, so the root is "".
	for _, cmd := range []string{`LIST "" ""`, `LIST "Trash" ""`, `LIST "Work/2025" ""`, `LIST Projects/ ""`} {
		u := w.ok(cmd)
		expectUntagged(t, cmd, u, `* LIST (\Noselect) "/" ""`)
	}
}

func TestListPatterns(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	hierarchy(t, w)
	top := []string{
		`* LIST (\HasNoChildren \Archive) "/" "Archive"`,
		`* LIST (\HasNoChildren \Drafts) "/" "Drafts"`,
		`* LIST (\HasNoChildren) "/" INBOX`,
		`* LIST (\HasNoChildren \Junk) "/" "Junk"`,
		`* LIST (\HasChildren) "/" "Projects"`,
		`* LIST (\HasNoChildren \Sent) "/" "Sent"`,
		`* LIST (\HasNoChildren \Trash) "/" "Trash"`,
		// RFC 3501 section 6.3.8: a level % matches that is not a
		// mailbox comes back \Noselect.
		`* LIST (\Noselect \HasChildren) "/" "Work"`,
	}
	for _, c := range []struct {
		cmd  string
		want []string
	}{
		{`LIST "" "%"`, top},
		{`LIST "" *`, []string{top[0], top[1], top[2], top[3], top[4],
			`* LIST (\HasNoChildren) "/" "Projects/cspool"`,
			top[5], top[6], top[7],
			`* LIST (\HasChildren) "/" "Work/2025"`,
			`* LIST (\HasNoChildren) "/" "Work/2025/Q1"`}},
		{`LIST "" "Work/%"`, []string{`* LIST (\HasChildren) "/" "Work/2025"`}},
		{`LIST "" "Work/%/%"`, []string{`* LIST (\HasNoChildren) "/" "Work/2025/Q1"`}},
		{`LIST "" "%/%"`, []string{`* LIST (\HasNoChildren) "/" "Projects/cspool"`, `* LIST (\HasChildren) "/" "Work/2025"`}},
		{`LIST "" "*/Q1"`, []string{`* LIST (\HasNoChildren) "/" "Work/2025/Q1"`}},
		{`LIST "" "W*"`, []string{top[7], `* LIST (\HasChildren) "/" "Work/2025"`, `* LIST (\HasNoChildren) "/" "Work/2025/Q1"`}},
		{`LIST "" "Proj%"`, []string{top[4]}},
		// A reference name is prefixed to the pattern (RFC 9051 section
		// 6.3.9), with the delimiter between them.
		{`LIST "Work/" "%"`, []string{`* LIST (\HasChildren) "/" "Work/2025"`}},
		{`LIST "Work/2025" "*"`, []string{`* LIST (\HasNoChildren) "/" "Work/2025/Q1"`}},
		{`LIST "Work" "/Q1"`, nil}, // a pattern starting with the delimiter is absolute
		{`LIST "" "inbox"`, []string{top[2]}},
		{`LIST "" "Nothing/*"`, nil},
		// A trailing delimiter on CREATE names the mailbox without it
		// (RFC 9051 section 6.3.4).
		{`LIST "" "Projects"`, []string{top[4]}},
		{`LIST "" "Projects/"`, nil},
		// Several patterns (RFC 5258 section 3).
		{`LIST "" ("INBOX" "Work/*")`, []string{top[2], `* LIST (\HasChildren) "/" "Work/2025"`, `* LIST (\HasNoChildren) "/" "Work/2025/Q1"`}},
		// Selection options (RFC 5258 section 3): SUBSCRIBED implies the
		// \Subscribed return; a subscribed name with no mailbox is
		// \NonExistent; RECURSIVEMATCH adds parents of subscribed names
		// the pattern stops short of, with CHILDINFO.
		{`LIST (SUBSCRIBED) "" "*"`, []string{
			`* LIST (\HasNoChildren \Subscribed \Archive) "/" "Archive"`,
			`* LIST (\HasNoChildren \Subscribed \Drafts) "/" "Drafts"`,
			`* LIST (\NonExistent \HasNoChildren \Subscribed) "/" "Gone"`,
			`* LIST (\HasNoChildren \Subscribed) "/" INBOX`,
			`* LIST (\HasNoChildren \Subscribed \Junk) "/" "Junk"`,
			`* LIST (\HasNoChildren \Subscribed \Sent) "/" "Sent"`,
			`* LIST (\HasNoChildren \Subscribed \Trash) "/" "Trash"`,
			`* LIST (\HasNoChildren \Subscribed) "/" "Work/2025/Q1"`}},
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" "W%"`, []string{
			`* LIST (\NonExistent \HasChildren) "/" "Work" (CHILDINFO ("SUBSCRIBED"))`}},
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work/%"`, []string{
			`* LIST (\HasChildren) "/" "Work/2025" (CHILDINFO ("SUBSCRIBED"))`}},
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work/*"`, []string{
			`* LIST (\HasNoChildren \Subscribed) "/" "Work/2025/Q1"`}},
		{`LIST (SPECIAL-USE) "" "*"`, []string{top[0], top[1], top[3], top[5], top[6]}},
		// Return options (RFC 5258 section 3, RFC 5819).
		{`LIST "" "Work/2025/%" RETURN (SUBSCRIBED CHILDREN)`, []string{`* LIST (\HasNoChildren \Subscribed) "/" "Work/2025/Q1"`}},
		{`LIST "" "P*" RETURN (CHILDREN STATUS (MESSAGES UIDNEXT))`, []string{
			`* LIST (\HasChildren) "/" "Projects"`, `* STATUS "Projects" (MESSAGES 0 UIDNEXT 1)`,
			`* LIST (\HasNoChildren) "/" "Projects/cspool"`, `* STATUS "Projects/cspool" (MESSAGES 0 UIDNEXT 1)`}},
	} {
		expectUntagged(t, c.cmd, w.ok(c.cmd), c.want...)
	}
}

// LSUB is IMAP4rev1's (RFC 3501 section 6.3.9): subscribed names, and with
// %, an unsubscribed level above a subscribed name as \Noselect.
func TestLsub(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	hierarchy(t, w)
	w.ok(`UNSUBSCRIBE Junk`)
	all := []string{
		`* LSUB () "/" "Archive"`,
		`* LSUB () "/" "Drafts"`,
		`* LSUB (\Noselect) "/" "Gone"`,
		`* LSUB () "/" INBOX`,
		`* LSUB () "/" "Sent"`,
		`* LSUB () "/" "Trash"`,
	}
	for _, c := range []struct {
		cmd  string
		want []string
	}{
		{`LSUB "" "*"`, append(append([]string{}, all...), `* LSUB () "/" "Work/2025/Q1"`)},
		{`LSUB "" "%"`, append(append([]string{}, all...), `* LSUB (\Noselect) "/" "Work"`)},
		{`LSUB "" "Work/%"`, []string{`* LSUB (\Noselect) "/" "Work/2025"`}},
		{`LSUB "Work/" "*"`, []string{`* LSUB () "/" "Work/2025/Q1"`}},
		{`LSUB "" "Junk"`, nil},
	} {
		expectUntagged(t, c.cmd, w.ok(c.cmd), c.want...)
	}
}

// Subscriptions are part of the user's state: they go through the log, so
// another device sees them (RFC 9051 section 6.3.7).
func TestSubscriptionsTravel(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	a, b := r.device("a"), r.device("b")
	wa := loginWire(t, a.addr)
	wa.ok(`CREATE Lists/go-nuts`)
	wa.ok(`SUBSCRIBE Lists/go-nuts`)
	wa.ok(`UNSUBSCRIBE Archive`)
	b.synced(r.Head())
	wb := loginWire(t, b.addr)
	u := wb.ok(`LSUB "" "*"`)
	got := strings.Join(u, "")
	if !strings.Contains(got, `"Lists/go-nuts"`) || strings.Contains(got, `"Archive"`) {
		t.Fatalf("device b's LSUB after device a's changes: %q", u)
	}
	wb.ok(`UNSUBSCRIBE Lists/go-nuts`)
	a.synced(r.Head())
	u = wa.ok(`LIST (SUBSCRIBED) "" "Lists/*"`)
	expectUntagged(t, "LIST (SUBSCRIBED) on device a", u)
}

// TestImaplibHierarchy has Python's imaplib learn the delimiter with LIST
// "" "" and the names with LIST "" "*", then walk the tree with %.
func TestImaplibHierarchy(t *testing.T) {
	t.Parallel()
	python := needTool(t, "python3")
	r := newRig(t)
	d := r.device("a")
	host, port, _ := net.SplitHostPort(d.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "testdata/imaplib_hierarchy.py", host, port, "alice", testPassword).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "PASS" {
		t.Fatalf("imaplib hierarchy script: %v\n%s", err, out)
	}
}
