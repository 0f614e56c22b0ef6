package mailstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"cspool/internal/command"
)

// The search index (docs/MAILSTORE.md, "Search index").
//
// IMAP SEARCH BODY, TEXT and HEADER are case-insensitive substring tests
// (RFC 9051 section 6.4.4). What they test is defined once, by the parser
// (Parser.BodyTexts and Parser.HeaderTexts; package mimeform), for the scan
// and the index alike:
//
//   - a body's text is its decoded text parts (transfer encoding and
//     charset undone; text/* and message/* leaves, not attachments), or the
//     raw bytes after the header when the message is not MIME-parseable;
//   - a header field's text is its value, unfolded, raw and with RFC 2047
//     words decoded, and of an address field with a quoted string its
//     addresses as ENVELOPE shows them; TEXT tests the raw header as a
//     whole and every field's text.
//
// "Contains" is strings.Contains over foldCase of both sides: case
// folded and decomposed (NFKD), as i;unicode-casemap (RFC 5051) has it.
// "Lower-cased" below means so folded.
//
// The index is an FTS5 table with the trigram tokenizer, case-sensitive,
// over the lower-cased texts: one row per body (rowid = bodies.bid), a
// column per searchable part, a part's several texts joined with "\n". A
// trigram phrase query is a substring test on code points, so for a needle
// of at least three code points (lower-cased) holding no "\n" and no NUL,
// the index answers exactly what the definition above does: a match cannot
// span two joined texts without holding the "\n" between them. A text
// that another text of its column holds is left out: every needle in it
// is in the other. Other needles are tested by the scan. HEADER of a
// field without a column of its own asks column hdr, which holds the text
// of every field: its answer is a superset (the needle may be in another
// field, or span a field's name), which SEARCH tests. A stored body is listed in table
// unindexed (a trigger) until IndexPending indexes it, which the daemon
// runs in the background as mail is applied: trigrams cost about 1 ms of
// CPU per KB of text, too much for the apply's transaction (the first
// sync of 10,000 messages would take minutes). Searches test the bodies
// not indexed yet with the scan, so answers are exact meanwhile. A body
// with more text than the index takes for one (maxIndexedText) is listed
// in unindexable and its texts kept in search_texts, which searches read
// instead of the message (searchtext.go; schema version 28). A
// deleted body's rows leave the index in the background too: a trigger
// lists it in unindex_pending and the indexer takes the rows out many a
// statement (purgeIndex); searches meanwhile join the rows to messages,
// which no longer use the body, and a body stored under a listed id has
// the id's rows taken out as it is inserted (schema version 24). The
// purge writes tombstones only; ReclaimIndex drops the deleted rows'
// postings later, a bounded step at a time (schema version 25).

// SearchKey is what a SEARCH text criterion looks in.
type SearchKey uint8

const (
	SearchBody    SearchKey = iota // BODY: the body's text
	SearchText                     // TEXT: the header, raw and decoded, and the body's text
	SearchFrom                     // HEADER From (FROM)
	SearchTo                       // HEADER To (TO)
	SearchCc                       // HEADER Cc (CC)
	SearchBcc                      // HEADER Bcc (BCC)
	SearchSubject                  // HEADER Subject (SUBJECT)
	SearchHeader                   // HEADER of any other field: the answer is a superset
)

// indexedFields are the header fields with a column of their own, in
// SearchFrom order.
var indexedFields = [...]string{"From", "To", "Cc", "Bcc", "Subject"}

// ftsFilter is each key's FTS5 column filter.
var ftsFilter = [...]string{"{body}", "{hdr body}", "{hfrom}", "{hto}", "{hcc}", "{hbcc}", "{hsubject}", "{hdr}"}

// HeaderSearchKey returns the key of HEADER field: its column's, or
// SearchHeader.
func HeaderSearchKey(field string) SearchKey {
	for i, f := range indexedFields {
		if strings.EqualFold(f, field) {
			return SearchFrom + SearchKey(i)
		}
	}
	return SearchHeader
}

// Indexable reports whether the index answers a search for needle exactly.
func Indexable(needle string) bool {
	n := foldCase(needle)
	return utf8.RuneCountInString(n) >= 3 && !strings.ContainsAny(n, "\n\x00")
}

// ContainsFold is the SEARCH substring test.
func ContainsFold(hay, needle string) bool {
	return containsFold(hay, needle, foldChunk)
}

// foldChunk is the most bytes of a text ContainsFold folds at once: a
// longer one, unless ASCII (which folds to as many bytes), is folded as
// it is read (foldTransformer), a chunk at a time, where the whole text
// folded may take ten times its bytes (ﷺ, 3 bytes, decomposes to 33),
// and the scan reads texts of up to 16 MiB.
const foldChunk = 64 << 10

// containsFold is ContainsFold, folding hay chunk bytes at a time when
// it is longer: it looks for the needle in each chunk after the last
// len(needle)-1 bytes of the one before.
func containsFold(hay, needle string, chunk int) bool {
	if needle == "" {
		return true
	}
	n := []byte(foldCase(needle))
	ascii := isASCII(hay)
	if ascii && isASCII(string(n)) && len(n) <= lowerWindow/4 {
		return containsLower(hay, n)
	}
	if len(hay) <= chunk || ascii {
		// Folded whole: short, or as long as it is (ASCII).
		return strings.Contains(foldCase(hay), string(n))
	}
	r := transform.NewReader(strings.NewReader(hay), foldTransformer())
	buf := make([]byte, 0, chunk+len(n))
	for {
		k, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if bytes.Contains(buf, n) {
			return true
		}
		if err != nil {
			// The end (io.EOF, io.ErrUnexpectedEOF): the transformers
			// fail on no string.
			return false
		}
		keep := min(len(n)-1, len(buf))
		buf = buf[:copy(buf, buf[len(buf)-keep:])]
	}
}

