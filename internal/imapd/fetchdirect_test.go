package imapd

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
)

// directCorpus holds envelopes of every kind appendFetch meets: plain,
// quoted and escaped strings, encoded words, groups, no date, several
// In-Reply-To ids, 8-bit header fields (no stored IMAP form: the library
// writes them), a subject beyond 4096 bytes (a literal), no header at all;
// body structures nested, with parameters, dispositions, languages and a
// location, an 8-bit parameter (no stored form), a malformed multipart.
var directCorpus = []string{
	"From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: plain\r\nDate: Tue, 1 Dec 2026 02:00:00 +0100\r\nMessage-ID: <a@example.org>\r\n\r\nhi\r\n",
	"From: \"Doe, \\\"J\\\" \\\\ Jr\" <john@example.org>\r\nSender: s@example.org\r\nReply-To: r@example.org\r\nCc: Team: ann@example.org, bob@example.org;\r\nBcc: undisclosed-recipients:;\r\nSubject: a \"quoted\" back\\slash (paren) {3} * %\r\nIn-Reply-To: <x@y> <z@w>\r\n\r\nbody\r\n",
	"From: =?UTF-8?Q?J=C3=BCrgen?= <j@z.org>\r\nSubject: =?UTF-8?B?R3LDvMOfZQ==?= und mehr\r\nDate: Mon, 30 Nov 2026 23:59:59 -0800\r\n\r\nx\r\n",
	"From: J\xc3\xbcrgen <j\xc3\xbcrgen@z.org>\r\nTo: \xe7\x94\xb0\xe4\xb8\xad@example.jp\r\nSubject: 8-bit Gr\xc3\xbc\xc3\x9fe\r\n\r\nx\r\n",
	"From: a@example.org\r\nSubject: " + strings.Repeat("long ", 1000) + "\r\n\r\nx\r\n",
	"Subject: no from, no date\r\n\r\nx\r\n",
	"no header at all, only text\r\n",
	"From: a@example.org\r\nSubject:\r\nTo: \r\nMessage-ID: <only@id>\r\n\r\nx\r\n",
	"From: a@example.org\r\nSubject: tab\there and ctl \x01 char\r\n\r\nx\r\n",
	"From: a@example.org\r\nSubject: folded\r\n continued line\r\n\r\nx\r\n",
	"From: a@example.org\r\nSubject: mixed\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"; x-q=\"a \\\"q\\\"\"\r\nContent-Language: en, de\r\nContent-Location: http://example.org/x\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=us-ascii; format=flowed\r\nContent-ID: <p1@x>\r\nContent-Description: the text\r\n\r\nhello\r\nworld\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"a b.bin\"\r\nContent-Transfer-Encoding: BASE64\r\nContent-Disposition: attachment; filename=\"a b.bin\"; size=3\r\n\r\nAAEC\r\n" +
		"--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: inner@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n" +
		"--b2\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b2--\r\n" +
		"--b1--\r\n",
	"From: a@example.org\r\nSubject: 8-bit name\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; name=\"gr\xc3\xbc\xc3\x9fe.txt\"\r\nContent-Disposition: inline; filename*=utf-8''gr%C3%BC%C3%9Fe.txt\r\n\r\nx\r\n--b--\r\n",
	"From: a@example.org\r\nSubject: bad mime\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n",
	"From: a@example.org\r\nSubject: html\r\nMIME-Version: 1.0\r\nContent-Type: TEXT/HTML; CHARSET=UTF-8\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\n<p>=C3=BC</p>\r\n",
}

