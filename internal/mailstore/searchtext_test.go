package mailstore

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime"
	"mime/quotedprintable"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
	"cspool/internal/testproc"
)

// longWords mix ASCII with letters whose case folds in interesting ways
// (ß, Σ/σ/ς, İ, the Kelvin sign, Ǆ), letters that decompose or are
// written decomposed (é both ways, the ligature ﬁ, fullwidth letters,
// combining marks that decomposition reorders) and an emoji, so that
// needles cut from them, and pieces cut through them, cross the cases the
// texts kept must answer as the scan does.
var longWords = []string{"quarterly", "Report", "MEETING", "Straße", "ΣΟΦΙΑ", "σοφίας", "İstanbul", "\u212aelvin",
	"café", "Zürich", "😀ok", "a", "x\"y", "tab\tin", "Ǆemal", "münchen", "cafe\u0301", "ﬁnal", "ＦＵＬＬ", "ᾳ\u0301",
	"e\u0301\u0323"}

// longMessage is a message of one of several shapes (plain, quoted-printable,
// base64, latin-1, multipart with a base64 attachment, a forwarded message,
// bytes that are not UTF-8), headers RFC 2047-encoded or not, and the text
// it was made of.
func longMessage(r *rand.Rand, i int) (msg, text string) {
	word := func() string { return longWords[r.IntN(len(longWords))] }
	var t strings.Builder
	for j := 0; j < 10+r.IntN(40); j++ {
		if j > 0 {
			if r.IntN(6) == 0 {
				t.WriteString("\r\n")
			} else {
				t.WriteByte(' ')
			}
		}
		t.WriteString(word())
	}
	text = t.String()
	hdr := func(name, v string) string {
		switch r.IntN(3) {
		case 0:
			return name + ": " + mime.QEncoding.Encode("utf-8", v) + "\r\n"
		case 1:
			return name + ": " + mime.BEncoding.Encode("utf-8", v) + "\r\n"
		}
		return name + ": " + v + "\r\n"
	}
	var b strings.Builder
	b.WriteString(hdr("From", word()+" <"+strings.ToLower(word())+"@example.org>"))
	b.WriteString(hdr("To", word()+"@example.net"))
	if r.IntN(2) == 0 {
		b.WriteString(hdr("Cc", word()+" <cc@example.com>"))
	}
	b.WriteString(hdr("Subject", fmt.Sprintf("%s %d %s", word(), i, word())))
	b.WriteString(hdr("X-Other", word()+" "+word()))
	switch r.IntN(7) {
	case 0:
		b.WriteString("\r\n" + text + "\r\n")
	case 1:
		var q strings.Builder
		w := quotedprintable.NewWriter(&q)
		w.Write([]byte(text))
		w.Close()
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + q.String() + "\r\n")
	case 2:
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
			base64.StdEncoding.EncodeToString([]byte(text)) + "\r\n")
	case 3:
		raw := make([]byte, 0, len(text))
		for _, c := range text {
			if c > 0xff {
				c = '?'
			}
			raw = append(raw, byte(c))
		}
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n" + string(raw) + "\r\n")
	case 4:
		att := base64.StdEncoding.EncodeToString([]byte("attached " + word()))
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" +
			text + "\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsecond " + word() +
			"\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + att + "\r\n--b1--\r\n")
	case 5:
		b.WriteString("MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + hdr("Subject", "inner "+word()) + "\r\n" + text + "\r\n")
	default:
		// Not UTF-8: bytes that lower-case to U+FFFD each, cut anywhere.
		b.WriteString("\r\n" + text + " \xe2\x82 \xff\xfe" + word() + "\xc3\r\n")
	}
	return b.String(), text
}

// longNeedle cuts 1 to 14 code points out of src, in random case.
func longNeedle(r *rand.Rand, src string) string {
	rs := []rune(src)
	n := min(1+r.IntN(14), len(rs))
	start := r.IntN(len(rs) - n + 1)
	out := make([]rune, 0, n)
	for _, c := range rs[start : start+n] {
		switch r.IntN(3) {
		case 0:
			c = []rune(strings.ToUpper(string(c)))[0]
		case 1:
			c = []rune(strings.ToLower(string(c)))[0]
		}
		out = append(out, c)
	}
	return string(out)
}

// scanHas is the scan's answer (what imapd's matcher tests, by the
// parser's texts) for a message under key; for SearchHeader, the
// superset the index gives: any field's text or the raw header.
func scanHas(raw []byte, hl int64, key SearchKey, needle string) bool {
	var p mimeform.Parser
	body := func() bool {
		for _, x := range p.BodyTexts(raw, hl) {
			if ContainsFold(x, needle) {
				return true
			}
		}
		return false
	}
	header := func(field string) bool {
		if field == "" && ContainsFold(string(raw[:hl]), needle) {
			return true
		}
		for k, texts := range p.HeaderTexts(raw[:hl]) {
			if field != "" && !strings.EqualFold(k, field) {
				continue
			}
			for _, x := range texts {
				if ContainsFold(x, needle) {
					return true
				}
			}
		}
		return false
	}
	switch key {
	case SearchBody:
		return body()
	case SearchText:
		return header("") || body()
	case SearchHeader:
		return header("")
	}
	return header(indexedFields[key-SearchFrom])
}