// lowerWindow is how many bytes of an ASCII text containsLower lower-cases
// at once, on the stack.
const lowerWindow = 4 << 10

// containsLower reports whether hay, all ASCII, lower-cased (its foldCase)
// holds n, lower-cased ASCII of at most lowerWindow/4 bytes, lowering
// lowerWindow bytes at a time, looking for n across each window's end:
// strings.ToLower made a copy of every text a SEARCH BODY tested that
// held a capital letter, about a tenth of such a SEARCH's CPU with the
// collection of those copies, over mail the index lacks.
func containsLower(hay string, n []byte) bool {
	var buf [lowerWindow]byte
	keep := 0 // bytes of the window before, kept for a match across its end
	for off := 0; off < len(hay); {
		w := buf[:keep+min(len(buf)-keep, len(hay)-off)]
		for i := keep; i < len(w); i++ {
			c := hay[off]
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			w[i] = c
			off++
		}
		if bytes.Contains(w, n) {
			return true
		}
		keep = min(len(n)-1, len(w))
		copy(buf[:keep], w[len(w)-keep:])
	}
	return false
}

// foldCase is what SEARCH compares of a text and a needle, as
// i;unicode-casemap (RFC 5051) compares them: each code point mapped to
// the lower case of its upper case (foldRune), then the text decomposed
// to NFKD and its code points mapped so again. The map stands for RFC
// 5051's titlecase: two code points of the same titlecase have the same
// upper case, so final sigma (ς) folds as σ, dotless ı as i, long s (ſ)
// as s, the Kelvin sign as k. NFKD makes é written as one code point the
// e and U+0301 a client may type, the ligature ﬁ the letters f and i,
// fullwidth Ａ the A (then a), ™ the letters TM, as RFC 5051 has both
// sides decomposed; the second map folds the letters decompositions give
// (ℌ is H). A needle is a substring of the decomposed text, so e finds
// é, as in Dovecot. One departure from RFC 5051: İ (U+0130) folds as i,
// its lower case, before it is decomposed, so SEARCH "istanbul" finds
// "İSTANBUL" as it did before decomposition; RFC 5051 makes it I and
// U+0307, which i alone does not match. Every byte that is not UTF-8
// becomes U+FFFD. Decomposition reorders combining marks across the text
// and so is not a map of each code point: pieces of a text folded apart
// are not the text folded whole; foldTransformer folds a text as it is
// read, with the bytes of foldCase (storeTexts). A change of what
// foldCase makes of some text raises foldVersion.
func foldCase(s string) string {
	if isASCII(s) {
		return strings.ToLower(s)
	}
	if f, ok := foldRunes(s); ok {
		return f
	}
	return foldWhole(s)
}

// foldWhole is foldCase as defined, with the whole text mapped,
// normalized and mapped again.
func foldWhole(s string) string {
	s = strings.Map(foldRune, s)
	if norm.NFKD.IsNormalString(s) {
		return s
	}
	return strings.Map(foldRune, norm.NFKD.String(s))
}

// runeFold is foldWhole of one code point, with the canonical combining
// classes of the first and last code points of its decomposition.
type runeFold struct {
	s           string
	first, last uint8
}

func foldOne(r rune) runeFold {
	f := runeFold{s: foldWhole(string(r))}
	if d := norm.NFKD.String(string(foldRune(r))); d != "" {
		_, n := utf8.DecodeLastRuneInString(d)
		f.first, f.last = norm.NFKD.PropertiesString(d).CCC(), norm.NFKD.PropertiesString(d[len(d)-n:]).CCC()
	}
	return f
}

// smallFolds holds foldOne of the code points of two bytes in UTF-8
// (U+0080 to U+07FF: Latin, Greek, Cyrillic, Hebrew, Arabic and more).
var smallFolds = sync.OnceValue(func() *[0x800]runeFold {
	var t [0x800]runeFold
	for r := rune(utf8.RuneSelf); r < 0x800; r++ {
		t[r] = foldOne(r)
	}
	return &t
})

// foldRunes is foldWhole of s made a code point at a time, from a table
// for the code points of two bytes: the map is idempotent
// (foldRune(foldRune(r)) is foldRune(r) for every code point), and NFKD
// decomposes each code point alone but for the order of combining marks
// in a run (and the joiner it puts into a run of more than 30), so the
// pieces joined are the whole's bytes where no run of combining marks
// goes on from one code point's decomposition into the next. It reports
// false when one would, and foldWhole folds the text. foldWhole alone
// folded German or Greek text 7 to 9 times slower than strings.ToLower
// (23 against 172 to 209 MB/s, BenchmarkFoldCase); a text of decomposed
// letters with one mark each is still folded here.
func foldRunes(s string) (string, bool) {
	small := smallFolds()
	b := make([]byte, 0, len(s)+len(s)/4)
	var buf [utf8.UTFMax]byte
	var last uint8 // the class of the last code point of b
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			b, last = append(b, c), 0
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		if r >= 0x800 {
			m := foldRune(r)
			k := utf8.EncodeRune(buf[:], m)
			if p := norm.NFKD.Properties(buf[:k]); p.Decomposition() == nil && (m < 0xAC00 || m > 0xD7A3) {
				// Its own decomposition: the map's code point.
				if p.CCC() != 0 && last != 0 {
					return "", false
				}
				b, last = append(b, buf[:k]...), p.CCC()
				continue
			}
			f := foldOne(r)
			if f.first != 0 && last != 0 {
				return "", false
			}
			b, last = append(b, f.s...), f.last
			continue
		}
		f := &small[r]
		if f.first != 0 && last != 0 {
			return "", false
		}
		b, last = append(b, f.s...), f.last
	}
	return string(b), true
}

