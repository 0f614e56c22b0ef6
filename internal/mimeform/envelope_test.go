package mimeform

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Address lists as RFC 5322 section 3.4 writes them, and the ENVELOPE
// address structures RFC 3501 section 7.4.2 makes of them (a group is a
// start marker with the group's name as mailbox, its members, and an end
// marker of four NILs).
func TestParseAddressList(t *testing.T) {
	start := func(name string) imap.Address { return imap.Address{Mailbox: name} }
	end := imap.Address{}
	a := func(name, mbox, host string) imap.Address { return imap.Address{Name: name, Mailbox: mbox, Host: host} }
	for _, c := range []struct {
		in   string
		want []imap.Address
	}{
		{`alice@example.org`, []imap.Address{a("", "alice", "example.org")}},
		{`"Doe, John" <john@example.org>`, []imap.Address{a("Doe, John", "john", "example.org")}},
		{`undisclosed-recipients:;`, []imap.Address{start("undisclosed-recipients"), end}},
		{`Team: ann@example.org, "Bob B." <bob@example.org>;, carol@example.org`, []imap.Address{
			start("Team"), a("", "ann", "example.org"), a("Bob B.", "bob", "example.org"), end, a("", "carol", "example.org")}},
		{`A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;`, []imap.Address{ // RFC 5322 appendix A.1.3
			start("A Group"), a("Ed Jones", "c", "a.test"), a("", "joe", "where.test"), a("John", "jdoe", "one.test"), end}},
		{`=?UTF-8?Q?J=C3=BCrgen?= <j@z.org>`, []imap.Address{a("Jürgen", "j", "z.org")}},
		{`root`, []imap.Address{a("", "root", missingDomain)}},
		{`(comment) <@r1,@r2:carol@y.org>`, []imap.Address{a("", "carol", "y.org")}},
		{`"Giant; \"Big\" Box" <sysservices@example.net>`, []imap.Address{a(`Giant; "Big" Box`, "sysservices", "example.net")}},
		{`Pete(A nice \) chap) <pete(his account)@silly.test(his host)>`, []imap.Address{a("Pete", "pete", "silly.test")}},
		{`"quoted local"@example.org`, []imap.Address{a("", "quoted local", "example.org")}},
		// A display name without the angle brackets: the words around
		// the addr-spec are the name. Words joined by "." or "@" are one
		// addr-spec (RFC 5322 section 4.4).
		{`Dave d@example.net, root`, []imap.Address{a("Dave", "d", "example.net"), a("", "root", missingDomain)}},
		{`"Dave D." =?UTF-8?Q?J=C3=BCrgen?=  d@example.net (home)`, []imap.Address{a("Dave D. Jürgen", "d", "example.net")}},
		{`d@example.net Dave`, []imap.Address{a("Dave", "d", "example.net")}},
		{`"a b" "quoted local"@example.org`, []imap.Address{a("a b", "quoted local", "example.org")}},
		{`john . doe @ example . net`, []imap.Address{a("", "john.doe", "example.net")}},
		{`john. doe @example.net (John)`, []imap.Address{a("John", "john.doe", "example.net")}},
		{`Unclosed: a@b.test`, []imap.Address{start("Unclosed"), a("", "a", "b.test"), end}},
		{``, nil},
		{`, ,`, nil},
	} {
		got := parseAddressList(c.in, maxEnvelopeAddresses)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s:\n got  %v\n want %v", c.in, got, c.want)
		}
	}
}

// TestEnvelopeDateAsNetMail holds the envelope's date to what net/mail
// makes of the field, in the common form and beside it.
func TestEnvelopeDateAsNetMail(t *testing.T) {
	dates := []string{
		"Mon, 02 Jan 2006 15:04:05 -0700",
		"Tue, 31 Dec 2024 23:59:59 +1400",
		"Sun, 01 Jan 0001 00:00:00 +0000",
		"Mon,  2 Jan 2006 15:04:05 -0700",
		"Mon, 2 Jan 2006 15:04:05 -0700 ",
		"Xyz, 02 Jan 2006 15:04:05 -0700",
		"Mon, 32 Jan 2006 15:04:05 -0700",
		"Mon, 02 Jan 2006 15:04:05 GMT",
		"Mon, 02 Jan 2006 15:04:05 -07:0",
		"Mon, 02 Jan 06 15:04:05 -0700 (PST)",
		"02 Jan 2006 15:04:05 -0700",
		"Mon, 02 Jan 2006 25:04:05 -0700",
		"",
	}
	zones := []*time.Location{time.UTC, time.FixedZone("", -7*3600), time.FixedZone("", 5*3600+1800), time.Local}
	for i := range 2000 {
		at := time.Unix(int64(i)*7919*3607-2_000_000_000, 0).In(zones[i%len(zones)])
		dates = append(dates, at.Format(time.RFC1123Z))
	}
	for _, d := range dates {
		var h textproto.Header
		if d != "" {
			h.Set("Date", d)
		}
		mh := mail.Header{Header: gomessage.Header{Header: h}}
		want, _ := mh.Date()
		got := envelopeDate(mh)
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if !got.Equal(want) || string(gj) != string(wj) || got.Location().String() != want.Location().String() {
			t.Errorf("%q: got %s (%v), net/mail %s (%v)", d, gj, got.Location(), wj, want.Location())
		}
	}
}

