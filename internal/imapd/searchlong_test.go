package imapd

import (
	"context"
	"encoding/base64"
	"mime"
	"mime/quotedprintable"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// longText is about n bytes of ordinary words, with mark written at byte
// at of it (and the words around it cut there).
func longText(n, at int, mark string) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString("filler words of a long mail ")
		if i%9 == 8 {
			b.WriteString("\r\n")
		}
	}
	s := b.String()
	return s[:at] + mark + s[at:]
}

// TestSearchLongBodiesNotReread: the messages whose texts are too long
// for the index (over 1 MiB) are not read, nor decoded, by a SEARCH BODY
// or TEXT, however often it is sent: their texts are kept once, when the
// indexer meets them, and read from there, a piece at a time. Before,
// every SEARCH read and decoded each of them again (the count of bodies
// read went up by three at each one here). The answers, through the real
// server, are the scan's: a needle across the boundary of two pieces of
// the text kept (128 KiB), in a base64 part with letters whose case folds
// beyond ASCII, across a quoted-printable soft line break, in an encoded
// Subject, short needles, one with a line break and one of 1,200 bytes.
func TestSearchLongBodiesNotReread(t *testing.T) {
	t.Parallel()
	rg := newRig(t)
	d := rg.device("a")
	const mib = 1 << 20
	plain := "From: a@example.org\r\nSubject: plain\r\n\r\n" + longText(mib+mib/4, 128<<10-5, "ACROSSBOUNDARY") + "\r\n"
	utf := longText(mib+mib/4, mib+100, " Zürich ΣΟΦΙΑ İstanbul ")
	b64 := base64.StdEncoding.EncodeToString([]byte(utf))
	var wrapped strings.Builder
	for len(b64) > 76 {
		wrapped.WriteString(b64[:76] + "\r\n")
		b64 = b64[76:]
	}
	wrapped.WriteString(b64 + "\r\n")
	based := "From: b@example.org\r\nSubject: " + mime.QEncoding.Encode("utf-8", "Überraschung encodedsubjectword") +
		"\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" + wrapped.String()
	var q strings.Builder
	w := quotedprintable.NewWriter(&q)
	qtext := strings.ReplaceAll(longText(mib+mib/4, mib/2, strings.Repeat("softbreakneedle", 8)), "\r\n", " ")
	w.Write([]byte(qtext))
	w.Close()
	quoted := "From: c@example.org\r\nSubject: qp\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + q.String() + "\r\n--x--\r\n"
	if !strings.Contains(q.String(), "=\r\n") {
		t.Fatal("the quoted-printable text has no soft line break")
	}
	var last uint64
	for _, m := range []string{plain, "From: d@example.org\r\nSubject: short\r\n\r\nshort filler acrossboundary zq\r\n", based, quoted,
		"From: e@example.org\r\nSubject: tiny\r\n\r\nZÜRICH words\r\n"} {
		last = rg.Deliver([]byte(m))
	}
	d.synced(last)
	ctx := context.Background()
	if _, left, err := d.store.IndexPending(ctx, 100); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	inbox, err := d.store.MailboxByName(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	reference := scanned(t, d.store, inbox)
	c := d.client(nil)
	mustSelect(t, c, "INBOX")
	for _, tc := range []struct {
		name string
		crit imap.SearchCriteria
		// short: the needle is not the index's, so the small messages
		// are read (two of them), never the long ones
		short bool
	}{
		{"across pieces", imap.SearchCriteria{Body: []string{"acrossboundary"}}, false},
		{"across pieces, TEXT", imap.SearchCriteria{Text: []string{"AcrossBoundary"}}, false},
		{"base64, folded", imap.SearchCriteria{Body: []string{"zürich σοφια"}}, false},
		{"base64, İ", imap.SearchCriteria{Body: []string{"İSTANBUL"}}, false},
		{"quoted-printable soft break", imap.SearchCriteria{Body: []string{strings.Repeat("softbreakneedle", 8)}}, false},
		{"encoded subject, TEXT", imap.SearchCriteria{Text: []string{"überraschung ENCODED"}}, false},
		{"encoded subject, BODY", imap.SearchCriteria{Body: []string{"encodedsubjectword"}}, false},
		{"SUBJECT", imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "encodedsubjectword"}}}, false},
		{"in no message", imap.SearchCriteria{Body: []string{"nowhere-at-all"}}, false},
		{"everywhere", imap.SearchCriteria{Body: []string{"filler"}}, false},
		{"short", imap.SearchCriteria{Body: []string{"zq"}}, true},
		{"short, TEXT", imap.SearchCriteria{Text: []string{"Zü"}}, true},
		{"line break", imap.SearchCriteria{Body: []string{"mail \r\nfiller"}}, true},
		{"longer than the filters reach", imap.SearchCriteria{Body: []string{strings.ToUpper(qtext[mib/2-600 : mib/2+600])}}, false},
		{"with a flag", imap.SearchCriteria{Body: []string{"acrossboundary"}, NotFlag: []imap.Flag{imap.FlagSeen}}, false},
	} {
		want := scanSearch(t, reference, &tc.crit)
		for round := 0; round < 3; round++ {
			before := d.store.BodyReads()
			data, err := c.Search(&tc.crit, nil).Wait()
			if err != nil {
				t.Fatalf("%s: SEARCH: %v", tc.name, err)
			}
			reads := d.store.BodyReads() - before
			if got := data.AllSeqNums(); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("%s: SEARCH gives %v, the scan %v", tc.name, got, want)
			}
			most := int64(0)
			if tc.short {
				most = 2
			}
			if reads > most {
				t.Errorf("%s, SEARCH %d: %d bodies read, want at most %d: the long ones are answered from their texts kept", tc.name, round+1, reads, most)
			}
		}
	}
}