// isASCII reports whether s is all ASCII, which foldCase lower-cases
// alone.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// foldRune is the case map of foldCase.
func foldRune(r rune) rune { return unicode.ToLower(unicode.ToUpper(r)) }

// foldTransformer returns a transformer that makes of a text, read a
// chunk at a time, the bytes foldCase makes of it whole
// (TestStoredTextsLowerAsWhole): it maps each code point, a byte that is
// not UTF-8 to U+FFFD, decomposes, and maps again, and the normalizer
// holds back what it has read of a letter's combining marks until it
// has them all.
func foldTransformer() transform.Transformer {
	return transform.Chain(runes.Map(foldRune), norm.NFKD, runes.Map(foldRune))
}

// column gathers an index column's texts, lower-cased, leaving out those
// that one already there holds, as long as looking costs it no more than
// dedupeBudget bytes compared: past that, a text is added as it comes.
// Leaving a text out only makes the row smaller; one kept twice answers
// every needle as once. Without the budget a header of many fields cost
// the whole raw header's length for each field: 50,000 fields in a
// message of 1 MB held the indexer's write transaction for minutes.
type column struct {
	texts    []string
	compared int // bytes the look-ups read
}

// dedupeBudget is what a column's look-ups may read: about 250 fields in
// a header of 4 KB, more than ordinary mail has.
const dedupeBudget = 1 << 20

func (c *column) add(t string) {
	t = foldCase(t)
	for _, o := range c.texts {
		if c.compared > dedupeBudget {
			break
		}
		c.compared += len(o)
		if strings.Contains(o, t) {
			return
		}
	}
	c.texts = append(c.texts, t)
}

func (c *column) String() string { return strings.Join(c.texts, "\n") }

// ftsQuery is the FTS5 query for needle under key: a phrase, its quotes
// doubled.
func ftsQuery(key SearchKey, needle string) string {
	return ftsFilter[key] + ` : "` + strings.ReplaceAll(foldCase(needle), `"`, `""`) + `"`
}

// Words.
//
// A trigram phrase query reads the positions of every trigram of the
// needle in every body that holds them all: a word found in every message
// of a large mailbox took over a second. Beside it, ftsw holds the same
// columns split into words by FTS5's ascii tokenizer (a word is a maximal
// run of bytes that are not ASCII punctuation, space or control; it folds
// only ASCII letters, and the texts are lower-cased already), with no
// positions, and words lists every word of three bytes or more, with an
// index of its trigrams (wordgrams). A needle made only of word bytes lies
// inside one word wherever it occurs, so the bodies that hold it are those
// that hold one of the words that contain it: wordgrams finds those words
// (a phrase query over a short list), and ftsw the bodies that hold any of
// them, with no positions read. The answer is the trigram index's, exactly;
// a needle with punctuation or spaces, or found in more than
// maxNeedleWords words, asks the trigram index.

// maxNeedleWords is the most words an OR query of ftsw is made of.
const maxNeedleWords = 500

// wordNeedle reports whether needle (lower-cased) is made of word bytes
// only.
func wordNeedle(needle string) bool {
	for i := 0; i < len(needle); i++ {
		if !isWordByte(needle[i]) {
			return false
		}
	}
	return true
}