// TestEnvelopeObsoleteZones: a date in a zone name of RFC 5322 section
// 4.3 has that zone's offset, whatever the machine's own zone.
func TestEnvelopeObsoleteZones(t *testing.T) {
	for _, c := range []struct {
		date   string
		utc    string
		offset int
	}{
		{"Thu, 5 Mar 2020 08:00:00 EST", "2020-03-05T13:00:00Z", -5 * 3600},
		{"Thu, 05 Mar 2020 08:00:00 edt", "2020-03-05T12:00:00Z", -4 * 3600},
		{"5 Mar 2020 08:00 CST", "2020-03-05T14:00:00Z", -6 * 3600},
		{"Thu, 5 Mar 2020 08:00:00 CDT ", "2020-03-05T13:00:00Z", -5 * 3600},
		{"Thu, 5 Mar 2020 08:00:00 MST", "2020-03-05T15:00:00Z", -7 * 3600},
		{"Thu, 5 Mar 2020 08:00:00 MDT", "2020-03-05T14:00:00Z", -6 * 3600},
		{"Thu, 5 Mar 2020 23:30:00 PST", "2020-03-06T07:30:00Z", -8 * 3600},
		{"Thu, 5 Mar 2020 08:00:00 PDT", "2020-03-05T15:00:00Z", -7 * 3600},
		{"Thu, 5 Mar 2020 08:00:00 GMT", "2020-03-05T08:00:00Z", 0},
		{"Thu, 5 Mar 2020 08:00:00 -0500 (EST)", "2020-03-05T13:00:00Z", -5 * 3600},
	} {
		var h textproto.Header
		h.Set("Date", c.date)
		got := envelopeDate(mail.Header{Header: gomessage.Header{Header: h}})
		if _, off := got.Zone(); got.UTC().Format(time.RFC3339) != c.utc || off != c.offset {
			t.Errorf("%q: got %v (offset %d), want %s (offset %d)", c.date, got, off, c.utc, c.offset)
		}
	}
}

// TestEnvelopeAddressesBounded: an envelope's address list holds the
// first maxEnvelopeAddresses addresses of a header that has more (20,000
// recipients in a To field, over two Cc fields, and in a group, which
// keeps its end marker), so that its stored forms stay small; the other
// lists are whole.
func TestEnvelopeAddressesBounded(t *testing.T) {
	list := func(prefix string, n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteString(",\r\n ")
			}
			fmt.Fprintf(&b, "\"Person %d\" <%s%d@example.org>", i, prefix, i)
		}
		return b.String()
	}
	raw := "From: a@example.org\r\nTo: " + list("t", 20000) +
		"\r\nCc: " + list("c", 600) + "\r\nCc: " + list("d", 600) +
		"\r\nBcc: Team: " + list("b", 5000) + ";" +
		"\r\nReply-To: " + list("r", 3) + "\r\nSubject: many\r\n\r\nbody\r\n"
	m, err := Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Envelope) > 400<<10 { // 179,412 bytes; 1,637,472 without the bound
		t.Errorf("the stored envelope is %d bytes for a header of %d", len(m.Envelope), len(raw))
	}
	e, err := DecodeEnvelope(m.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.To) != maxEnvelopeAddresses || e.To[0].Mailbox != "t0" || e.To[len(e.To)-1].Mailbox != fmt.Sprintf("t%d", maxEnvelopeAddresses-1) {
		t.Errorf("To: %d addresses, want the first %d", len(e.To), maxEnvelopeAddresses)
	}
	if len(e.Cc) != maxEnvelopeAddresses || e.Cc[600].Mailbox != "d0" {
		t.Errorf("Cc: %d addresses, want the first %d of both fields", len(e.Cc), maxEnvelopeAddresses)
	}
	if n := len(e.Bcc); n != maxEnvelopeAddresses+1 || e.Bcc[0] != (imap.Address{Mailbox: "Team"}) || e.Bcc[n-1] != (imap.Address{}) {
		t.Errorf("Bcc: %d entries, want the group's start, %d members and its end", n, maxEnvelopeAddresses-1)
	}
	if len(e.ReplyTo) != 3 || len(e.From) != 1 {
		t.Errorf("Reply-To %d and From %d addresses, want 3 and 1", len(e.ReplyTo), len(e.From))
	}
}

