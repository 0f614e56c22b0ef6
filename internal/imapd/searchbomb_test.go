package imapd

import (
	"fmt"
	"strings"
	"testing"

	"cspool/internal/testproc"
)

// TestSearchNestedTooDeep: a SEARCH whose keys nest beyond
// maxSearchDepth (lists, NOT and OR together) gets BAD before go-imap
// parses it, on its first line or on a line after a literal, and the
// connection goes on. go-imap parses NOT and OR by recursion, and so does
// the matcher: 12,000 NOTs in 48 KB grew a connection's stack to some 40
// MB, and 20 connections sending them took the daemon from 40 to 840 MB.
// Keys side by side are not nested, however many.
func TestSearchNestedTooDeep(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	deliverAll(r, d)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	nots := func(n int) string { return strings.Repeat("NOT ", n) + "ALL" }
	ors := func(n int) string { return strings.Repeat("OR ALL ", n) + "ALL" }
	tooDeep := "BAD [CLIENTBUG] search keys nested more than 1000 deep"
	for _, c := range []struct{ cmd, want string }{
		{"SEARCH " + nots(1000), "OK"},
		{"SEARCH " + nots(999) + " SEEN", "OK"},
		{"SEARCH " + ors(1000), "OK"},
		{"SEARCH " + strings.Repeat("NOT SEEN ", 3000) + "ALL", "OK"},
		{"SEARCH " + strings.Repeat("OR (NOT SEEN) ", 998) + "ALL", "OK"},
		{"SEARCH " + strings.Repeat("OR (NOT SEEN) ", 999) + "ALL", tooDeep},
		{"SEARCH " + nots(1001), tooDeep},
		{"SEARCH " + nots(12000), tooDeep},
		{"UID SEARCH " + ors(1001), tooDeep},
		{"SEARCH " + strings.Repeat("OR ALL NOT ", 501) + "ALL", tooDeep},
		{"SEARCH " + strings.Repeat("(NOT ", 501) + "ALL" + strings.Repeat(")", 501), tooDeep},
		// The line after a literal, and a literal after the line.
		{"SEARCH TEXT {5}\r\nLunch " + nots(1001), tooDeep},
		{"SEARCH " + nots(1001) + " TEXT {5}\r\nLunch", tooDeep},
		{"SEARCH SUBJECT {5}\r\nLunch " + nots(1000), "OK"},
	} {
		u, tagged := w.run(c.cmd)
		if !strings.Contains(tagged, " "+c.want) {
			t.Errorf("%.40s... (%d bytes): got %q (untagged %.100q), want %q", c.cmd, len(c.cmd), tagged, u, c.want)
		}
	}
	if u := w.ok("SEARCH SUBJECT Lunch"); len(u) != 1 || u[0] != "* SEARCH 1\r\n" {
		t.Errorf("SEARCH after the refused ones: %q", u)
	}
}

// TestSearchManySavedResults: each $ of a SEARCH (RFC 5182) looks the
// message up in the saved result by halving it, not from its start: 4,000
// $ after saving every message of 6,000 stepped through the saved result
// 24 million times a message, minutes of a core, answered now within the
// wire's deadline. Under the race detector, a mailbox of 1,000.
func TestSearchManySavedResults(t *testing.T) {
	t.Parallel()
	n := testproc.Scale(t, 1000, 6000)
	r := newRig(t)
	d := r.device("a")
	fillInbox(t, d, n)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	w.ok("SEARCH RETURN (SAVE) 2:*")
	u := w.ok("SEARCH" + strings.Repeat(" $", 4000))
	if len(u) != 1 || !strings.HasPrefix(u[0], "* SEARCH 2 3 ") || !strings.HasSuffix(u[0], fmt.Sprintf(" %d\r\n", n)) || strings.Count(u[0], " ") != n {
		t.Errorf("SEARCH $...: got %.60q...%d bytes, want * SEARCH 2 3 ... %d", u, len(strings.Join(u, "")), n)
	}
}