// isWordByte is the ascii tokenizer's rule: every byte but ASCII
// punctuation, space and control characters.
func isWordByte(c byte) bool {
	return c >= 0x80 || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// addWords adds the words of text of three bytes or more to set.
func addWords(set map[string]struct{}, text string) {
	start := -1
	for i := 0; i <= len(text); i++ {
		if i < len(text) && isWordByte(text[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= 3 {
			set[text[start:i]] = struct{}{}
		}
		start = -1
	}
}

// indexStmts are the statements that index bodies, prepared once for a
// transaction of IndexPending.
type indexStmts struct {
	read, fts, ftsw, done, tooLong, texts, stamp *sql.Stmt
	// version is the parser's TextsVersion, which stamp writes.
	version int
}

func prepareIndex(ctx context.Context, tx *sql.Tx, p Parser) (*indexStmts, error) {
	x := indexStmts{version: textsVersion(p)}
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&x.read, fmt.Sprintf("SELECT b.header_len, b.size, CASE WHEN b.size <= %d THEN l.data END FROM bodies b JOIN blobs l ON l.bid = b.bid WHERE b.bid = ?", blobPiece)},
		{&x.fts, "INSERT INTO fts (rowid, body, hdr, hfrom, hto, hcc, hbcc, hsubject) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"},
		{&x.ftsw, "INSERT INTO ftsw (rowid, body, hdr, hfrom, hto, hcc, hbcc, hsubject) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"},
		{&x.done, "DELETE FROM unindexed WHERE bid = ?"},
		{&x.tooLong, "INSERT INTO unindexable (bid) VALUES (?) ON CONFLICT DO NOTHING"},
		{&x.texts, insertText},
		{&x.stamp, "UPDATE bodies SET texts_version = ? WHERE bid = ? AND texts_version != ?"},
	} {
		st, err := tx.PrepareContext(ctx, p.q)
		if err != nil {
			x.close()
			return nil, fmt.Errorf("indexing bodies: %w", err)
		}
		*p.st = st
	}
	return &x, nil
}

func (x *indexStmts) close() {
	for _, st := range []*sql.Stmt{x.read, x.fts, x.ftsw, x.done, x.tooLong, x.texts, x.stamp} {
		if st != nil {
			st.Close()
		}
	}
}

// maxIndexedText is the most text (every column of a body's index row
// together) the index takes for one body. Indexing costs about 1 ms of
// CPU per KB of text, all of it in the one write transaction that indexes
// the body: the 20 MB of text of a message anyone can mail held the
// device's writer, and every change its mail clients made, for 10 s. A
// body with more is listed in unindexable instead, its texts kept in
// search_texts (searchtext.go), which searches read instead of the
// message. Mail with over 1 MiB of text (text parts and header, not
// attachments) is rare.
var maxIndexedText = 1 << 20

// textLimits are the bounds indexBody works within: the most text the
// index takes for one body (maxIndexedText) and the most text a piece
// of search_texts holds (textPiece). Tests make them small.
type textLimits struct {
	index, piece int
}

// indexBody indexes one stored body that is listed as unindexed, in both
// indexes, or, when its texts are longer than lim.index, lists it as
// unindexable and keeps its texts in search_texts; it adds its words to
// words, and stamps the body with the version of its texts
// (textsupgrade.go).
func indexBody(ctx context.Context, x *indexStmts, c *sql.Conn, p Parser, lim textLimits, bid int64, words map[string]struct{}) error {
	var hl, size int64
	var raw []byte
	if err := x.read.QueryRowContext(ctx, bid).Scan(&hl, &size, &raw); err != nil {
		return fmt.Errorf("indexing body: %w", err)
	}
	if size > blobPiece {
		// Read in pieces on the transaction's connection (blob.go).
		var err error
		if raw, err = readBlob(c, bid, size); err != nil {
			return fmt.Errorf("indexing body: %w", err)
		}
	}
	texts := bodySearchTexts(p, raw, hl)
	raw = nil
	if _, err := x.stamp.ExecContext(ctx, x.version, bid, x.version); err != nil {
		return fmt.Errorf("indexing body: %w", err)
	}
	var row []any
	if texts.size() <= lim.index {
		// Lower-cased, the texts may be longer (or shorter) than they
		// were: the row is what is measured.
		row = append([]any{bid}, texts.row()...)
		text := 0
		for _, c := range row[1:] {
			text += len(c.(string))
		}
		if text > lim.index {
			row = nil
		}
	}
	if row == nil {
		if _, err := storeTexts(ctx, x.texts, bid, texts, lim.piece); err != nil {
			return fmt.Errorf("indexing body: keeping its texts: %w", err)
		}
		if _, err := x.tooLong.ExecContext(ctx, bid); err != nil {
			return fmt.Errorf("indexing body: %w", err)
		}
		if _, err := x.done.ExecContext(ctx, bid); err != nil {
			return fmt.Errorf("indexing body: %w", err)
		}
		return nil
	}
	if _, err := x.fts.ExecContext(ctx, row...); err != nil {
		return fmt.Errorf("indexing body: %w", err)
	}
	if _, err := x.ftsw.ExecContext(ctx, row...); err != nil {
		return fmt.Errorf("indexing body: %w", err)
	}
	for _, c := range row[1:] {
		addWords(words, c.(string))
	}
	if _, err := x.done.ExecContext(ctx, bid); err != nil {
		return fmt.Errorf("indexing body: %w", err)
	}
	return nil
}

// TextAnswer is what the index says about a text criterion in a mailbox.
type TextAnswer struct {
	// Match holds the UIDs whose indexed text holds the needle; for
	// SearchHeader, those whose header holds it somewhere (Superset).
	Match map[UID]bool
	// Superset says that Match may hold messages that do not match, for
	// the caller to test; those not in Match do not match.
	Superset bool
	// Unindexed holds the UIDs whose bodies are not indexed, in order:
	// the index says nothing about them. A list, not a set: while the
	// index of a large mailbox is being built it holds most of its UIDs
	// (4 bytes each, against about 25 in a map).
	Unindexed []UID
}

// NotIndexed reports whether uid is in Unindexed.
func (a *TextAnswer) NotIndexed(uid UID) bool {
	_, ok := slices.BinarySearch(a.Unindexed, uid)
	return ok
}

// Candidates returns Match and Unindexed together, in UID order.
func (a *TextAnswer) Candidates() []UID {
	out := make([]UID, 0, len(a.Match)+len(a.Unindexed))
	for u := range a.Match {
		if !a.NotIndexed(u) {
			out = append(out, u)
		}
	}
	out = append(out, a.Unindexed...)
	slices.Sort(out)
	return out
}

// TextSearch asks the index which messages of mailbox hold needle under
// key; needle must be Indexable.
func (s *Store) TextSearch(ctx context.Context, mailbox command.ID, key SearchKey, needle string) (*TextAnswer, error) {
	return s.textSearch(ctx, mailbox, 0, key, needle)
}

// textSearch is TextSearch, checking the mailbox's UIDVALIDITY against uv
// unless it is 0 (Selected).
func (s *Store) textSearch(ctx context.Context, mailbox command.ID, uv uint32, key SearchKey, needle string) (*TextAnswer, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if !Indexable(needle) || int(key) >= len(ftsFilter) {
		return nil, fmt.Errorf("searching the index: %q cannot be searched there", needle)
	}
	conn, err := s.rdb.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	defer conn.Close()
	small := false
	defer func() {
		if small {
			restoreReadCache(conn)
		}
	}()
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	defer tx.Rollback()
	if err := checkValidity(ctx, tx, mailbox, uv); err != nil {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	// The lists below read an index of every message of the mailbox
	// (the bodies not indexed, or all of them when many match). While
	// the index of a large mailbox is being built, through the small
	// cache of a scan (Store.scan): the SEARCH then reads the bodies not
	// indexed through it too, and its pages would only grow the
	// connection's memory. A complete index keeps its pages warm for the
	// next SEARCH.
	var uidnext int64
	var pending bool
	if err := tx.QueryRowContext(ctx, "SELECT uidnext, EXISTS (SELECT 1 FROM unindexed) FROM mailboxes WHERE id = ?", mailbox[:]).Scan(&uidnext, &pending); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	if pending && uidnext-1 >= scanSpan {
		small = true
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA cache_size = -%d", scanCacheKiB)); err != nil {
			return nil, fmt.Errorf("searching the index: %w", err)
		}
	}
	a := &TextAnswer{Match: map[UID]bool{}, Superset: key == SearchHeader}
	table, query := "fts", ftsQuery(key, needle)
	if lower := foldCase(needle); wordNeedle(lower) {
		words, err := needleWords(ctx, tx, lower)
		if err != nil {
			return nil, fmt.Errorf("searching the index: %w", err)
		}
		switch {
		case len(words) == 0:
			// No word holds it: no body does.
			table = ""
		case len(words) <= maxNeedleWords:
			table, query = "ftsw", wordsQuery(key, words)
		}
	}
	if table != "" {
		if a.Match, err = matchUIDs(ctx, tx, table, query, mailbox); err != nil {
			return nil, fmt.Errorf("searching the index: %w", err)
		}
	}
	// CROSS JOIN: from the short list of bodies not indexed (yet, or
	// ever: unindexable) to the messages, never the other way round,
	// which would read every message of the mailbox. The UIDs come back
	// as one list (group_concat): a row each cost more than the query
	// when every message matched.
	var list sql.NullString
	if err := tx.QueryRowContext(ctx, `SELECT group_concat(m.uid) FROM unindexed u
		CROSS JOIN messages m ON m.body = u.bid WHERE m.mailbox = (SELECT mid FROM mailboxes WHERE id = ?)`,
		mailbox[:]).Scan(&list); err != nil {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	if a.Unindexed, err = uidList(list.String); err != nil {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	// The bodies too long for the index: their stored texts, read a
	// piece at a time (searchtext.go); one without them (none should be)
	// is left to the scan.
	more, err := s.searchLong(ctx, tx, mailbox, key, needle, a)
	if err != nil {
		return nil, fmt.Errorf("searching the index: %w", err)
	}
	if len(more) > 0 {
		a.Unindexed = append(a.Unindexed, more...)
		slices.Sort(a.Unindexed)
		a.Unindexed = slices.Compact(a.Unindexed)
	}
	return a, nil
}

// searchLong looks for needle under key in the stored texts of the
// bodies of mailbox listed in unindexable, and adds the UIDs of the
// messages whose bodies hold it to a.Match; it returns those of the
// bodies that have no stored texts, which the index says nothing about.
func (s *Store) searchLong(ctx context.Context, tx *sql.Tx, mailbox command.ID, key SearchKey, needle string, a *TextAnswer) ([]UID, error) {
	var bodies, uids sql.NullString
	// Both lists come from the same rows in the same order.
	if err := tx.QueryRowContext(ctx, `SELECT group_concat(body), group_concat(uid) FROM (SELECT m.body, m.uid FROM unindexable u
		CROSS JOIN messages m ON m.body = u.bid WHERE m.mailbox = (SELECT mid FROM mailboxes WHERE id = ?) ORDER BY m.body)`,
		mailbox[:]).Scan(&bodies, &uids); err != nil {
		return nil, err
	}
	mb, err := intList(bodies.String)
	if err != nil {
		return nil, err
	}
	mu, err := intList(uids.String)
	if err != nil {
		return nil, err
	}
	if len(mb) != len(mu) {
		return nil, fmt.Errorf("%d bodies for %d UIDs", len(mb), len(mu))
	}
	var ts textScanner
	var unknown []UID
	lower := foldCase(needle)
	for i := 0; i < len(mb); {
		j := i + 1
		for j < len(mb) && mb[j] == mb[i] {
			j++
		}
		found, stored, err := ts.has(ctx, tx, mb[i], key, lower)
		if err != nil {
			return nil, err
		}
		for _, u := range mu[i:j] {
			switch {
			case !stored:
				unknown = append(unknown, UID(u))
			case found:
				a.Match[UID(u)] = true
			}
		}
		i = j
	}
	return unknown, nil
}

// matchUIDs returns the UIDs of the messages of mailbox whose bodies
// match query in table (fts or ftsw). The index gives the bodies first.
// Few of them (under a quarter of the UIDs the mailbox has given): a join
// from each to its messages, a B-tree search each. Many: the mailbox's
// messages read in body order from messages_mailbox_body and merged with
// the bodies, which costs a step each instead of a search (over 100,000
// messages that all match, 25 ms instead of 120).
func matchUIDs(ctx context.Context, tx *sql.Tx, table, query string, mailbox command.ID) (map[UID]bool, error) {
	var list sql.NullString
	var uidnext int64
	if err := tx.QueryRowContext(ctx, "SELECT (SELECT group_concat(rowid) FROM "+table+" WHERE "+table+" MATCH ?), uidnext FROM mailboxes WHERE id = ?",
		query, mailbox[:]).Scan(&list, &uidnext); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return map[UID]bool{}, nil
		}
		return nil, err
	}
	bodies, err := intList(list.String)
	if err != nil {
		return nil, err
	}
	if len(bodies) == 0 {
		return map[UID]bool{}, nil
	}
	if int64(len(bodies))*4 < uidnext-1 {
		list = sql.NullString{}
		if err := tx.QueryRowContext(ctx, "SELECT group_concat(m.uid) FROM "+table+" CROSS JOIN messages m ON m.body = "+table+".rowid WHERE "+table+" MATCH ? AND m.mailbox = (SELECT mid FROM mailboxes WHERE id = ?)",
			query, mailbox[:]).Scan(&list); err != nil {
			return nil, err
		}
		return uidSet(list.String)
	}
	// Both lists come from the same rows in the same order.
	var mbodies, muids sql.NullString
	if err := tx.QueryRowContext(ctx, "SELECT group_concat(body), group_concat(uid) FROM (SELECT body, uid FROM messages INDEXED BY messages_mailbox_body WHERE mailbox = (SELECT mid FROM mailboxes WHERE id = ?) ORDER BY body, uid)",
		mailbox[:]).Scan(&mbodies, &muids); err != nil {
		return nil, err
	}
	mb, err := intList(mbodies.String)
	if err != nil {
		return nil, err
	}
	mu, err := intList(muids.String)
	if err != nil {
		return nil, err
	}
	if len(mb) != len(mu) {
		return nil, fmt.Errorf("%d bodies for %d UIDs", len(mb), len(mu))
	}
	slices.Sort(bodies)
	set := make(map[UID]bool, min(len(bodies), len(mu)))
	j := 0
	for i, b := range mb {
		for j < len(bodies) && bodies[j] < b {
			j++
		}
		if j == len(bodies) {
			break
		}
		if bodies[j] == b {
			set[UID(mu[i])] = true
		}
	}
	return set, nil
}

// intList returns the numbers of a comma-separated list.
func intList(list string) ([]int64, error) {
	if list == "" {
		return nil, nil
	}
	out := make([]int64, 0, strings.Count(list, ",")+1)
	for list != "" {
		n, rest, _ := strings.Cut(list, ",")
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		list = rest
	}
	return out, nil
}

// uidSet returns the set of the UIDs of a comma-separated list.
func uidSet(list string) (map[UID]bool, error) {
	uids, err := uidList(list)
	if err != nil {
		return nil, err
	}
	set := make(map[UID]bool, len(uids))
	for _, u := range uids {
		set[u] = true
	}
	return set, nil
}

// uidList returns the UIDs of a comma-separated list, in order and each
// once.
func uidList(list string) ([]UID, error) {
	if list == "" {
		return nil, nil
	}
	out := make([]UID, 0, strings.Count(list, ",")+1)
	for list != "" {
		n, rest, _ := strings.Cut(list, ",")
		uid, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return nil, err
		}
		out = append(out, UID(uid))
		list = rest
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// needleWords returns the words that contain needle (lower-cased, made of
// word bytes, three code points or more), maxNeedleWords + 1 at most.
func needleWords(ctx context.Context, tx *sql.Tx, needle string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT word FROM wordgrams WHERE wordgrams MATCH ? LIMIT ?", `"`+needle+`"`, maxNeedleWords+1)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var w string
		if err := rows.Scan(&w); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// wordsQuery is the ftsw query for a body holding any of words (not
// none) under key.
func wordsQuery(key SearchKey, words []string) string {
	return ftsFilter[key] + ` : ("` + strings.Join(words, `" OR "`) + `")`
}

// ScanUIDs is Scan over the messages of mailbox with the given UIDs only
// (sorted): SEARCH over the candidates the index gave.
func (s *Store) ScanUIDs(ctx context.Context, mailbox command.ID, uids []UID, want Want, fn func(*Message) error) error {
	return s.scanUIDs(ctx, mailbox, 0, uids, want, fn)
}

// scanUIDs is ScanUIDs, checking the mailbox's UIDVALIDITY against uv
// unless it is 0 (Selected).
func (s *Store) scanUIDs(ctx context.Context, mailbox command.ID, uv uint32, uids []UID, want Want, fn func(*Message) error) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(uids) == 0 {
		return nil
	}
	first, last := uids[0], uids[len(uids)-1]
	if span := uint64(last) - uint64(first) + 1; uint64(len(uids))*4 >= span {
		// Most of a span (the candidates of a body search while the
		// index of the mailbox is being built): its rows, filtered here,
		// instead of a list of them all that SQLite parses and holds.
		return s.scan(ctx, mailbox, uv, want, func(UID) (string, []any, func(UID) bool, uint64) {
			return "AND m.uid BETWEEN ? AND ?", []any{int64(first), int64(last)}, func(u UID) bool {
				_, ok := slices.BinarySearch(uids, u)
				return ok
			}, span
		}, fn)
	}
	list, err := json.Marshal(uids)
	if err != nil {
		return err
	}
	return s.scan(ctx, mailbox, uv, want, func(UID) (string, []any, func(UID) bool, uint64) {
		return "AND m.uid IN (SELECT value FROM json_each(?))", []any{string(list)}, func(UID) bool { return true }, uint64(len(uids))
	}, fn)
}

// IndexPending takes the rows of the deleted bodies listed in
// unindex_pending out of the index (all of them, unless limit is 0) and
// indexes up to limit bodies that are not indexed, in one write
// transaction, and returns how many bodies it did either to and how many
// are left to do.
func (s *Store) IndexPending(ctx context.Context, limit int) (done, left int, err error) {
	err = s.indexTx(ctx, "indexing bodies", func(tx *sql.Tx) error {
		purged := 0
		for limit > 0 {
			n, err := purgeIndex(ctx, tx, purgeBatch)
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			purged += n
		}
		indexed, err := s.indexPending(ctx, tx, limit, time.Time{}, 0)
		if err != nil {
			return err
		}
		done = purged + indexed
		return tx.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM unindexed) + (SELECT count(*) FROM unindex_pending)").Scan(&left)
	})
	return done, left, err
}

// IndexPendingWithin is IndexPending that takes up to purgeBatch deleted
// bodies' rows out of the index and then stops taking bodies to index once
// budget has passed since it began (after the purge, or one body), and
// says only whether bodies are left: the transaction holds the write lock
// for about budget however long a body takes, and as many bodies as fit
// share its commit. Each commit writes a segment of both FTS5 indexes and
// merges segments, and counting the bodies left reads the whole list of
// them, so the fewer the transactions, the less each body costs
// (docs/MAILSTORE.md, "Search index").
func (s *Store) IndexPendingWithin(ctx context.Context, limit int, budget time.Duration) (done int, more bool, err error) {
	err = s.indexTx(ctx, "indexing bodies", func(tx *sql.Tx) error {
		begin := time.Now()
		purged, err := purgeIndex(ctx, tx, purgeBatch)
		if err != nil {
			return err
		}
		indexed := 0
		if purged == 0 || budget == 0 || time.Since(begin) < budget {
			if indexed, err = s.indexPending(ctx, tx, limit, begin, budget); err != nil {
				return err
			}
		}
		done = purged + indexed
		return tx.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM unindexed) OR EXISTS (SELECT 1 FROM unindex_pending)").Scan(&more)
	})
	return done, more, err
}

