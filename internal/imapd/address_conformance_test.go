package imapd

import (
	"testing"
)

// Addresses: ENVELOPE (RFC 9051 section 7.5.2, RFC 3501 section 7.4.2)
// with RFC 5322 groups as group markers, and SEARCH FROM/TO/CC/BCC (RFC
// 9051 section 6.4.4: a substring of the field, display names included).
var groupsMessage = "From: \"Doe, John\" <john@example.org>\r\n" +
	"To: undisclosed-recipients:;\r\n" +
	"Cc: Team: ann@example.org, \"Bob\r\n B.\" <bob@example.org>;, carol@example.org\r\n" +
	"Bcc: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>, root\r\n" +
	"Subject: groups\r\n" +
	"Date: Tue, 25 Nov 2025 14:00:00 +0000\r\n" +
	"Message-ID: <groups-1@example.org>\r\n\r\nbody\r\n"

func TestAddressesConformance(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	d.synced(r.Deliver([]byte(messages["plain"])))
	d.synced(r.Deliver([]byte(groupsMessage)))
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	// go-imap puts a space between the addresses of a list, where RFC
	// 9051's grammar (1*address) has none; clients accept both.
	u := w.ok("FETCH 2 (ENVELOPE)")
	expectUntagged(t, "FETCH ENVELOPE", u, `* 2 FETCH (ENVELOPE ("Tue, 25 Nov 2025 14:00:00 +0000" "groups" `+
		`(("Doe, John" NIL "john" "example.org")) (("Doe, John" NIL "john" "example.org")) (("Doe, John" NIL "john" "example.org")) `+
		`((NIL NIL "undisclosed-recipients" NIL) (NIL NIL NIL NIL)) `+
		`((NIL NIL "Team" NIL) (NIL NIL "ann" "example.org") ("Bob B." NIL "bob" "example.org") (NIL NIL NIL NIL) (NIL NIL "carol" "example.org")) `+
		`(("=?utf-8?q?J=C3=BCrgen_M=C3=BCller?=" NIL "juergen" "example.de") (NIL NIL "root" "MISSING_DOMAIN")) `+
		`NIL "<groups-1@example.org>"))`)
	for _, c := range []struct{ cmd, want string }{
		{`SEARCH FROM "Doe, John"`, "* SEARCH 2"},
		{`SEARCH FROM john@example`, "* SEARCH 2"},
		{`SEARCH FROM bob`, "* SEARCH 1"},
		{`SEARCH TO undisclosed`, "* SEARCH 2"},
		{`SEARCH TO alice`, "* SEARCH 1"},
		{`SEARCH CC "Bob B."`, "* SEARCH 2"}, // a display name folded over two lines
		{`SEARCH CC ann@example.org`, "* SEARCH 2"},
		{`SEARCH CC Team`, "* SEARCH 2"},
		{`SEARCH CC dave`, "* SEARCH"},
		{"SEARCH CHARSET UTF-8 BCC {7}\r\nJürgen", "* SEARCH 2"}, // RFC 2047 display name, decoded
		{"SEARCH CHARSET UTF-8 BCC {15}\r\nJürgen Müller", "* SEARCH 2"},
		{`SEARCH BCC juergen@example.de`, "* SEARCH 2"},
		{`SEARCH BCC root`, "* SEARCH 2"},
		{`SEARCH OR FROM bob CC carol`, "* SEARCH 1 2"},
		{`SEARCH NOT TO undisclosed`, "* SEARCH 1"},
	} {
		expectUntagged(t, c.cmd, w.ok(c.cmd), c.want)
	}
}
