package mailstore

import (
	"bytes"
	"compress/flate"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/transform"
)

// The texts of bodies too long for the index (docs/MAILSTORE.md, "Search
// index": "Bodies with more text than the index takes").
//
// A body whose texts are longer than maxIndexedText is not indexed (its
// trigrams would hold the device's writer for seconds). Its texts are
// kept instead, once, in table search_texts (schema version 28), by the
// indexer's transaction that lists it as unindexable: each text of each
// index column (the body's decoded text parts one by one, the raw header
// and the fields' texts) lower-cased, the bytes of foldCase of the text
// whole, cut into pieces of at most textPiece bytes (at the start of a
// code point) and each piece compressed with DEFLATE, Huffman codes only
// (textCompression). A text is a "part": a
// piece never holds two, and a search never looks across two, so that
// the answer is the scan's for every needle (a match never spans two of
// the texts the scan tests apart). A body's text is folded as it is read
// (foldTransformer), not a piece at a time: decomposition (NFKD) reorders
// the combining marks that follow a letter, which a cut may part, and a
// piece folded alone gave other bytes than the scan tests; nor whole,
// which would hold up to ten times the text (a ligature of 3 bytes
// decomposes to 33).
//
// Beside each piece, a filter of its trigrams (grams: gramBits bits, a
// bit set for every three bytes in a row of the piece's text and of the
// textOverlap bytes of its part that follow it). A needle of 3 to
// textOverlap+1 bytes (lower-cased) that starts in a piece has all its
// trigrams there, so a search reads the filters first (gramBits/8 bytes
// a piece, a few percent of its text) and then only the pieces whose
// filter has every trigram of the needle, each with the pieces that
// follow it in its part as far as len(needle)-1 bytes reach. A needle of
// one or two bytes, or longer than textOverlap+1, reads every piece.
//
// A search reads those pieces instead of the message: no raw bytes of
// up to 50 MB read, no MIME decoded, and one piece in memory at a time.
// It looks for the needle in each piece and across each boundary between
// two pieces of a part that it reads (the last len(needle)-1 bytes of one
// before the first of the next).

// textPiece is the most bytes of a text, lower-cased, that one piece of
// search_texts holds (a piece shorter than 4 bytes may take a code
// point's remaining bytes beyond).
const textPiece = 128 << 10

// textCompression is the DEFLATE level of the pieces: Huffman codes
// alone, no matches. On text of made-up words it gives 58% of the text
// where level 1 (BestSpeed) gives 56%, in a third of the time (16 MiB:
// 36 against 129 ms, all of it in the indexer's write transaction); on
// prose level 1 gives about half as much, which is disk, not the
// writer's time.
const textCompression = flate.HuffmanOnly

// textOverlap is how far past its piece a piece's trigram filter
// reaches into its part: the longest needle the filters answer is
// textOverlap+1 bytes.
const textOverlap = 1024

// gramBits is the size of a piece's trigram filter, in bits (4 KiB: a
// piece of 128 KiB of prose has about 10,000 distinct trigrams, which set
// about a quarter of them).
const gramBits = 1 << 15

// insertText stores a piece of a body's texts.
const insertText = "INSERT INTO search_texts (bid, piece, col, part, len, grams, data) VALUES (?, ?, ?, ?, ?, ?, ?)"

// gramBit is the bit of trigram a, b, c in a filter.
func gramBit(a, b, c byte) uint32 {
	return (uint32(a)<<16 | uint32(b)<<8 | uint32(c)) * 0x9e3779b1 >> (32 - 15)
}

// addGrams sets the bits of every trigram of b in f.
func addGrams(f []byte, b []byte) {
	for i := 0; i+2 < len(b); i++ {
		k := gramBit(b[i], b[i+1], b[i+2])
		f[k>>3] |= 1 << (k & 7)
	}
}

// needleGrams returns the bits of the trigrams of needle (lower-cased),
// or nil when the filters cannot answer for it.
func needleGrams(needle string) []uint32 {
	if len(needle) < 3 || len(needle)-1 > textOverlap {
		return nil
	}
	out := make([]uint32, 0, len(needle)-2)
	for i := 0; i+2 < len(needle); i++ {
		out = append(out, gramBit(needle[i], needle[i+1], needle[i+2]))
	}
	return out
}