// purgeBatch is the most deleted bodies' rows one statement takes out of
// each index. What a statement costs FTS5 is mostly what it does at its
// end, once: it writes the tombstones out and rewrites each segment that
// holds deleted rows past a tenth of its own ('deletemerge'). At 20,000
// bodies, taking all out cost 3.3 s 1,000 a statement, 0.96 s 5,000 a
// statement, 0.51 s 10,000 and 0.35 s 20,000 (TestExpungeIndexedFigures);
// one a statement, as the bodies' delete trigger did, about 1 ms a body.
const purgeBatch = 10000

// purgeIndex takes the rows of up to batch deleted bodies listed in
// unindex_pending (the lowest ids) out of both indexes, in one statement
// each, and returns how many it took out.
func purgeIndex(ctx context.Context, tx *sql.Tx, batch int) (int, error) {
	// The batch is the ids up to its highest: each statement below takes
	// the same rows.
	var hi sql.NullInt64
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT max(bid), count(*) FROM (SELECT bid FROM unindex_pending ORDER BY bid LIMIT ?)", batch).Scan(&hi, &n); err != nil {
		return 0, fmt.Errorf("taking deleted bodies out of the search index: %w", err)
	}
	if !hi.Valid {
		return 0, nil
	}
	for _, q := range []string{
		"DELETE FROM fts WHERE rowid IN (SELECT bid FROM unindex_pending WHERE bid <= ?)",
		"DELETE FROM ftsw WHERE rowid IN (SELECT bid FROM unindex_pending WHERE bid <= ?)",
		"DELETE FROM unindex_pending WHERE bid <= ?",
	} {
		if _, err := tx.ExecContext(ctx, q, hi.Int64); err != nil {
			return 0, fmt.Errorf("taking deleted bodies out of the search index: %w", err)
		}
	}
	return n, nil
}

