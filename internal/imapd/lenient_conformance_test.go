package imapd

import (
	"strings"
	"testing"
)

// TestMailAsItComes holds the IMAP view of mail that the MIME library
// refuses in part to what the message says (docs/MAILSTORE.md, "Parsing";
// RFC 9051 sections 6.4.5 and 7.5.2). Before, one header line that is no
// field (a stray word, an mbox "From " line) cost the message its whole
// header: ENVELOPE all NIL, one text/plain part, no HEADER.FIELDS, no
// SEARCH SUBJECT; a comment or a parameter the library cannot read in a
// Content-Type cost every parameter, put the rest of the value in the
// subtype, and of a multipart its parts; and a multipart/digest's parts
// without a Content-Type were text where RFC 2046 section 5.1.5 makes
// them messages.
func TestMailAsItComes(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	crlf := func(s string) []byte { return []byte(strings.ReplaceAll(s, "\n", "\r\n")) }
	d.synced(r.Deliver(crlf(`From: Alice <alice@example.org>
Subject: hello
This line has no colon
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=q

--q
Content-Type: text/plain

one
--q
Content-Type: text/html

<b>two</b>
--q--
`)))
	d.synced(r.Deliver(crlf(`From alice@example.org Mon Jan  1 00:00:00 2024
From: Alice <alice@example.org>
Subject: from an mbox
Content-Type: TEXT/PLAIN (c); charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

caf=E9 hello
`)))
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: commented multipart
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="bb" (generated)

--bb
Content-Type: text/plain; charset=us-ascii (Plain text)

see the file
--bb
Content-Type: application/pdf; name=x.pdf; name=y.pdf
Content-Disposition: attachment; filename=my file.pdf; size=
Content-Transfer-Encoding: base64

AAAA
--bb--
`)))
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: digest
MIME-Version: 1.0
Content-Type: multipart/digest; boundary=dg

--dg

From: x@example.org
Subject: member one

member body
--dg--
`)))
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: cut short
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=nc

--nc
Content-Type: text/plain

first
--nc
Content-Type: text/plain

second, never closed
`)))
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: cut short inside
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=out

--out
Content-Type: text/plain

first
--out
Content-Type: multipart/alternative; boundary=in

--in
Content-Type: text/plain

plain
--in
Content-Type: text/html

<p>html, never closed`)))
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: sloppy base64
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b

--b
Content-Type: text/plain
Content-Transfer-Encoding: base64

SGVsbG8gd29ybGQ
--b
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

SGVs*bG8gd29y
bGQ=
--b--
`)))
	// 6,000 lines that are no field: beyond the bound on a header's
	// fields had they been fields, but they are left out before it.
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: many stray lines
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=B
` + strings.Repeat("junk\n", 6000) + `
--B
Content-Type: text/plain

one
--B
Content-Type: application/pdf; name=x.pdf
Content-Transfer-Encoding: base64

aGVsbG8=
--B--
`)))
	// A nested multipart whose type has a comment (RFC 2045's own form).
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: nested comment
Content-Type: multipart/mixed; boundary=O

--O
Content-Type: multipart/alternative; boundary=I (x)

--I
Content-Type: text/plain

plain
--I
Content-Type: text/html; charset=us-ascii (html)
Content-Transfer-Encoding: base64

