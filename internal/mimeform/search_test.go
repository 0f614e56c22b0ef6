package mimeform

import (
	"slices"
	"strings"
	"testing"
)

// TestBodyTextsKeepsBrokenMultipart: the text of a message whose MIME
// tree breaks (a multipart without its boundary, one cut before its end)
// stays within SEARCH BODY's reach, and a well-formed one gives its
// decoded parts alone.
func TestBodyTextsKeepsBrokenMultipart(t *testing.T) {
	for _, c := range []struct {
		name, raw string
		want      []string
		not       string
	}{
		{"no boundary", "Subject: s\r\nContent-Type: multipart/mixed\r\n\r\nbroken zebrafish \x00 body\r\n",
			[]string{"zebrafish"}, ""},
		{"cut short", "Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirst okapi\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond narwhal",
			[]string{"okapi", "narwhal"}, ""},
		{"well formed", "Subject: s\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gaWJleA==\r\n--b--\r\n",
			[]string{"hello ibex"}, "aGVsbG8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			texts := strings.Join(BodyTexts([]byte(c.raw), headerLength([]byte(c.raw))), "\n")
			for _, w := range c.want {
				if !strings.Contains(texts, w) {
					t.Errorf("body texts %q lack %q", texts, w)
				}
			}
			if c.not != "" && strings.Contains(texts, c.not) {
				t.Errorf("body texts %q hold the undecoded %q", texts, c.not)
			}
		})
	}
}

// TestHeaderFieldTextsEightBit: a field value in 8-bit bytes that are not
// UTF-8 is searched as ENVELOPE shows it, its bytes read as windows-1252,
// and its encoded words decoded after that; a UTF-8 value has no such
// text.
func TestHeaderFieldTextsEightBit(t *testing.T) {
	for _, c := range []struct {
		v    string
		want []string
	}{
		{"J\xf6rg Latin <latin@example.de>", []string{"J\xf6rg Latin <latin@example.de>", "Jörg Latin <latin@example.de>"}},
		{"Gr\xfc\xdfe =?utf-8?q?caf=C3=A9?=", []string{"Gr\xfc\xdfe =?utf-8?q?caf=C3=A9?=", "Grüße =?utf-8?q?caf=C3=A9?=", "Grüße café"}},
		{"\x93quoted\x94", []string{"\x93quoted\x94", "“quoted”"}},
		{"Grüße", []string{"Grüße"}},
		{"=?utf-8?q?caf=C3=A9?=", []string{"=?utf-8?q?caf=C3=A9?=", "café"}},
	} {
		if got := HeaderFieldTexts(c.v); !slices.Equal(got, c.want) {
			t.Errorf("HeaderFieldTexts(%q):\n got  %q\n want %q", c.v, got, c.want)
		}
	}
}

// TestFieldTextsQuotedNames: an address field whose display names are
// quoted strings is searched as ENVELOPE shows the names too, their
// quoted-pairs undone and their quotes dropped (RFC 9051 section 6.4.4:
// FROM tests the envelope's field), as well as written; another field, or
// one without quotes, has no such text.
func TestFieldTextsQuotedNames(t *testing.T) {
	for _, c := range []struct {
		key, v    string
		found     []string
		addressed string // the addresses' text, "" for none
	}{
		{"From", `"Smith \"Bob\" Jones" <bob@example.org>`, []string{"Bob", "Smith", `"Bob"`, `Smith "Bob" Jones`, `Smith \"Bob\"`, `Jones <bob@example.org>`},
			`Smith "Bob" Jones <bob@example.org>`},
		{"to", `"Bob" Smith <b@example.org>, carol@example.org, "A \\ B" <ab>`, []string{"Bob Smith", `A \ B <ab>`},
			`Bob Smith <b@example.org>, A \ B <ab>`},
		{"Cc", "Team: \"J\xf6rg\" <j@example.de>;", []string{"Jörg <j@example.de>"}, "Jörg <j@example.de>"},
		{"Reply-To", `"=?utf-8?q?J=C3=B6rg?= \"J\"" <j@example.de>`, []string{`Jörg "J" <j@`}, `Jörg "J" <j@example.de>`},
		{"From", "Bob Smith <b@example.org>", nil, ""},
		{"Subject", `a "quoted \"word\""`, nil, ""},
	} {
		texts := FieldTexts(c.key, c.v)
		got := ""
		if len(texts) > len(HeaderFieldTexts(c.v)) {
			got = texts[len(texts)-1]
		}
		if got != c.addressed {
			t.Errorf("FieldTexts(%q, %q): the addresses' text %q, want %q", c.key, c.v, got, c.addressed)
		}
		for _, n := range c.found {
			if !slices.ContainsFunc(texts, func(x string) bool { return strings.Contains(x, n) }) {
				t.Errorf("FieldTexts(%q, %q) = %q: %q is in none", c.key, c.v, texts, n)
			}
		}
	}
}

// TestBodyTextsUnknownCharsetPart: a multipart's text part in a charset
// or a transfer encoding the library does not know is searched as it is
// (transfer-decoded when only the charset is unknown), as a message of
// one such part is.
func TestBodyTextsUnknownCharsetPart(t *testing.T) {
	raw := "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nknown aardvark\r\n" +
		"--b\r\nContent-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nunknown bison caf=E9\r\n" +
		"--b\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n\r\nunknown capybara\r\n" +
		"--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-no-such-encoding\r\n\r\nunknown dingo\r\n" +
		"--b--\r\n"
	texts := strings.Join(BodyTexts([]byte(raw), headerLength([]byte(raw))), "\n")
	for _, w := range []string{"known aardvark", "unknown bison caf\xe9", "unknown capybara", "unknown dingo"} {
		if !strings.Contains(texts, w) {
			t.Errorf("body texts %q lack %q", texts, w)
		}
	}
}
