package mailstore

import (
	"context"
	"testing"

	"cspool/internal/mimeform"
)

// oldTextsCases are the searches testdata/texts-v0.db.gz answers wrong:
// the index holds the texts the earlier cspool made, which lack them.
var oldTextsCases = []struct {
	key    SearchKey
	needle string
	uid    UID
}{
	{SearchFrom, "Jörg", 1},       // 8-bit From read as windows-1252
	{SearchText, "jörg latin", 1}, // and so in TEXT
	{SearchBody, "bison", 2},      // a part in charset unknown-8bit
	{SearchBody, "capybara", 2},   // a part in charset x-no-such-charset
	{SearchText, "capybara", 2},
	{SearchFrom, `"Bob"`, 3}, // a name's quoted-pairs undone, as ENVELOPE shows it
	{SearchFrom, `Smith "Bob" Jones <bob@`, 3},
}

// textsFound reports, for each of oldTextsCases, whether the index finds
// its message (not whether the scan would: a message not indexed counts
// as not found).
func textsFound(t *testing.T, s *Store) []bool {
	t.Helper()
	out := make([]bool, len(oldTextsCases))
	for i, c := range oldTextsCases {
		a, err := s.TextSearch(t.Context(), InboxID(), c.key, c.needle)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = a.Match[c.uid] && !a.NotIndexed(c.uid)
	}
	return out
}

// textsParser is the parser of now under a later texts version: what a
// cspool that changed the search texts again would be to this store.
type textsParser struct {
	mimeform.Parser
	version int
}

func (p textsParser) TextsVersion() int { return p.version }

// TestUpgradeTextsOfOldStore: a store indexed by an earlier cspool
// (testdata/texts-v0.md) keeps, once migrated, the texts that cspool
// made, which do not hold an 8-bit From read as windows-1252 nor a part
// in an unknown charset, so the index does not find them. UpgradeTexts
// lists its bodies for the indexer a batch at a time, and once indexed
// the index finds each, as for a message delivered now; the store
// stopped after a batch goes on from where the rows say. Only the index
// changes: the replicated state (UIDs, flags, modseqs) is the same.
func TestUpgradeTextsOfOldStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := oldStore(t, "texts-v0.db.gz")
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := s.TextsPending(ctx); err != nil || n != 3 {
		t.Fatalf("TextsPending of the old store: %d, %v; want its 3 bodies", n, err)
	}
	for i, found := range textsFound(t, s) {
		if found {
			t.Fatalf("the old store's index finds %q: the test's premise (texts the earlier cspool did not make) is wrong", oldTextsCases[i].needle)
		}
	}
	before, err := s.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// One batch, then a stop: the bodies listed wait for the indexer.
	if done, more, err := s.UpgradeTexts(ctx, 2); done != 2 || !more || err != nil {
		t.Fatalf("first batch: %d, %v, %v; want 2 listed and more left", done, more, err)
	}
	checkIndexRows(t, "after the first batch", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, mimeform.Parser{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.TextsPending(ctx); err != nil || n != 1 {
		t.Errorf("TextsPending after a batch of 2 and a start: %d, %v; want 1 (the listed wait for the indexer)", n, err)
	}
	indexAll(t, s)
	if done, more, err := s.UpgradeTexts(ctx, 2); done != 1 || more || err != nil {
		t.Fatalf("second batch: %d, %v, %v; want the last body listed and none left", done, more, err)
	}
	indexAll(t, s)
	checkIndexRows(t, "after the upgrade", s)
	for i, found := range textsFound(t, s) {
		if !found {
			c := oldTextsCases[i]
			t.Errorf("after the upgrade the index does not find %q (key %d) in UID %d", c.needle, c.key, c.uid)
		}
	}
	var stale int
	if err := s.rdb.QueryRow("SELECT count(*) FROM bodies WHERE texts_version != ?", s.TextsVersion()).Scan(&stale); err != nil || stale != 0 {
		t.Errorf("%d bodies (%v) not stamped with texts version %d", stale, err, s.TextsVersion())
	}
	if done, more, err := s.UpgradeTexts(ctx, 100); done != 0 || more || err != nil {
		t.Errorf("UpgradeTexts of an upgraded store: %d, %v, %v; want 0, false, nil", done, more, err)
	}
	after, err := s.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(before, after, 10); len(d) != 0 {
		t.Errorf("the upgrade changed the replicated state: %v", d)
	}
}

// TestUpgradeTextsKept: a body with more text than the index takes has
// its texts kept in search_texts instead of index rows; the upgrade of
// such a body (and of one that now has more text) makes its kept texts
// again, leaving no row of its old ones in the index nor in search_texts.
func TestUpgradeTextsKept(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := Open(oldStore(t, "texts-v0.db.gz"), mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Every body is too long for the index now: its rows leave it, its
	// texts are kept.
	s.textLimits = textLimits{index: 0, piece: 64}
	upgradeTextsAll(t, s)
	checkIndexRows(t, "texts kept", s)
	var kept int
	if err := s.rdb.QueryRow("SELECT count(DISTINCT bid) FROM search_texts").Scan(&kept); err != nil || kept != 3 {
		t.Fatalf("bodies with kept texts: %d, %v; want 3", kept, err)
	}
	// A later version again, with the index taking them: the kept texts
	// go, rows come back.
	s.parser = textsParser{version: mimeform.TextsVersion + 1}
	s.textLimits = textLimits{index: maxIndexedText, piece: textPiece}
	if n, err := s.TextsPending(ctx); err != nil || n != 3 {
		t.Fatalf("TextsPending under a later version: %d, %v; want 3", n, err)
	}
	upgradeTextsAll(t, s)
	checkIndexRows(t, "indexed again", s)
	if err := s.rdb.QueryRow("SELECT count(*) FROM search_texts").Scan(&kept); err != nil || kept != 0 {
		t.Errorf("search_texts rows left: %d, %v; want none", kept, err)
	}
	for i, found := range textsFound(t, s) {
		if !found {
			t.Errorf("after the upgrades the index does not find %q in UID %d", oldTextsCases[i].needle, oldTextsCases[i].uid)
		}
	}
	// An earlier cspool of the same schema (a device taken back) leaves
	// the bodies of a later version as they are.
	s.parser = textsParser{version: mimeform.TextsVersion}
	if n, err := s.TextsPending(ctx); err != nil || n != 0 {
		t.Errorf("TextsPending of an earlier version: %d, %v; want 0", n, err)
	}
	if done, more, err := s.UpgradeTexts(ctx, 10); done != 0 || more || err != nil {
		t.Errorf("UpgradeTexts of an earlier version: %d, %v, %v; want 0, false, nil", done, more, err)
	}
}

// upgradeTextsAll lists and indexes the bodies of earlier texts, a body
// a batch, failing after 100 batches.
func upgradeTextsAll(t *testing.T, s *Store) {
	t.Helper()
	for range 100 {
		_, more, err := s.UpgradeTexts(t.Context(), 1)
		if err != nil {
			t.Fatal(err)
		}
		indexAll(t, s)
		if !more {
			return
		}
	}
	t.Fatal("bodies of earlier texts left after 100 batches")
}