// TestLongTextsAgainstScan: with every body too long for the index and
// its texts kept in pieces of a few bytes (so that nearly every needle
// crosses a piece's boundary, and pieces are cut inside characters of
// two to four bytes), the search's answers from the texts kept are the
// scan's, for every key and for needles of 1 to 14 code points in random
// case: through TextSearch (the needles the index takes) and through
// StoredTextHas (every needle, line breaks too).
func TestLongTextsAgainstScan(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 28))
	s := openTest(t)
	s.textLimits = textLimits{index: 0, piece: 1 + r.IntN(12)}
	t.Logf("pieces of %d bytes", s.textLimits.piece)
	ctx := context.Background()
	var l testLog
	var msgs, texts []string
	for i := 0; i < 40; i++ {
		m, text := longMessage(r, i)
		msgs, texts = append(msgs, m), append(texts, text)
		mustApply(t, s, l.spool(deliverCmd(m)))
	}
	if _, left, err := s.IndexPending(ctx, 100); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	var listed int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM unindexable WHERE bid IN (SELECT bid FROM search_texts)").Scan(&listed); err != nil || listed != len(msgs) {
		t.Fatalf("%d bodies unindexable with texts kept (%v), want all %d", listed, err, len(msgs))
	}
	type stored struct {
		raw []byte
		hl  int64
		m   *Message
	}
	var all []stored
	// The messages as a Scan gives them, held past its callback: their
	// StoredTextHas reads the store's current state then.
	if err := s.Scan(ctx, InboxID(), WantHeader, func(m *Message) error {
		raw, err := m.LoadRaw(ctx)
		if err != nil {
			return err
		}
		all = append(all, stored{raw, m.HeaderLen, m})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	asked, found := 0, 0
	queries := testproc.Scale(t, 30, 300)
	for q := 0; q < queries; q++ {
		src := texts[r.IntN(len(texts))]
		if r.IntN(3) == 0 {
			src = msgs[r.IntN(len(msgs))]
		}
		needle := longNeedle(r, src)
		key := SearchKey(r.IntN(len(ftsFilter)))
		var a *TextAnswer
		if Indexable(needle) {
			var err error
			if a, err = s.TextSearch(ctx, InboxID(), key, needle); err != nil {
				t.Fatal(err)
			}
			if len(a.Unindexed) != 0 {
				t.Fatalf("TextSearch %q: %d messages left to the scan, want none", needle, len(a.Unindexed))
			}
		}
		for _, x := range all {
			want := scanHas(x.raw, x.hl, key, needle)
			if want {
				found++
			}
			asked++
			if a != nil && a.Match[x.m.UID] != want {
				t.Fatalf("TextSearch key %d %q, UID %d: %v, the scan %v (seed %d)", key, needle, x.m.UID, a.Match[x.m.UID], want, seed)
			}
			got, ok, err := x.m.StoredTextHas(ctx, key, needle)
			if err != nil || !ok {
				t.Fatalf("StoredTextHas %q, UID %d: stored %v, %v", needle, x.m.UID, ok, err)
			}
			if got != want {
				t.Fatalf("StoredTextHas key %d %q, UID %d: %v, the scan %v (seed %d)", key, needle, x.m.UID, got, want, seed)
			}
		}
	}
	t.Logf("%d answers compared, %d of them matches", asked, found)
	if found == 0 || found == asked {
		t.Errorf("%d matches of %d: the needles test nothing", found, asked)
	}
}

// TestStoredTextsLowerAsWhole: a text kept in pieces is byte for byte the
// text lower-cased (foldCase) whole, wherever the pieces cut it: inside
// characters of two to four bytes, through bytes that are not UTF-8 (each
// becomes U+FFFD), through letters whose lower case has another length
// (İ, the Kelvin sign), and between a letter and the combining marks
// after it, which decomposition reorders (ᾳ and U+0301 is α, U+0301,
// then ι; e, U+0301 and U+0323 has U+0323 first), through a run of 40
// combining marks, past which decomposition puts U+034F, and a
// ligature that decomposes to 18 code points. The text is folded as it
// is read, never whole.
func TestStoredTextsLowerAsWhole(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	text := "Aİ\u212aß😀Σ\xe2\x82x\xff\xc3\xa9É\xf0\x9f\x98" + strings.Repeat("Zürich ", 3) + "ᾳ\u0301 e\u0301\u0323 ﬁ o" + strings.Repeat("\u0301\u0323", 20) + "ﷺ"
	for piece := 1; piece <= len(text)+1; piece++ {
		tx, err := s.wdb.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := tx.PrepareContext(ctx, insertText)
		if err != nil {
			t.Fatal(err)
		}
		n, err := storeTexts(ctx, st, 1, &searchTexts{body: []string{text, "Second"}}, piece)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tx.QueryContext(ctx, "SELECT part, data FROM search_texts WHERE bid = 1 ORDER BY piece")
		if err != nil {
			t.Fatal(err)
		}
		var ts textScanner
		got := []string{"", ""}
		count := 0
		for rows.Next() {
			var part int
			var data []byte
			if err := rows.Scan(&part, &data); err != nil {
				t.Fatal(err)
			}
			if err := ts.inflate(data); err != nil {
				t.Fatal(err)
			}
			if len(ts.text) > max(piece, 4) {
				t.Errorf("pieces of %d: a piece of %d bytes", piece, len(ts.text))
			}
			got[part] += string(ts.text)
			count++
		}
		rows.Close()
		tx.Rollback()
		if count != n {
			t.Errorf("pieces of %d: %d written, %d read", piece, n, count)
		}
		if got[0] != foldCase(text) || got[1] != "second" {
			t.Fatalf("pieces of %d: %q and %q kept, want %q and %q", piece, got[0], got[1], foldCase(text), "second")
		}
	}
}

// TestStoredTextFiltersSkipPieces: a search of a body's texts kept reads
// the trigram filters of its pieces and decompresses only the pieces a
// match may start in (and the next, for a match across their boundary):
// one or two of 40 for a word that is in one, none for one in no piece;
// a needle the filters cannot answer (two bytes, or longer than
// textOverlap+1) reads them all.
func TestStoredTextFiltersSkipPieces(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	s.textLimits = textLimits{index: 0, piece: 4096}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 4))
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: pieces\r\n\r\n")
	for b.Len() < 40*4096 {
		for j := 0; j < 10; j++ {
			b.WriteByte(byte('a' + r.IntN(26)))
		}
		b.WriteString(" ")
		if b.Len()%80 < 11 {
			b.WriteString("\r\n")
		}
	}
	text := b.String()
	at := len(text) / 2
	msg := text[:at] + " UniqueNeedleWord " + text[at:]
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(msg)))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	var pieces int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM search_texts WHERE col = 0").Scan(&pieces); err != nil || pieces < 40 {
		t.Fatalf("%d pieces of body text (%v), want 40 or more", pieces, err)
	}
	long := strings.ToLower(msg[at-700 : at+700])
	for _, tc := range []struct {
		needle      string
		found       bool
		most, least int
	}{
		{"uniqueneedleword", true, 2, 1},
		{"not-in-the-text", false, 0, 0},
		{"ab", true, pieces, 1},
		{long, true, pieces, pieces / 2},
	} {
		var ts textScanner
		found, stored, err := ts.has(ctx, s.rdb, 1, SearchBody, tc.needle)
		if err != nil || !stored || found != tc.found {
			t.Errorf("%.20q: found %v, stored %v, %v; want %v", tc.needle, found, stored, err, tc.found)
		}
		t.Logf("%.20q: %d of %d pieces", tc.needle, ts.pieces, pieces)
		if ts.pieces > tc.most || ts.pieces < tc.least {
			t.Errorf("%.20q: %d of %d pieces decompressed, want %d to %d", tc.needle, ts.pieces, pieces, tc.least, tc.most)
		}
	}
}

