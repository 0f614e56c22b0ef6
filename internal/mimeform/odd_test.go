package mimeform

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/textproto"
)

func envelopeOf(t *testing.T, header string) *imap.Envelope {
	t.Helper()
	h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(header + "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return extractEnvelope(h, nil, nil)
}

// TestEnvelopeOddFields: fields of mail as it comes that the envelope
// lost or mangled, read as Dovecot reads them where it reads them better
// (docs/IMAP.md, "Odd messages, compared with Dovecot").
func TestEnvelopeOddFields(t *testing.T) {
	// A bare CR ends an address field: what follows is no address.
	e := envelopeOf(t, "From: ann@example.org\rSubject: hidden\r\n")
	if len(e.From) != 1 || e.From[0].Addr() != "ann@example.org" {
		t.Errorf("From with a bare CR: %v, want ann@example.org alone", e.From)
	}
	// 8-bit Latin-1 text is read as windows-1252; a NUL is U+FFFD.
	e = envelopeOf(t, "From: J\xfcrgen <j@example.org>\r\nSubject: Gr\xfc\xdfe \x80 nul\x00 \xc3\xa9\r\n")
	if e.Subject != "Grüße € nul\ufffd é" || len(e.From) != 1 || e.From[0].Name != "Jürgen" {
		t.Errorf("8-bit header: subject %q, from %v", e.Subject, e.From)
	}
	// A comment after an addr-spec alone is its display name.
	e = envelopeOf(t, "To: bob@example.net (Bob Smith), carol@example.net, \"D\" <d@example.net> (not a name)\r\n")
	if len(e.To) != 3 || e.To[0].Name != "Bob Smith" || e.To[1].Name != "" || e.To[2].Name != "D" {
		t.Errorf("To with comments: %v", e.To)
	}
	// A display name without angle brackets is the name, not part of the
	// address.
	e = envelopeOf(t, "Cc: Dave d@example.net, root\r\n")
	if len(e.Cc) != 2 || e.Cc[0].Name != "Dave" || e.Cc[0].Addr() != "d@example.net" || e.Cc[1].Addr() != "root@"+missingDomain {
		t.Errorf("Cc with a name without brackets: %v, want Dave d@example.net and root", e.Cc)
	}
	// Message identifiers out of their grammar are kept.
	e = envelopeOf(t, "Message-ID: m1@example.org\r\nIn-Reply-To: Your message of Mon, 2 Dec 2024 <x@example.org>\r\n")
	if e.MessageID != "m1@example.org" || len(e.InReplyTo) != 1 || e.InReplyTo[0] != "x@example.org" {
		t.Errorf("loose ids: Message-ID %q, In-Reply-To %q", e.MessageID, e.InReplyTo)
	}
	e = envelopeOf(t, "Message-ID: <a b@example.org>\r\nIn-Reply-To: <x y@example.org> <z@example.org>\r\n")
	if e.MessageID != "" || len(e.InReplyTo) != 1 || e.InReplyTo[0] != "z@example.org" {
		t.Errorf("ids with spaces: Message-ID %q, In-Reply-To %q", e.MessageID, e.InReplyTo)
	}
	e = envelopeOf(t, "Message-ID: <a@example.org>\r\nIn-Reply-To: no id here\r\n")
	if e.MessageID != "a@example.org" || e.InReplyTo != nil {
		t.Errorf("ids: Message-ID %q, In-Reply-To %q", e.MessageID, e.InReplyTo)
	}
	// A military zone is -0000 (RFC 5322 section 4.3), written +0000 as
	// any zero offset; "UT" is +0000. J is no zone.
	for _, c := range []struct{ date, want string }{
		{"Mon, 2 Dec 2024 10:00:00 Z", "Mon, 02 Dec 2024 10:00:00 +0000"},
		{"Mon, 2 Dec 2024 10:00:00 a", "Mon, 02 Dec 2024 10:00:00 +0000"},
		{"Mon, 2 Dec 2024 10:00:00 UT", "Mon, 02 Dec 2024 10:00:00 +0000"},
		{"Mon, 2 Dec 2024 10:00:00 J", ""},
	} {
		e = envelopeOf(t, "Date: "+c.date+"\r\n")
		got := ""
		if !e.Date.IsZero() {
			got = e.Date.Format(time.RFC1123Z)
		}
		if got != c.want {
			t.Errorf("Date: %s: got %q, want %q", c.date, got, c.want)
		}
	}
}

// TestTextCharsetDefault: a text part that names no charset has
// charset=us-ascii (RFC 2045 section 5.2, RFC 2046 section 4.1.2), nested
// ones too; other parts and those with a charset are as they were.
func TestTextCharsetDefault(t *testing.T) {
	msg := strings.ReplaceAll("Content-Type: multipart/mixed; boundary=b\n\n--b\n\nno header\n"+
		"--b\nContent-Type: text/html\n\n<p>x</p>\n--b\nContent-Type: text/plain; charset=utf-8\n\nx\n"+
		"--b\nContent-Type: application/octet-stream\n\nx\n--b\nContent-Type: message/rfc822\n\nSubject: in\n\ninner\n--b--\n", "\n", "\r\n")
	_, _, form, err := ParseForms([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0 NIL NIL NIL NIL)` +
		`("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 8 0 NIL NIL NIL NIL)` +
		`("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 1 0 NIL NIL NIL NIL)` +
		`("application" "octet-stream" NIL NIL NIL "7bit" 1 NIL NIL NIL NIL)` +
		`("message" "rfc822" NIL NIL NIL "7bit" 20 (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL) 2 NIL NIL NIL NIL)` +
		` "mixed" ("boundary" "b") NIL NIL NIL)`
	if string(form) != want {
		t.Errorf("structure:\n got  %s\n want %s", form, want)
	}
}

// TestMixedLineEndDelimiters: in a multipart whose first delimiter line
// ends in LF, a later one in CRLF is a delimiter too (Dovecot reads it
// so); the library lost the parts after it. The message the library is
// given for sections (Mended) has the same length and the parts their
// bytes; a line that names no boundary and a multipart in CRLF are left
// as they are.
func TestMixedLineEndDelimiters(t *testing.T) {
	msg := "Subject: mixed\r\nContent-Type: multipart/mixed; boundary=mm\n\r\n" +
		"--mm\nContent-Type: text/plain\r\n\r\nfirst\n--------\r\nsecond\r\n" +
		"--mm\r\nContent-Type: text/html\n\n<p>x</p>\n--mm--\r\n"
	_, _, form, err := ParseForms([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	want := `(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 23 2 NIL NIL NIL NIL)` +
		`("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 8 0 NIL NIL NIL NIL) "mixed" ("boundary" "mm") NIL NIL NIL)`
	if string(form) != want {
		t.Errorf("structure:\n got  %s\n want %s", form, want)
	}
	m := Mended([]byte(msg))
	wantMended := strings.Replace(strings.Replace(msg, "--mm\r\n", "--mm \n", 1), "--mm--\r\n", "--mm-- \n", 1)
	if string(m) != wantMended {
		t.Errorf("Mended:\n got  %q\n want %q", m, wantMended)
	}
	crlf := strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	if out, changed := lfDelimiters([]byte(crlf), nil); changed || string(out) != crlf {
		t.Errorf("a multipart in CRLF was written again: %q", out)
	}
}