// hasGrams reports whether filter f has every bit of grams.
func hasGrams(f []byte, grams []uint32) bool {
	if len(f) != gramBits/8 {
		return true
	}
	for _, k := range grams {
		if f[k>>3]&(1<<(k&7)) == 0 {
			return false
		}
	}
	return true
}

// The index columns, in the order of an index row (searchTexts.row): the
// col of search_texts.
const (
	colBody = iota
	colHdr
	colFrom // colFrom + i: indexedFields[i]
)

// textCols returns the columns a search under key reads: those of its
// FTS5 column filter (ftsFilter).
func textCols(key SearchKey) []int {
	switch key {
	case SearchBody:
		return []int{colBody}
	case SearchText:
		return []int{colHdr, colBody}
	case SearchHeader:
		return []int{colHdr}
	}
	return []int{colFrom + int(key-SearchFrom)}
}

// searchTexts are a body's texts by column, as the index would hold them
// but each text apart: body's as the parser gives them (row and
// storeTexts lower-case them), the others lower-cased already (column).
type searchTexts struct {
	body []string
	cols [1 + len(indexedFields)]column // hdr, then the fields
}

// bodySearchTexts returns a body's texts by column.
func bodySearchTexts(p Parser, raw []byte, headerLen int64) *searchTexts {
	hl := min(int(headerLen), len(raw))
	t := &searchTexts{body: p.BodyTexts(raw, headerLen)}
	t.cols[0].add(string(raw[:hl]))
	for key, texts := range p.HeaderTexts(raw[:hl]) {
		k := HeaderSearchKey(key)
		for _, x := range texts {
			t.cols[0].add(x)
			if k != SearchHeader {
				t.cols[1+int(k-SearchFrom)].add(x)
			}
		}
	}
	return t
}

// size returns the bytes of the index row the texts make (each column's
// texts joined with "\n"), before the body's texts are lower-cased.
func (t *searchTexts) size() int {
	n := 0
	for i, x := range t.body {
		n += len(x)
		if i > 0 {
			n++
		}
	}
	for _, c := range t.cols {
		for i, x := range c.texts {
			n += len(x)
			if i > 0 {
				n++
			}
		}
	}
	return n
}

// row returns the index row: body, hdr, then the fields of
// indexedFields, each a column's texts lower-cased and joined with "\n".
func (t *searchTexts) row() []any {
	row := []any{foldCase(strings.Join(t.body, "\n"))}
	for _, c := range t.cols {
		row = append(row, c.String())
	}
	return row
}