// TestDirectFetchMatchesLibrary: the FETCH responses appendFetch writes
// are byte for byte those go-imap writes for the same messages and items,
// with keywords, \Recent and \Seen among the flags, on a connection that
// enabled UTF8=ACCEPT and on one that did not; the plain envelopes and
// structures have a stored IMAP form, the 8-bit ones none.
func TestDirectFetchMatchesLibrary(t *testing.T) {
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for _, m := range directCorpus {
		pos = r.Deliver([]byte(m))
	}
	d.synced(pos)
	ctx := t.Context()
	for uid, want := range map[uint32][2]bool{1: {true, true}, 2: {true, true}, 3: {true, true}, 4: {false, true}, 5: {false, true},
		7: {true, true}, 11: {true, true}, 12: {true, false}, 13: {true, true}} {
		m, err := d.store.Message(ctx, mailstore.InboxID(), imap.UID(uid), mailstore.WantEnvelopeWire)
		if err != nil {
			t.Fatal(err)
		}
		if (m.EnvelopeWire != nil) != want[0] || (m.EnvelopeWire == nil) != (m.Envelope != nil) {
			t.Errorf("message %d: stored IMAP form %q, envelope %v; want a form: %v", uid, m.EnvelopeWire, m.Envelope, want[0])
		}
		if m, err = d.store.Message(ctx, mailstore.InboxID(), imap.UID(uid), mailstore.WantStructureWire); err != nil {
			t.Fatal(err)
		}
		if (m.StructureWire != nil) != want[1] || (m.StructureWire == nil) != (m.BodyStructure != nil) {
			t.Errorf("message %d: stored structure form %q, structure %v; want a form: %v", uid, m.StructureWire, m.BodyStructure, want[1])
		}
	}

	transcript := func(direct, utf8 bool) string {
		t.Helper()
		old := directFetch
		directFetch = direct
		defer func() { directFetch = old }()
		rc := dialRaw(t, d.addr)
		rc.cmd(`a LOGIN alice "` + testPassword + `"`)
		rc.until("a OK")
		if utf8 {
			rc.cmd("e ENABLE UTF8=ACCEPT")
			rc.until("e OK")
		}
		rc.cmd("b SELECT INBOX")
		rc.until("b OK")
		var out strings.Builder
		for i, items := range []string{"(ENVELOPE FLAGS)", "(UID)", "(FLAGS)", "(RFC822.SIZE)", "ALL", "FAST",
			"(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)", "(ENVELOPE BODYSTRUCTURE)", "(ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
			"BODYSTRUCTURE", "(BODYSTRUCTURE UID)", "(body BODYSTRUCTURE)", "(BODYSTRUCTURE BODY)", "BODY", "FULL",
			"(UID RFC822.SIZE FLAGS BODYSTRUCTURE ENVELOPE INTERNALDATE)"} {
			tag := fmt.Sprintf("f%d", i)
			rc.cmd(tag + " FETCH 1:* " + items)
			out.WriteString(rc.until(tag + " "))
			rc.cmd("u" + tag + " UID FETCH 2:* " + items)
			out.WriteString(rc.until("u" + tag + " "))
		}
		return out.String()
	}
	// Keywords and \Seen on some messages; this session's \Recent on all.
	rc := dialRaw(t, d.addr)
	rc.cmd(`a LOGIN alice "` + testPassword + `"`)
	rc.until("a OK")
	rc.cmd("b SELECT INBOX")
	rc.until("b OK")
	rc.cmd(`c STORE 1:3 +FLAGS (\Seen $Forwarded work)`)
	rc.until("c OK")
	rc.cmd(`d STORE 2 +FLAGS (\Flagged \Answered later)`)
	rc.until("d OK")

	for _, utf8 := range []bool{false, true} {
		lib, dir := transcript(false, utf8), transcript(true, utf8)
		if !strings.Contains(lib, `ENVELOPE ("Tue, 01 Dec 2026 02:00:00 +0100" "plain"`) || !strings.Contains(lib, `$Forwarded`) {
			t.Fatalf("UTF8=ACCEPT %v: the library's transcript lacks what the corpus holds:\n%s", utf8, lib)
		}
		if lib != dir {
			ll, dl := strings.Split(lib, "\n"), strings.Split(dir, "\n")
			for i := range min(len(ll), len(dl)) {
				if ll[i] != dl[i] {
					t.Fatalf("UTF8=ACCEPT %v, line %d differs:\n library %q\n direct  %q", utf8, i+1, ll[i], dl[i])
				}
			}
			t.Fatalf("UTF8=ACCEPT %v: %d lines from the library, %d direct", utf8, len(ll), len(dl))
		}
	}
}
