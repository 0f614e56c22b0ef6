package mailstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// ftsWriteCounter reads the write counter of FTS5 table t's structure
// record: the leaf pages its flushes wrote, a statement's pending terms
// at least one page (fts5_index.c, the structure record: a 4-byte
// cookie, then the varints nLevel, nSegment and nWriteCounter).
func ftsWriteCounter(t *testing.T, s *Store, table string) uint64 {
	t.Helper()
	var rec []byte
	if err := s.rdb.QueryRowContext(context.Background(), "SELECT block FROM "+table+"_data WHERE id = 10").Scan(&rec); err != nil {
		t.Fatal(err)
	}
	if len(rec) < 4 {
		t.Fatalf("%s's structure record is %d bytes", table, len(rec))
	}
	rec = rec[4:]
	var v [3]uint64
	for i := range v {
		// SQLite's varint: big-endian groups of 7 bits, the high bit set
		// on every byte but the last (at most 9; these are short).
		for j := 0; ; j++ {
			if j == len(rec) || j == 8 {
				t.Fatalf("%s's structure record ends in a varint", table)
			}
			v[i] = v[i]<<7 | uint64(rec[j]&0x7f)
			if rec[j]&0x80 == 0 {
				rec = rec[j+1:]
				break
			}
		}
	}
	return v[2]
}

// TestVocabularyBatched: the distinct words of a body the index takes
// are added to the vocabulary (words, and its trigrams in wordgrams) in
// a few statements, not one a word: each statement that writes wordgrams
// ends with FTS5 flushing a segment of its own, at least a leaf page,
// and merging. A body of 900 KB of distinct short words (120,000), which
// anyone may mail, held the indexer's write transaction for 10 s.
func TestVocabularyBatched(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	const n = 20000
	var b strings.Builder
	b.WriteString("From: b@example.org\r\nSubject: words\r\n\r\n")
	for i := range n {
		fmt.Fprintf(&b, "k%x ", i)
	}
	var l testLog
	mustApply(t, s, l.spool(deliverCmd(b.String())))
	before := ftsWriteCounter(t, s, "wordgrams")
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	pages := ftsWriteCounter(t, s, "wordgrams") - before
	var words int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM words").Scan(&words); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d words took %d leaf pages of wordgrams", words, pages)
	if words < n-16 { // k0 to kf are shorter than a word of the vocabulary
		t.Fatalf("%d words in the vocabulary, want at least %d", words, n-16)
	}
	if limit := uint64(words / 10); pages > limit {
		t.Errorf("adding %d words to the vocabulary wrote %d leaf pages of wordgrams, want at most %d: a statement a word", words, pages, limit)
	}
	// Each word is found.
	for _, w := range []string{"k0", "k4e1f", "k1387"} {
		a, err := s.TextSearch(ctx, InboxID(), SearchBody, w+" ")
		if err != nil || len(a.Match) != 1 {
			t.Errorf("SEARCH BODY %q: %v, %v; want the message", w, a, err)
		}
	}
}