// storeTexts writes the texts of body bid into search_texts with st
// (insertText), in pieces of at most piece bytes of text, and returns how
// many pieces it wrote.
func storeTexts(ctx context.Context, st *sql.Stmt, bid int64, t *searchTexts, piece int) (int, error) {
	var out bytes.Buffer
	zw, err := flate.NewWriter(&out, textCompression)
	if err != nil {
		return 0, err
	}
	grams := make([]byte, gramBits/8)
	var ahead []byte
	// buf holds a piece of the text, the textOverlap bytes after it and
	// a code point's bytes beyond: all a piece's filter reads.
	buf := make([]byte, 0, piece+textOverlap+utf8.UTFMax)
	n := 0
	put := func(col, part int, src io.Reader) error {
		buf = buf[:0]
		eof := false
		for {
			for !eof && len(buf) < cap(buf) {
				k, err := src.Read(buf[len(buf):cap(buf)])
				buf = buf[:len(buf)+k]
				if err == io.EOF {
					eof = true
				} else if err != nil {
					return err
				}
			}
			if len(buf) == 0 {
				return nil
			}
			cut := pieceEnd(buf, piece)
			text, rest := buf[:cut], buf[cut:]
			// The filter: this piece's trigrams and those of the
			// textOverlap bytes of the part after it.
			clear(grams)
			addGrams(grams, text)
			ahead = append(ahead[:0], text[max(len(text)-2, 0):]...)
			ahead = append(ahead, rest[:min(len(rest), textOverlap)]...)
			addGrams(grams, ahead)
			out.Reset()
			zw.Reset(&out)
			if _, err := zw.Write(text); err != nil {
				return err
			}
			if err := zw.Close(); err != nil {
				return err
			}
			if _, err := st.ExecContext(ctx, bid, n, col, part, len(text), grams, out.Bytes()); err != nil {
				return err
			}
			n++
			buf = buf[:copy(buf, rest)]
		}
	}
	var sr strings.Reader
	for part, x := range t.body {
		// Folded as it is read (foldTransformer), never whole: a text
		// of 16 MiB may fold to ten times as many bytes.
		sr.Reset(x)
		if err := put(colBody, part, transform.NewReader(&sr, foldTransformer())); err != nil {
			return n, err
		}
	}
	for i, c := range t.cols {
		for part, x := range c.texts {
			sr.Reset(x)
			if err := put(colHdr+i, part, &sr); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// pieceEnd returns where the piece of s that starts at 0 ends: at most
// max bytes in, before the start of a code point (or a byte that is
// none), or just past max when none is there. A cut there never splits a
// code point's bytes, so the pieces lower-case as s would whole.
func pieceEnd[T string | []byte](s T, max int) int {
	if len(s) <= max {
		return len(s)
	}
	end := max
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	if end > 0 {
		return end
	}
	for end = max; end < len(s) && !utf8.RuneStart(s[end]); end++ {
	}
	return end
}

// textScanner looks for needles in stored texts, with one piece and its
// decompressor held at a time, reused from body to body.
type textScanner struct {
	zr   io.ReadCloser
	src  bytes.Reader
	text []byte // the piece decompressed
	edge []byte // the end of the part's text so far and the next piece's start
	// last is the piece fed last, and its column and part: the edge
	// carries over to the next piece only within the same part.
	last, lastCol, lastPart int
	// pieces counts the pieces decompressed (tests).
	pieces int
}

// has reports whether the stored texts of body bid under the columns of
// key hold needle (lower-cased, not empty), and whether any are stored.
func (ts *textScanner) has(ctx context.Context, q queryer, bid int64, key SearchKey, needle string) (found, stored bool, err error) {
	cols := textCols(key)
	in := "col IN (?" + strings.Repeat(", ?", len(cols)-1) + ")"
	args := []any{bid}
	for _, c := range cols {
		args = append(args, c)
	}
	ts.last = -2
	grams := needleGrams(needle)
	if grams == nil {
		// Every piece, in order.
		rows, err := q.QueryContext(ctx, "SELECT piece, col, part, data FROM search_texts WHERE bid = ? AND "+in+" ORDER BY piece", args...)
		if err != nil {
			return false, false, err
		}
		defer rows.Close()
		read := false
		for rows.Next() {
			read = true
			var piece, col, part int
			var data sql.RawBytes
			if err := rows.Scan(&piece, &col, &part, &data); err != nil {
				return false, true, err
			}
			if found, err := ts.feed(piece, col, part, data, needle); err != nil || found {
				return found, true, errors.Join(err, rows.Close())
			}
		}
		if err := rows.Err(); err != nil || read {
			return false, true, err
		}
		stored, err = anyStored(ctx, q, bid)
		return false, stored, err
	}
	// The filters first: the pieces a match may start in, and those
	// after each as far as len(needle)-1 bytes reach.
	rows, err := q.QueryContext(ctx, "SELECT piece, col, part, len, grams FROM search_texts WHERE bid = ? AND "+in+" ORDER BY piece", args...)
	if err != nil {
		return false, false, err
	}
	var want []int
	read := false
	need, lastCol, lastPart := 0, -1, -1
	for rows.Next() {
		read = true
		var piece, col, part, n int
		var f sql.RawBytes
		if err := rows.Scan(&piece, &col, &part, &n, &f); err != nil {
			rows.Close()
			return false, true, err
		}
		if col != lastCol || part != lastPart {
			need, lastCol, lastPart = 0, col, part
		}
		switch {
		case hasGrams(f, grams):
			want = append(want, piece)
			need = len(needle) - 1
		case need > 0:
			want = append(want, piece)
			need -= n
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return false, true, err
	}
	if !read {
		stored, err = anyStored(ctx, q, bid)
		return false, stored, err
	}
	for _, piece := range want {
		var col, part int
		var data []byte
		if err := q.QueryRowContext(ctx, "SELECT col, part, data FROM search_texts WHERE bid = ? AND piece = ?", bid, piece).Scan(&col, &part, &data); err != nil {
			return false, true, err
		}
		if found, err := ts.feed(piece, col, part, data, needle); err != nil || found {
			return found, true, err
		}
	}
	return false, true, nil
}

// anyStored reports whether body bid has stored texts at all.
func anyStored(ctx context.Context, q queryer, bid int64) (bool, error) {
	var stored bool
	err := q.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM search_texts WHERE bid = ?)", bid).Scan(&stored)
	return stored, err
}

// feed looks for needle in a piece's compressed text and across its
// boundary with the piece fed before, when that is the piece before it
// in the same part.
func (ts *textScanner) feed(piece, col, part int, data []byte, needle string) (bool, error) {
	if err := ts.inflate(data); err != nil {
		return false, fmt.Errorf("piece %d of the stored texts: %w", piece, err)
	}
	ts.pieces++
	if piece != ts.last+1 || col != ts.lastCol || part != ts.lastPart {
		ts.edge = ts.edge[:0]
	}
	ts.last, ts.lastCol, ts.lastPart = piece, col, part
	n := []byte(needle)
	if len(ts.edge) > 0 {
		// Across the boundary: the part's last len(n)-1 bytes before
		// this piece, then its first len(n)-1.
		keep := len(ts.edge)
		ts.edge = append(ts.edge, ts.text[:min(len(n)-1, len(ts.text))]...)
		if bytes.Contains(ts.edge, n) {
			return true, nil
		}
		ts.edge = ts.edge[:keep]
	}
	if bytes.Contains(ts.text, n) {
		return true, nil
	}
	// The part's last len(n)-1 bytes so far.
	if tail := len(n) - 1; len(ts.text) >= tail {
		ts.edge = append(ts.edge[:0], ts.text[len(ts.text)-tail:]...)
	} else {
		ts.edge = append(ts.edge, ts.text...)
		if over := len(ts.edge) - tail; over > 0 {
			ts.edge = append(ts.edge[:0], ts.edge[over:]...)
		}
	}
	return false, nil
}

// inflate decompresses data into ts.text.
func (ts *textScanner) inflate(data []byte) error {
	ts.src.Reset(data)
	if ts.zr == nil {
		ts.zr = flate.NewReader(&ts.src)
	} else if err := ts.zr.(flate.Resetter).Reset(&ts.src, nil); err != nil {
		return err
	}
	ts.text = ts.text[:0]
	for {
		if len(ts.text) == cap(ts.text) {
			ts.text = append(ts.text, 0)[:len(ts.text)]
		}
		n, err := ts.zr.Read(ts.text[len(ts.text):cap(ts.text)])
		ts.text = ts.text[:len(ts.text)+n]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// storedTextShare: within a Scan, a message of less than 1/storedTextShare
// of the index's limit (128 KiB of 1 MiB) is taken to have no stored
// texts without a look: its texts would be eight times its size. Taking
// it so is never wrong, only slower when it does have them (the caller
// decodes the message), and saves the look-up for each of the many small
// messages a SEARCH with a needle the index does not take reads.
const storedTextShare = 8

// StoredTextHas reports whether the message's body holds needle under
// key, from its stored texts (those of a body too long for the index):
// stored is false when it has none, for the caller to test the message
// itself. An empty needle is never answered here.
func (m *Message) StoredTextHas(ctx context.Context, key SearchKey, needle string) (found, stored bool, err error) {
	if needle == "" || m.loader == nil || int(key) >= len(ftsFilter) || m.Size < m.storedMin {
		return false, false, nil
	}
	var ts textScanner
	found, stored, err = ts.has(ctx, m.loader, m.bodyID, key, foldCase(needle))
	if err != nil {
		return false, false, fmt.Errorf("searching message %s's stored texts: %w", m.ID, err)
	}
	return found, stored, nil
}