// TestSchema28KeepsTexts: a body that version 27 listed as unindexable,
// without its texts, is listed as unindexed again by the migration to
// version 28, and the indexer keeps its texts: the search answers for it
// from them, where it was left to the scan. A deleted body's texts go
// with it.
func TestSchema28KeepsTexts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	s.textLimits.index = 100
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("From: a@example.org\r\nSubject: long\r\n\r\n"+strings.Repeat("a long text of many words ", 20)+"the end word\r\n")),
		l.spool(deliverCmd("From: b@example.org\r\nSubject: short\r\n\r\nend\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	// Version 27 had the body listed, and no texts.
	s = reopenedFrom(t, s, path, 27)
	var listed, unindexed int
	if err := s.rdb.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM unindexable), (SELECT count(*) FROM unindexed)").Scan(&listed, &unindexed); err != nil || listed != 0 || unindexed != 1 {
		t.Fatalf("after the migration %d bodies unindexable and %d unindexed (%v), want 0 and 1", listed, unindexed, err)
	}
	s.textLimits.index = 100
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	a, err := s.TextSearch(ctx, InboxID(), SearchBody, "END WORD")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Unindexed) != 0 || len(a.Match) != 1 || !a.Match[1] {
		t.Errorf("TextSearch: match %v, not indexed %v; want UID 1 alone, and none left to the scan", a.Match, a.Unindexed)
	}
	m, err := s.Message(ctx, InboxID(), 1, WantMetadataOnly)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{m.ID}}))
	var pieces int
	if err := s.rdb.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM search_texts), (SELECT count(*) FROM unindexable)").Scan(&pieces, &listed); err != nil || pieces != 0 || listed != 0 {
		t.Errorf("after the body went: %d pieces of texts kept, %d bodies unindexable (%v), want none", pieces, listed, err)
	}
}