// indexPending indexes up to limit bodies that are not indexed in tx, in
// bid order, and stops taking more once budget (if not 0) has passed since
// begin (after one body at least, when none was before).
func (s *Store) indexPending(ctx context.Context, tx *sql.Tx, limit int, begin time.Time, budget time.Duration) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT u.bid FROM unindexed u
		JOIN bodies b ON b.bid = u.bid JOIN blobs l ON l.bid = u.bid ORDER BY u.bid LIMIT ?`, limit)
	if err != nil {
		return 0, err
	}
	var todo []int64
	for rows.Next() {
		var bid int64
		if err := rows.Scan(&bid); err != nil {
			rows.Close()
			return 0, err
		}
		todo = append(todo, bid)
	}
	if err := rows.Close(); err != nil || len(todo) == 0 {
		return 0, err
	}
	x, err := prepareIndex(ctx, tx, s.parser)
	if err != nil {
		return 0, err
	}
	defer x.close()
	words := map[string]struct{}{}
	done := 0
	for _, bid := range todo {
		if budget > 0 && done > 0 && time.Since(begin) >= budget {
			break
		}
		if err := indexBody(ctx, x, s.wconn, s.parser, s.textLimits, bid, words); err != nil {
			return 0, err
		}
		done++
	}
	return done, addVocabulary(ctx, tx, words)
}

// addVocabulary adds the words not listed yet to words (and wordgrams),
// vocabularyBatch a statement.
func addVocabulary(ctx context.Context, tx *sql.Tx, words map[string]struct{}) error {
	if len(words) == 0 {
		return nil
	}
	batch := make([]any, 0, min(len(words), vocabularyBatch))
	put := func() error {
		q := "INSERT INTO words (word) VALUES (?)" + strings.Repeat(", (?)", len(batch)-1) + " ON CONFLICT DO NOTHING"
		if _, err := tx.ExecContext(ctx, q, batch...); err != nil {
			return fmt.Errorf("indexing words: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	for w := range words {
		batch = append(batch, w)
		if len(batch) == vocabularyBatch {
			if err := put(); err != nil {
				return err
			}
		}
	}
	if len(batch) > 0 {
		return put()
	}
	return nil
}

// vocabularyBatch is how many words one statement of addVocabulary
// inserts. Each statement that writes wordgrams (through the trigger of
// words) ends with FTS5 writing what it holds as a segment of its own and
// merging segments: a word a statement, the 120,000 distinct words of a
// body of 900 KB (anyone may mail one; the index takes up to
// maxIndexedText) held the indexer's write transaction, and every change
// the device's mail clients made, for 10 s.
const vocabularyBatch = 1000

// Reindex drops the whole search index and lists every body as unindexed,
// for IndexPending to build again (cspool reindex).
func (s *Store) Reindex(ctx context.Context) error {
	return s.writeTx(ctx, "dropping the search index", func(tx *sql.Tx) error {
		for _, q := range []string{
			"INSERT INTO fts (fts) VALUES ('delete-all')",
			"INSERT INTO ftsw (ftsw) VALUES ('delete-all')",
			"DELETE FROM words",
			"INSERT INTO wordgrams (wordgrams) VALUES ('delete-all')",
			"DELETE FROM unindexed",
			"DELETE FROM unindexable",
			"DELETE FROM search_texts",
			"DELETE FROM unindex_pending",
			"INSERT INTO unindexed (bid) SELECT bid FROM bodies",
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("dropping the search index: %w", err)
			}
		}
		return nil
	})
}

// UnindexedCount returns how many stored bodies the search index does
// not hold yet.
func (s *Store) UnindexedCount(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM unindexed").Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the bodies not indexed: %w", err)
	}
	return n, nil
}

// IndexStats says how large the search index is.
type IndexStats struct {
	Bodies, Unindexed int
	IndexBytes        int64 // the index's own data: FTS5's blocks and its term index
	BodyBytes         int64 // the raw bytes of every body
}

// IndexSize measures the search index against the mail it indexes.
func (s *Store) IndexSize(ctx context.Context) (IndexStats, error) {
	var st IndexStats
	err := s.rdb.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM bodies), (SELECT count(*) FROM unindexed),
		(SELECT coalesce(sum(length(block)), 0) FROM fts_data) + (SELECT coalesce(sum(length(term) + 16), 0) FROM fts_idx) +
		(SELECT coalesce(sum(length(block)), 0) FROM ftsw_data) + (SELECT coalesce(sum(length(term) + 16), 0) FROM ftsw_idx) +
		(SELECT coalesce(sum(length(block)), 0) FROM wordgrams_data) + (SELECT coalesce(sum(length(term) + 16), 0) FROM wordgrams_idx) +
		(SELECT coalesce(sum(length(word) + 8), 0) FROM words),
		(SELECT coalesce(sum(size), 0) FROM bodies)`).Scan(&st.Bodies, &st.Unindexed, &st.IndexBytes, &st.BodyBytes)
	if err != nil {
		return st, fmt.Errorf("measuring the search index: %w", err)
	}
	return st, nil
}