PHA+aHRtbDwvcD4=
--I--
--O--
`)))
	// A transfer encoding with a comment (RFC 2045 section 6.1: a
	// structured field, RFC 822's comments allowed), in any case.
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: an encoding with a comment
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=C

--C
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable (by hand)

caf=E9
--C
Content-Type: application/octet-stream
Content-Transfer-Encoding: (c) BASE64

SGVsbG8=
--C--
`)))
	d.synced(r.Deliver(crlf(`From: a@example.org
Subject: one part, its encoding with a comment
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: Base64 (see RFC 2045)

SGVsbG8=
`)))
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	for _, c := range []struct {
		seq, items string
		want       []string
	}{
		{"1", "ENVELOPE", []string{`"hello" (("Alice" NIL "alice" "example.org"))`}},
		{"1", "BODYSTRUCTURE", []string{`BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 10 0 NIL NIL NIL NIL) "mixed" ("boundary" "q")`}},
		{"1", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", []string{"{18}\r\nSubject: hello\r\n\r\n"}},
		{"1", "BODY.PEEK[2]", []string{"BODY[2] {10}\r\n<b>two</b>"}},
		{"1", "BODY.PEEK[HEADER]", []string{"This line has no colon\r\n"}}, // served as it came
		{"2", "ENVELOPE", []string{`"from an mbox" (("Alice" NIL "alice" "example.org"))`}},
		{"2", "BODYSTRUCTURE", []string{`BODYSTRUCTURE ("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 14 1 `}},
		// BINARY undoes the transfer encoding, not the charset (RFC 3516
		// section 4.2): the part's ISO-8859-1 bytes.
		{"2", "BINARY.PEEK[1]", []string{"BINARY[1] ~{12}\r\ncaf\xe9 hello\r\n"}},
		{"3", "BODYSTRUCTURE", []string{
			`BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 12 0 `,
			`("application" "pdf" ("name" "x.pdf") NIL NIL "base64" 4 NIL ("attachment" ("filename" "my file.pdf")) NIL NIL) "mixed" ("boundary" "bb")`}},
		{"3", "BODY.PEEK[2]", []string{"BODY[2] {4}\r\nAAAA"}},
		{"3", "BODY.PEEK[2.MIME]", []string{"filename=my file.pdf; size=\r\n"}}, // as it came
		{"4", "BODYSTRUCTURE", []string{`BODYSTRUCTURE (("message" "rfc822" NIL NIL NIL "7bit" 55 (NIL "member one"`, `"member one"`, `"digest"`}},
		{"4", "BODY.PEEK[1.HEADER]", []string{"Subject: member one\r\n"}},
		// A multipart cut short: the structure shows the last part, and
		// its bytes are served (they were empty), its last line break
		// with them (it was left out).
		{"5", "BODYSTRUCTURE", []string{`("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 22 1 NIL NIL NIL NIL) "mixed"`}},
		{"5", "BODY.PEEK[2]", []string{"BODY[2] {22}\r\nsecond, never closed\r\n"}},
		{"5", "BINARY.PEEK[2] BINARY.SIZE[2]", []string{"BINARY[2] ~{22}\r\nsecond, never closed\r\n", "BINARY.SIZE[2] 22"}},
		{"5", "BODY.PEEK[1]", []string{"BODY[1] {5}\r\nfirst"}},
		{"6", "BODY.PEEK[2.2]", []string{"BODY[2.2] {21}\r\n<p>html, never closed"}},
		{"6", "BODY.PEEK[2.1]", []string{"BODY[2.1] {5}\r\nplain"}},
		// Base64 without its padding, or with a stray character: RFC 2045
		// section 6.8 reads past both (BINARY was empty, and OK).
		{"7", "BINARY.PEEK[1] BINARY.SIZE[1]", []string{"BINARY[1] ~{11}\r\nHello world", "BINARY.SIZE[1] 11"}},
		{"7", "BINARY.PEEK[2]", []string{"BINARY[2] ~{11}\r\nHello world"}},
		{"8", "BODY.PEEK[1] BODY.PEEK[2]", []string{"BODY[1] {3}\r\none", "BODY[2] {8}\r\naGVsbG8="}},
		{"8", "BODY.PEEK[2.MIME]", []string{"name=x.pdf"}},
		{"8", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", []string{"Subject: many stray lines"}},
		{"9", "BODYSTRUCTURE", []string{`(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "base64" 16 0 NIL NIL NIL NIL) "alternative" ("boundary" "I")`}},
		{"9", "BODY.PEEK[1.1] BODY.PEEK[1.2]", []string{"BODY[1.1] {5}\r\nplain", "BODY[1.2] {16}\r\nPHA+aHRtbDwvcD4="}},
		{"9", "BINARY.PEEK[1.2]", []string{"BINARY[1.2] ~{11}\r\n<p>html</p>"}},
		{"10", "BODYSTRUCTURE", []string{`("text" "plain" ("charset" "iso-8859-1") NIL NIL "quoted-printable" 6 0 `, `("application" "octet-stream" NIL NIL NIL "base64" 8 `}},
		{"10", "BINARY.PEEK[1] BINARY.PEEK[2]", []string{"BINARY[1] ~{4}\r\ncaf\xe9", "BINARY[2] ~{5}\r\nHello"}},
		{"10", "BODY.PEEK[2.MIME]", []string{"Content-Transfer-Encoding: (c) BASE64\r\n"}}, // as it came
		{"11", "BODYSTRUCTURE", []string{`("text" "plain" ("charset" "utf-8") NIL NIL "base64" 10 1 `}},
		{"11", "BINARY.PEEK[1] BINARY.SIZE[1]", []string{"BINARY[1] ~{5}\r\nHello", "BINARY.SIZE[1] 5"}},
	} {
		u := w.ok("FETCH " + c.seq + " (" + c.items + ")")
		got := strings.Join(u, "\n")
		for _, want := range c.want {
			if !strings.Contains(got, want) {
				t.Errorf("FETCH %s (%s): %q\nwant it to hold %q", c.seq, c.items, got, want)
			}
		}
	}
	for _, c := range []struct{ criteria, want string }{
		{"SUBJECT hello", "* SEARCH 1"},
		{"SUBJECT mbox", "* SEARCH 2"},
		{"HEADER Subject commented", "* SEARCH 3"},
		{"BODY member", "* SEARCH 4"},
		// The text of a part whose encoding has a comment, decoded (it
		// was left out of SEARCH's reach).
		{"CHARSET UTF-8 BODY {5}\r\ncafé", "* SEARCH 2 10"},
		{"BODY Hello", "* SEARCH 2 7 11"},
	} {
		u := w.ok("SEARCH " + c.criteria)
		if len(u) != 1 || strings.TrimSpace(u[0]) != c.want {
			t.Errorf("SEARCH %s: %q, want %q", c.criteria, u, c.want)
		}
	}
}
