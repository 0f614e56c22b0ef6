package imapd

import (
	"strings"
	"testing"
)

// charsetMessage has text parts in charsets other than UTF-8, and one in a
// charset nobody knows, each in a transfer encoding BINARY undoes.
var charsetMessage = strings.ReplaceAll(`From: a@example.org
To: alice@example.net
Subject: charsets
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain; charset=windows-1252
Content-Transfer-Encoding: quoted-printable

Price =80 5, =93quoted=94
--b
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: base64

Y2Fm6Q==
--b
Content-Type: text/plain; charset=x-unknown
Content-Transfer-Encoding: quoted-printable

a=3Db
--b--
`, "\n", "\r\n")

// TestBinaryKeepsCharset: BINARY undoes the Content-Transfer-Encoding and
// nothing else (RFC 3516 section 4.2): the text stays in the charset that
// BODYSTRUCTURE names, and BINARY.SIZE counts its bytes. The library
// also converted text parts to UTF-8, so a client reading the windows-1252
// part as windows-1252 got mojibake ("€" as three characters), and a
// part in an unknown charset was empty.
func TestBinaryKeepsCharset(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	d.synced(r.Deliver([]byte(charsetMessage)))
	d.synced(r.Deliver([]byte("From: a@example.org\r\nSubject: latin\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nna\xefve caf\xe9\r\n")))
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	for _, c := range []struct{ items, want string }{
		{"BINARY.PEEK[1]", "BINARY[1] ~{19}\r\nPrice \x80 5, \x93quoted\x94"},
		{"BINARY.SIZE[1]", "BINARY.SIZE[1] 19"},
		{"BINARY.PEEK[2]", "BINARY[2] ~{4}\r\ncaf\xe9"},
		{"BINARY.SIZE[2]", "BINARY.SIZE[2] 4"},
		{"BINARY.PEEK[3]", "BINARY[3] ~{3}\r\na=b"},
		{"BINARY.SIZE[3]", "BINARY.SIZE[3] 3"},
	} {
		u := w.ok("FETCH 1 (" + c.items + ")")
		expectUntagged(t, c.items, u, "* 1 FETCH ("+c.want+")")
	}
	u := w.ok("FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1])")
	expectUntagged(t, "BINARY[1] of a single part", u, "* 2 FETCH (BINARY[1] ~{12}\r\nna\xefve caf\xe9\r\n BINARY.SIZE[1] 12)")
}
