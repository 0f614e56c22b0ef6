package imapd

import (
	"strings"
	"testing"
)

// TestSearchSubjectLanguageTag: a subject in an encoded word whose
// charset carries an RFC 2231 language tag (RFC 2231 section 5) is found by SEARCH
// SUBJECT in its decoded text and shown decoded in ENVELOPE; the word
// stayed raw, so SEARCH SUBJECT "wörld" found nothing
// (mimeform.TestEncodedWordLanguageTag).
func TestSearchSubjectLanguageTag(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	rc := loggedInRaw(t, d.addr)
	rc.cmd("a2 SELECT INBOX")
	rc.until("a2 ")
	appendRaw(t, rc, "p1", "05-Mar-2020 10:00:00 +0000",
		"From: a@example.org\nSubject: =?utf-8*en?Q?Hello_w=C3=B6rld?=\nDate: Thu, 5 Mar 2020 08:00:00 +0000\n\nbody\n")
	appendRaw(t, rc, "p2", "05-Mar-2020 10:00:00 +0000",
		"From: a@example.org\nSubject: another\n\nbody\n")
	rc.cmd("a3 NOOP")
	rc.until("a3 ")
	needle := "wörld"
	runRaw(t, rc, []rawCase{
		{"s1 SEARCH CHARSET UTF-8 SUBJECT {" + itoa(len(needle)) + "+}\r\n" + needle, "* SEARCH 1\r\ns1 OK"},
		{"s2 SEARCH SUBJECT \"hello w\"", "* SEARCH 1\r\ns2 OK"},
	})
	rc.cmd("f1 FETCH 1 (ENVELOPE)")
	got := rc.until("f1 ")
	if strings.Contains(got, "utf-8*en") || !strings.Contains(got, "=?utf-8?q?Hello_w=C3=B6rld?=") {
		t.Errorf("ENVELOPE: got %q, want the subject decoded (and encoded again by go-imap, without the tag)", got)
	}
}
