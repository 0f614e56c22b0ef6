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
// location, an 8-bit parameter (no stored form), a malformed multipart, a
// part's Content-MD5 (which go-imap's types cannot hold: formSwap).
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
	"From: a@example.org\r\nSubject: md5\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\n\r\nx\r\n--b--\r\n",
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
		m, err := d.store.Message(ctx, mailstore.InboxID(), mailstore.UID(uid), mailstore.WantEnvelopeWire)
		if err != nil {
			t.Fatal(err)
		}
		if (m.EnvelopeWire != nil) != want[0] || (m.EnvelopeWire == nil) != (m.Envelope != nil) {
			t.Errorf("message %d: stored IMAP form %q, envelope %v; want a form: %v", uid, m.EnvelopeWire, m.Envelope, want[0])
		}
		if m, err = d.store.Message(ctx, mailstore.InboxID(), mailstore.UID(uid), mailstore.WantStructureWire); err != nil {
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
		if !strings.Contains(lib, `ENVELOPE ("Tue, 1 Dec 2026 02:00:00 +0100" "plain"`) || !strings.Contains(lib, `$Forwarded`) {
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

// TestDirectFetchMatchesLibraryInBlocks: a FETCH of many messages written
// here, gathered into blocks of holdBytes and handed to the framer a block
// at a time, is byte for byte what go-imap writes: messages without a
// stored form (8-bit headers, written by the library) among them, \Recent
// on the newest, keywords, and a keyword another session sets just before
// the FETCH, whose FLAGS must come out right before the first response
// showing it (with ENVELOPE or BODYSTRUCTURE, more than one block into the
// FETCH).
func TestDirectFetchMatchesLibraryInBlocks(t *testing.T) {
	const n = 700
	r := newRig(t)
	d := r.device("a")
	var pos uint64
	for i := range n {
		m := fmt.Sprintf("From: Sender %d <s%d@example.org>\r\nTo: r@example.org\r\nSubject: block %d\r\nMessage-ID: <%d@example.org>\r\n\r\nhello %d\r\n", i, i, i, i, i)
		if i%97 == 5 {
			m = fmt.Sprintf("From: J\xc3\xbcrgen <j@z.org>\r\nSubject: 8-bit %d Gr\xc3\xbc\xc3\x9fe\r\n\r\nx\r\n", i)
		}
		if i%131 == 7 {
			m = directCorpus[10]
		}
		pos = r.Deliver([]byte(m))
	}
	d.synced(pos)
	other := dialRaw(t, d.addr)
	other.cmd(`a LOGIN alice "` + testPassword + `"`)
	other.until("a OK")
	other.cmd("b SELECT INBOX")
	other.until("b OK")
	other.cmd(`c STORE 10:40 +FLAGS (\Seen $Forwarded)`)
	other.until("c OK")

	// One session per transcript; the keyword set before each FETCH is
	// new to it and named after the run, and renamed in the transcript.
	run := 0
	transcript := func(direct bool, items string) string {
		t.Helper()
		old := directFetch
		directFetch = direct
		defer func() { directFetch = old }()
		run++
		kw := fmt.Sprintf("late%03d", run)
		rc := dialRaw(t, d.addr)
		rc.cmd(`a LOGIN alice "` + testPassword + `"`)
		rc.until("a OK")
		rc.cmd("b SELECT INBOX")
		rc.until("b OK")
		other.cmd(fmt.Sprintf("s%d STORE 600 +FLAGS (%s)", run, kw))
		other.until(fmt.Sprintf("s%d OK", run))
		rc.cmd("f FETCH 1:* " + items)
		got := rc.until("f ")
		rc.cmd("g UID FETCH 300:* " + items)
		got += rc.until("g ")
		rc.cmd("z LOGOUT")
		other.cmd(fmt.Sprintf("r%d STORE 600 -FLAGS (%s)", run, kw))
		other.until(fmt.Sprintf("r%d OK", run))
		return strings.ReplaceAll(got, kw, "lateNNN")
	}
	for _, items := range []string{"(FLAGS)", "(UID)", "(RFC822.SIZE)", "(UID FLAGS)", "(ENVELOPE FLAGS)", "(BODYSTRUCTURE)", "(ENVELOPE)"} {
		lib, dir := transcript(false, items), transcript(true, items)
		if strings.Count(lib, " FETCH (") < n+n-299 || !strings.Contains(lib, "lateNNN") {
			t.Fatalf("%s: the library's transcript lacks responses or the new keyword:\n%.2000s", items, lib)
		}
		if strings.Contains(items, "FLAGS") && !strings.Contains(lib, `* FLAGS (`) {
			t.Fatalf("%s: no FLAGS response before the new keyword:\n%.2000s", items, lib)
		}
		if len(lib) < 2*holdBytes && (strings.Contains(items, "ENVELOPE") || strings.Contains(items, "BODYSTRUCTURE")) {
			t.Fatalf("%s: %d bytes, fewer than two blocks", items, len(lib))
		}
		if lib != dir {
			ll, dl := strings.Split(lib, "\n"), strings.Split(dir, "\n")
			for i := range min(len(ll), len(dl)) {
				if ll[i] != dl[i] {
					t.Fatalf("%s, line %d differs:\n library %q\n direct  %q", items, i+1, ll[i], dl[i])
				}
			}
			t.Fatalf("%s: %d lines from the library, %d direct", items, len(ll), len(dl))
		}
	}
}

// TestRefCursor: the cursor finds what findRef finds, for UIDs in order,
// out of order, repeated, and absent.
func TestRefCursor(t *testing.T) {
	refs := []ref{{2, 1}, {3, 2}, {7, 3}, {8, 4}, {20, 5}}
	for _, seq := range [][]imap.UID{
		{1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21},
		{2, 7, 20},
		{20, 8, 7, 3, 2, 1},
		{7, 7, 3, 8, 8, 2, 20, 19},
		{},
	} {
		c := refCursor{refs: refs}
		for _, u := range seq {
			got, gok := c.find(u)
			want, wok := findRef(refs, u)
			if got != want || gok != wok {
				t.Errorf("sequence %v, UID %d: cursor %v %v, findRef %v %v", seq, u, got, gok, want, wok)
			}
		}
	}
}
