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
// not parse (its envelope's date is the field's text), or that has none
// (NIL), has no date to search by, and it matched no
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
		{"s1 FETCH 1:2 (ENVELOPE)", `* 1 FETCH (ENVELOPE ("not a date at all" "bad date"`},
		{"s2 SEARCH SENTON 5-Mar-2020", "* SEARCH 1\r\ns2 OK"},
		{"s3 SEARCH SENTBEFORE 6-Mar-2020", "* SEARCH 1 3\r\ns3 OK"},
		{"s4 SEARCH SENTSINCE 6-Mar-2020", "* SEARCH 2\r\ns4 OK"},
		{"s5 SEARCH SENTON 8-Mar-2020", "* SEARCH 2\r\ns5 OK"},
		{"s6 SEARCH NOT SENTON 5-Mar-2020", "* SEARCH 2 3\r\ns6 OK"},
		{"s7 SEARCH SENTON 1-Jan-2019", "* SEARCH 3\r\ns7 OK"},
	})
}

// TestSearchImpossibleDay: a SEARCH date's day is 1*2DIGIT (RFC 9051
// section 9), so SENTON 31-Feb-2020 is a valid command; go-imap's parser
// refused it and the framer answered BAD. Such a date is now searched as
// the gap between the last day of its month and the first of the next:
// BEFORE finds what is before that first day, SINCE what is from it on,
// ON nothing (searchdate.go). A date in a key's argument is left as it is.
func TestSearchImpossibleDay(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	appendRaw(t, rc, "p1", "29-Feb-2020 10:00:00 +0000",
		"From: a@example.org\nSubject: leap\nDate: Sat, 29 Feb 2020 10:00:00 +0000\n\nbody\n")
	appendRaw(t, rc, "p2", "01-Mar-2020 10:00:00 +0000",
		"From: a@example.org\nSubject: march\nDate: Sun, 1 Mar 2020 10:00:00 +0000\n\nbody\n")
	appendRaw(t, rc, "p3", "31-Jan-2024 10:00:00 +0000",
		"From: a@example.org\nSubject: later\nDate: Wed, 31 Jan 2024 10:00:00 +0000\n\nbody\n")
	rc.cmd("a3 NOOP")
	rc.until("a3 ")
	runRaw(t, rc, []rawCase{
		{"s1 SEARCH SENTON 31-Feb-2020", "* SEARCH\r\ns1 OK"},
		{"s2 SEARCH SENTBEFORE 31-Feb-2020", "* SEARCH 1\r\ns2 OK"},
		{"s3 SEARCH SENTSINCE 31-feb-2020", "* SEARCH 2 3\r\ns3 OK"},
		{"s4 SEARCH NOT SENTON 30-Feb-2020", "* SEARCH 1 2 3\r\ns4 OK"},
		{"s5 UID SEARCH SENTSINCE 0-Mar-2020", "* SEARCH 2 3\r\ns5 OK"},
		{"s6 SEARCH OR SENTON 99-Feb-2020 SUBJECT later", "* SEARCH 3\r\ns6 OK"},
		{"s7 SEARCH BEFORE 32-Jan-2024", "* SEARCH 1 2 3\r\ns7 OK"},
		{"s8 SEARCH SINCE 32-Jan-2024", "* SEARCH\r\ns8 OK"},
		{"s9 SEARCH ON 30-Feb-2020 SEEN", "* SEARCH\r\ns9 OK"},
		{"s10 SEARCH RETURN (COUNT) CHARSET UTF-8 SENTBEFORE 00-Mar-2020", "COUNT 1\r\ns10 OK"},
		// Not a date key's date: left as it is.
		{"s11 SEARCH HEADER ON 31-Feb-2020", "* SEARCH\r\ns11 OK"},
		{`s12 SEARCH SUBJECT "SENTON 31-Feb-2020"`, "* SEARCH\r\ns12 OK"},
		// No day at all, or one past the year 9999: BAD, as before.
		{"s13 SEARCH SENTON 31-Foo-2020", `s13 BAD [CLIENTBUG] "31-Foo-2020" is not a valid date`},
		{"s14 SEARCH BEFORE 32-Dec-9999", `s14 BAD [CLIENTBUG] "32-Dec-9999" is not a valid date`},
	})
}
