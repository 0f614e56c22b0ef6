package imapd

import (
	"strconv"
	"strings"
	"testing"
)

// nestedMessage has the part shapes RFC 9051 section 6.4.5 and RFC 3516
// name: a quoted-printable and a base64 part, one in an encoding BINARY
// cannot undo, an empty part, and a message/rfc822 part holding a
// multipart/alternative.
var nestedMessage = strings.ReplaceAll(`From: "Doe, John" <john@example.org>
To: alice@example.net
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= nested
Date: Tue, 25 Nov 2025 14:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

caf=C3=A9 cr=C3=A8me=
 br=C3=BBl=C3=A9e
--outer
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="b.bin"

AAECAwQFBgcICQ==
--outer
Content-Type: text/plain
Content-Transfer-Encoding: x-uuencode

begin 644 x
end
--outer
Content-Type: text/plain

--outer
Content-Type: message/rfc822

From: inner@example.org
Subject: inner
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain

inner plain
--inner
Content-Type: text/html; charset=us-ascii
Content-Transfer-Encoding: base64

PGI+aGk8L2I+
--inner--
--outer--
epilogue
`, "\n", "\r\n")

func TestMIMEPartsConformance(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	d.synced(r.Deliver([]byte(nestedMessage)))
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	innerHeader := "From: inner@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=\"inner\"\r\n\r\n"
	innerText := "--inner\r\nContent-Type: text/plain\r\n\r\ninner plain\r\n--inner\r\n" +
		"Content-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+aGk8L2I+\r\n--inner--"
	for _, c := range []struct{ items, want string }{
		// BINARY decodes (RFC 3516 section 4.2); BINARY.SIZE is the
		// decoded size.
		{"BINARY.PEEK[1]", "BINARY[1] ~{21}\r\ncafé crème brûlée"},
		{"BINARY.PEEK[2]", "BINARY[2] ~{10}\r\n\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09"},
		{"BINARY.SIZE[1] BINARY.SIZE[2]", "BINARY.SIZE[1] 21 BINARY.SIZE[2] 10"},
		{"BINARY.PEEK[5.2]", "BINARY[5.2] ~{9}\r\n<b>hi</b>"},
		// An empty part: an empty string, the same way for every item.
		{"BODY.PEEK[4]", "BODY[4] {0}\r\n"},
		{"BINARY.PEEK[4]", "BINARY[4] ~{0}\r\n"},
		{"BINARY.SIZE[4]", "BINARY.SIZE[4] 0"},
		{"BODY.PEEK[9]", "BODY[9] {0}\r\n"}, // no such part
		// Sections byte for byte.
		{"BODY.PEEK[1]", "BODY[1] {40}\r\ncaf=C3=A9 cr=C3=A8me=\r\n br=C3=BBl=C3=A9e"},
		{"BODY.PEEK[1.MIME]", "BODY[1.MIME] {88}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"},
		{"BODY.PEEK[2]", "BODY[2] {16}\r\nAAECAwQFBgcICQ=="},
		{"BODY.PEEK[1.1]", "BODY[1.1] {40}\r\ncaf=C3=A9 cr=C3=A8me=\r\n br=C3=BBl=C3=A9e"}, // a single part is its own part 1
		{"BODY.PEEK[5.HEADER]", "BODY[5.HEADER] {" + itoa(len(innerHeader)) + "}\r\n" + innerHeader},
		{"BODY.PEEK[5.TEXT]", "BODY[5.TEXT] {" + itoa(len(innerText)) + "}\r\n" + innerText},
		{"BODY.PEEK[5.MIME]", "BODY[5.MIME] {32}\r\nContent-Type: message/rfc822\r\n\r\n"},
		{"BODY.PEEK[5.1]", "BODY[5.1] {11}\r\ninner plain"},
		{"BODY.PEEK[5.1.MIME]", "BODY[5.1.MIME] {28}\r\nContent-Type: text/plain\r\n\r\n"},
		{"BODY.PEEK[5.2]", "BODY[5.2] {12}\r\nPGI+aGk8L2I+"},
		{"BODY.PEEK[5.HEADER.FIELDS (Subject FROM)]", "BODY[5.HEADER.FIELDS (\"Subject\" \"FROM\")] {43}\r\nFrom: inner@example.org\r\nSubject: inner\r\n\r\n"},
		{"BODY.PEEK[5.HEADER.FIELDS.NOT (Subject)]", "BODY[5.HEADER.FIELDS.NOT (\"Subject\")] {" +
			itoa(len(innerHeader)-len("Subject: inner\r\n")) + "}\r\n" + strings.Replace(innerHeader, "Subject: inner\r\n", "", 1)},
		{"BODY.PEEK[HEADER.FIELDS (Subject X-None)]", "BODY[HEADER.FIELDS (\"Subject\" \"X-None\")] {47}\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= nested\r\n\r\n"},
		// HEADER and TEXT after a part number only for message/rfc822
		// parts (RFC 9051 section 6.4.5).
		{"BODY.PEEK[1.TEXT]", "BODY[1.TEXT] {0}\r\n"},
		{"BODY.PEEK[5.1.HEADER]", "BODY[5.1.HEADER] {0}\r\n"},
	} {
		u := w.ok("FETCH 1 (" + c.items + ")")
		expectUntagged(t, c.items, u, "* 1 FETCH ("+c.want+")")
	}
	// A partial BINARY: the data is right; go-imap leaves out the <2>
	// origin RFC 3516 section 4.3 asks for (docs/IMAP.md).
	u := w.ok("FETCH 1 (BINARY.PEEK[1]<2.5>)")
	if len(u) != 1 || !strings.HasSuffix(u[0], "~{5}\r\nf\u00e9 c)\r\n") {
		t.Errorf("BINARY.PEEK[1]<2.5>: %q", u)
	}
	// An encoding BINARY cannot undo: NO [UNKNOWN-CTE] (RFC 3516 section
	// 4.3), for BINARY.SIZE too; BODY still serves the part.
	for _, items := range []string{"BINARY.PEEK[3]", "BINARY.SIZE[3]", "UID BINARY.PEEK[1] BINARY.PEEK[3]"} {
		u, tagged := w.run("FETCH 1 (" + items + ")")
		if status(tagged) != "NO [UNKNOWN-CTE]" || len(u) != 0 {
			t.Errorf("%s: %q %q, want NO [UNKNOWN-CTE] and no FETCH", items, u, tagged)
		}
	}
	u = w.ok("FETCH 1 (BODY.PEEK[3])")
	expectUntagged(t, "BODY[3]", u, "* 1 FETCH (BODY[3] {16}\r\nbegin 644 x\r\nend)")
}

func itoa(n int) string { return strconv.Itoa(n) }