// MergeIndex does up to pages leaf pages of merge work in each FTS5
// index, in one write transaction, merging all of its segments into one
// as FTS5's 'optimize' would but a step at a time, and says whether any
// was done (when none was, each index is one segment, or empty). Whether
// a step did any is whether it changed an index's structure record (the
// row of rowid 10 of its _data table).
func (s *Store) MergeIndex(ctx context.Context, pages int) (merged bool, err error) {
	err = s.indexTx(ctx, "merging the search index", func(tx *sql.Tx) error {
		for _, t := range []string{"fts", "ftsw"} {
			var before, after []byte
			if err := tx.QueryRowContext(ctx, "SELECT block FROM "+t+"_data WHERE id = 10").Scan(&before); err != nil && err != sql.ErrNoRows {
				return fmt.Errorf("merging the search index: %w", err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+t+" ("+t+", rank) VALUES ('merge', ?)", -pages); err != nil {
				return fmt.Errorf("merging the search index: %w", err)
			}
			if err := tx.QueryRowContext(ctx, "SELECT block FROM "+t+"_data WHERE id = 10").Scan(&after); err != nil && err != sql.ErrNoRows {
				return fmt.Errorf("merging the search index: %w", err)
			}
			merged = merged || !bytes.Equal(before, after)
		}
		return nil
	})
	return merged, err
}

// reclaimShare is the share of a level's rows, in percent, that must be
// deleted for ReclaimIndex to rewrite it: FTS5's default 'deletemerge'.
const reclaimShare = 10

// ReclaimIndex does up to pages leaf pages of merge work in each FTS5
// index, in one write transaction, on a level whose deleted rows (the
// tombstones purgeIndex wrote) are reclaimShare percent of its rows or
// more, or on one that holds as many segments as automerge merges, and
// says whether any was done. The indexes' 'deletemerge' is 0 (schema
// version 25), so that the statements that delete rows only write
// tombstones, and the rewrite that drops the deleted rows' postings is
// done here, a bounded step at a time: it is set for the 'merge' command
// alone. Whether a step did any is whether it changed an index's
// structure record but for its first 4 bytes, the configuration cookie
// the two settings move.
func (s *Store) ReclaimIndex(ctx context.Context, pages int) (merged bool, err error) {
	err = s.indexTx(ctx, "reclaiming the search index's deleted rows", func(tx *sql.Tx) error {
		for _, t := range []string{"fts", "ftsw"} {
			var before, after []byte
			if err := tx.QueryRowContext(ctx, "SELECT block FROM "+t+"_data WHERE id = 10").Scan(&before); err != nil && err != sql.ErrNoRows {
				return fmt.Errorf("reclaiming the search index's deleted rows: %w", err)
			}
			for _, q := range []struct {
				cmd string
				arg int
			}{{"deletemerge", reclaimShare}, {"merge", pages}, {"deletemerge", 0}} {
				if _, err := tx.ExecContext(ctx, "INSERT INTO "+t+" ("+t+", rank) VALUES (?, ?)", q.cmd, q.arg); err != nil {
					return fmt.Errorf("reclaiming the search index's deleted rows: %w", err)
				}
			}
			if err := tx.QueryRowContext(ctx, "SELECT block FROM "+t+"_data WHERE id = 10").Scan(&after); err != nil && err != sql.ErrNoRows {
				return fmt.Errorf("reclaiming the search index's deleted rows: %w", err)
			}
			if len(before) >= 4 && len(after) >= 4 {
				before, after = before[4:], after[4:]
			}
			merged = merged || !bytes.Equal(before, after)
		}
		return nil
	})
	return merged, err
}