// TestEncodedWordLanguageTag: an encoded word may carry an RFC 2231
// language tag after its charset (RFC 2231 section 5,
// =?utf-8*en?Q?...?=). The mime package took "utf-8*en" for a charset no
// reader knows, so the subject and the display name stayed raw words, and
// SEARCH SUBJECT "wörld" found nothing.
func TestEncodedWordLanguageTag(t *testing.T) {
	msg := "From: =?iso-8859-1*de?Q?J=FCrgen?= <j@example.org>\r\n" +
		"Subject: =?utf-8*en?Q?Hello_w=C3=B6rld?=\r\n" +
		"\r\nbody\r\n"
	p, err := Parse([]byte(msg))
	if err != nil {
		t.Fatal(err)
	}
	env, err := DecodeEnvelope(p.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if env.Subject != "Hello wörld" {
		t.Errorf("subject: got %q, want %q", env.Subject, "Hello wörld")
	}
	if len(env.From) != 1 || env.From[0].Name != "Jürgen" {
		t.Errorf("from: got %+v, want the name Jürgen", env.From)
	}
	texts := HeaderFieldTexts("=?utf-8*en?Q?Hello_w=C3=B6rld?=")
	if len(texts) != 2 || texts[1] != "Hello wörld" {
		t.Errorf("texts SEARCH tests: got %q, want the raw word and %q", texts, "Hello wörld")
	}
	// A word without a tag, and one in a charset nobody knows, as before.
	if d, ok := DecodeHeaderValue("=?utf-8?Q?w=C3=B6rld?="); !ok || d != "wörld" {
		t.Errorf("untagged word: got %q, %v", d, ok)
	}
	if _, ok := DecodeHeaderValue("=?x-unknown*en?Q?abc?="); ok {
		t.Errorf("a word in an unknown charset decoded")
	}
}

// TestNestedEnvelopeAddressesBounded: the envelopes of a message's
// message/rfc822 parts hold maxNestedAddresses addresses together, the
// first parts' first, while the structure stays whole (Parsed, every
// part listed) and the message's own envelope keeps its own bound. 400
// forwarded messages with 1,000 recipients in each of From, To, Cc and
// Bcc gave a structure of 1.6 million addresses before.
func TestNestedEnvelopeAddressesBounded(t *testing.T) {
	var list strings.Builder
	for i := range maxEnvelopeAddresses {
		if i > 0 {
			list.WriteString(",")
		}
		fmt.Fprintf(&list, "p%d@example.org", i)
	}
	const parts = 400
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: " + list.String() + "\r\nSubject: forwarded\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n")
	for i := range parts {
		fmt.Fprintf(&b, "--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: %[1]s\r\nTo: %[1]s\r\nCc: %[1]s\r\nBcc: %[1]s\r\nSubject: part %[2]d\r\n\r\ntext %[2]d\r\n", list.String(), i)
	}
	b.WriteString("--b--\r\n")
	m, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if m.Status != Parsed {
		t.Fatalf("status %d, want Parsed", m.Status)
	}
	if len(m.Structure) > 4<<20 {
		t.Errorf("the stored structure is %d bytes for a message of %d", len(m.Structure), b.Len())
	}
	env, err := DecodeEnvelope(m.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.To) != maxEnvelopeAddresses {
		t.Errorf("the message's own To: %d addresses, want %d", len(env.To), maxEnvelopeAddresses)
	}
	bs, err := DecodeStructure(m.Structure)
	if err != nil {
		t.Fatal(err)
	}
	mp, ok := bs.(*imap.BodyStructureMultiPart)
	if !ok || len(mp.Children) != parts {
		t.Fatalf("structure %T, want a multipart of %d parts", bs, parts)
	}
	total := 0
	for i, c := range mp.Children {
		sp, ok := c.(*imap.BodyStructureSinglePart)
		if !ok || sp.MessageRFC822 == nil || sp.MessageRFC822.Envelope == nil {
			t.Fatalf("part %d: %T, want a message/rfc822 part with an envelope", i+1, c)
		}
		e := sp.MessageRFC822.Envelope
		if e.Subject != fmt.Sprintf("part %d", i) {
			t.Errorf("part %d: subject %q", i+1, e.Subject)
		}
		n := len(e.From) + len(e.Sender) + len(e.ReplyTo) + len(e.To) + len(e.Cc) + len(e.Bcc)
		if want := min(4*maxEnvelopeAddresses, max(0, maxNestedAddresses-total)); n != want {
			t.Errorf("part %d: %d addresses, want %d", i+1, n, want)
		}
		total += n
	}
	if total != maxNestedAddresses {
		t.Errorf("the nested envelopes hold %d addresses together, want %d", total, maxNestedAddresses)
	}
}
