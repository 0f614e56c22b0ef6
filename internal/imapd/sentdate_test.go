package imapd

import (
	"fmt"
	"strings"
	"testing"
)

// appendRaw appends msg (lines ending in LF, sent with CRLF) to INBOX with
// the internal date date over rc, and fails the test unless it is
// appended.
func appendRaw(t *testing.T, rc *rawConn, tag, date, msg string) {
	t.Helper()
	msg = strings.ReplaceAll(msg, "\n", "\r\n")
	rc.cmd(fmt.Sprintf("%s APPEND INBOX %q {%d+}\r\n%s", tag, date, len(msg), msg))
	if got := rc.until(tag + " "); !strings.Contains(got, tag+" OK") {
		t.Fatalf("APPEND %s: %q", tag, got)
	}
}

// TestSentDateFallsBackToInternalDate: a message whose Date field does
// not parse, or that has none, has a NIL envelope date, and it matched no
// SENTBEFORE, SENTON or SENTSINCE at all, so that a client asking for the
// mail sent before a date and the mail sent since it found it in
// neither. Its sent date is now its internal date, as RFC 5256 section
// 2.2 takes it for SORT.
func TestSentDateFallsBackToInternalDate(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	appendRaw(t, rc, "p1", "05-Mar-2020 10:00:00 +0000",
		"From: a@example.org\nSubject: bad date\nDate: not a date at all\n\nbody\n")
	appendRaw(t, rc, "p2", "07-Mar-2020 23:30:00 -0300", // 8 March in UTC, as BEFORE and SINCE take it
		"From: a@example.org\nSubject: no date\n\nbody\n")
	appendRaw(t, rc, "p3", "06-Dec-2026 10:00:00 +0000",
		"From: a@example.org\nSubject: dated\nDate: Wed, 1 Jan 2019 08:00:00 +0000\n\nbody\n")
	rc.cmd("a3 NOOP")
	rc.until("a3 ")
	runRaw(t, rc, []rawCase{
		{"s1 FETCH 1:2 (ENVELOPE)", `* 1 FETCH (ENVELOPE (NIL "bad date"`},
		{"s2 SEARCH SENTON 5-Mar-2020", "* SEARCH 1\r\ns2 OK"},
		{"s3 SEARCH SENTBEFORE 6-Mar-2020", "* SEARCH 1 3\r\ns3 OK"},
		{"s4 SEARCH SENTSINCE 6-Mar-2020", "* SEARCH 2\r\ns4 OK"},
		{"s5 SEARCH SENTON 8-Mar-2020", "* SEARCH 2\r\ns5 OK"},
		{"s6 SEARCH NOT SENTON 5-Mar-2020", "* SEARCH 2 3\r\ns6 OK"},
		{"s7 SEARCH SENTON 1-Jan-2019", "* SEARCH 3\r\ns7 OK"},
	})
}
