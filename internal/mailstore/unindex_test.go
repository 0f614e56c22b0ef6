package mailstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// indexPages returns a digest of both FTS5 indexes' stored pages (their
// _data tables): whatever a statement writes to an index changes it.
func indexPages(t *testing.T, s *Store) [32]byte {
	t.Helper()
	h := sha256.New()
	for _, table := range []string{"fts_data", "ftsw_data"} {
		rows, err := s.rdb.Query("SELECT id, block FROM " + table + " ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int64
			var block []byte
			if err := rows.Scan(&id, &block); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(h, "%s %d %x\n", table, id, block)
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return [32]byte(h.Sum(nil))
}

// idSet returns the integers query gives.
func idSet(t *testing.T, s *Store, query string) map[int64]bool {
	t.Helper()
	rows, err := s.rdb.Query(query)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out[v] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkIndexRows checks what each index holds against the bodies: a row
// for every body that is neither listed unindexed nor unindexable, and
// one for every deleted body listed in unindex_pending, none other; no
// listed body is stored.
func checkIndexRows(t *testing.T, what string, s *Store) {
	t.Helper()
	want := idSet(t, s, `SELECT bid FROM bodies WHERE bid NOT IN (SELECT bid FROM unindexed) AND bid NOT IN (SELECT bid FROM unindexable)
		UNION ALL SELECT bid FROM unindex_pending`)
	if both := idSet(t, s, "SELECT bid FROM unindex_pending WHERE bid IN (SELECT bid FROM bodies)"); len(both) != 0 {
		t.Errorf("%s: bodies %v are stored and listed in unindex_pending", what, slices.Sorted(maps.Keys(both)))
	}
	for _, table := range []string{"fts_docsize", "ftsw_docsize"} {
		var n int
		if err := s.rdb.QueryRow("SELECT count(*) FROM " + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		got := idSet(t, s, "SELECT id FROM "+table)
		if n != len(got) || !maps.Equal(got, want) {
			t.Errorf("%s: %s holds %d rows %v, want %v", what, table, n, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}
}

// searchUIDs returns what TextSearch answers for a body needle in INBOX:
// the UIDs the index matched and those it does not hold.
func searchUIDs(t *testing.T, s *Store, needle string) (match, unindexed []UID) {
	t.Helper()
	a, err := s.TextSearch(context.Background(), InboxID(), SearchBody, needle)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(a.Match)), a.Unindexed
}

// wantIndexed checks that the index answers a body needle in INBOX with
// want exactly and holds every message it looked at.
func wantIndexed(t *testing.T, s *Store, what, needle string, want ...UID) {
	t.Helper()
	if m, u := searchUIDs(t, s, needle); !slices.Equal(m, want) || len(u) != 0 {
		t.Errorf("%q %s: match %v unindexed %v, want %v", needle, what, m, u, want)
	}
}

// indexAll runs IndexPending until nothing is left, at most 10,000
// transactions of 1,000 bodies.
func indexAll(t testing.TB, s *Store) {
	t.Helper()
	for range 10000 {
		_, left, err := s.IndexPending(context.Background(), 1000)
		if err != nil {
			t.Fatal(err)
		}
		if left == 0 {
			return
		}
	}
	t.Fatal("IndexPending: bodies left after 10,000 transactions")
}

// TestExpungeLeavesIndexToIndexer: an EXPUNGE whose bodies go writes
// nothing to the search index (no page of either FTS5 table changes in
// its transaction); it lists the bodies in unindex_pending, searches
// answer as if their rows were gone, and the indexer takes them out, in
// one statement each for all of them.
func TestExpungeLeavesIndexToIndexer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	var ids []command.ID
	for i := range 40 {
		e := l.spool(deliverCmd(fmt.Sprintf("Subject: m%d\r\n\r\nquarterly report number%d\r\n", i, i)))
		ids = append(ids, e.ID)
		mustApply(t, s, e)
	}
	indexAll(t, s)
	// One more body, not indexed yet: its delete lists nothing.
	late := l.spool(deliverCmd("Subject: late\r\n\r\nquarterly late\r\n"))
	mustApply(t, s, late)
	before := indexPages(t, s)

	gone := append(slices.Clone(ids[:30]), late.ID)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: gone}))
	if after := indexPages(t, s); after != before {
		t.Errorf("the EXPUNGE wrote to the search index's pages")
	}
	pending := idSet(t, s, "SELECT bid FROM unindex_pending")
	if len(pending) != 30 {
		t.Errorf("unindex_pending lists %d bodies, want the 30 indexed ones deleted", len(pending))
	}
	checkIndexRows(t, "after the EXPUNGE", s)
	wantUIDs := make([]UID, 0, 10)
	for u := UID(31); u <= 40; u++ {
		wantUIDs = append(wantUIDs, u)
	}
	for _, needle := range []string{"quarterly", "uarterl", "rterly rep"} {
		wantIndexed(t, s, "with the deleted bodies' rows in the index", needle, wantUIDs...)
	}
	if m, _ := searchUIDs(t, s, "number5"); len(m) != 0 {
		t.Errorf("number5 (expunged) matches %v", m)
	}

	done, more, err := s.IndexPendingWithin(ctx, 1000, 0)
	if err != nil || done != 30 || more {
		t.Fatalf("IndexPendingWithin: %d done, more %v, %v; want 30, false", done, more, err)
	}
	checkIndexRows(t, "after the indexer", s)
	if n := len(idSet(t, s, "SELECT bid FROM unindex_pending")); n != 0 {
		t.Errorf("unindex_pending lists %d after the indexer", n)
	}
	wantIndexed(t, s, "after the indexer", "quarterly", wantUIDs...)
}

// TestPurgeBatches: the indexer takes purgeBatch deleted bodies' rows out
// a statement, IndexPendingWithin one batch a transaction, and says more
// are left while any is listed.
func TestPurgeBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	ids := deliverMany(t, s, &l, 25, "batch")
	indexAll(t, s)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[:23]}))
	const batch = 10
	purged := 0
	for range 10 {
		err := s.indexTx(ctx, "test", func(tx *sql.Tx) error {
			n, err := purgeIndex(ctx, tx, batch)
			purged += n
			if err == nil && n != min(batch, 23-purged+n) {
				err = fmt.Errorf("a batch took %d", n)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		checkIndexRows(t, fmt.Sprintf("after %d purged", purged), s)
		if purged == 23 {
			break
		}
	}
	if purged != 23 {
		t.Fatalf("purged %d, want 23", purged)
	}
	// IndexPendingWithin: one batch of purgeBatch, then whether more.
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[23:]}))
	if done, more, err := s.IndexPendingWithin(ctx, 1000, 0); err != nil || done != 2 || more {
		t.Fatalf("IndexPendingWithin: %d done, more %v, %v; want 2, false", done, more, err)
	}
	checkIndexRows(t, "after the last", s)
}

// TestIndexReusedBodyID: a body stored under the id of a deleted body
// whose rows the index still holds (the largest id plus one, after the
// largest went) has them taken out as it is stored: a search never
// answers it by the old body's text, and the index holds one row for it
// once it is indexed.
func TestIndexReusedBodyID(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	var l testLog
	a := l.spool(deliverCmd("Subject: a\r\n\r\nalpha first\r\n"))
	b := l.spool(deliverCmd("Subject: b\r\n\r\nbravo second\r\n"))
	mustApply(t, s, a, b)
	indexAll(t, s)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: []command.ID{b.ID}}))
	if p := idSet(t, s, "SELECT bid FROM unindex_pending"); !maps.Equal(p, map[int64]bool{2: true}) {
		t.Fatalf("unindex_pending %v, want body 2", p)
	}
	mustApply(t, s, l.spool(deliverCmd("Subject: c\r\n\r\ncharlie third\r\n")))
	if got := idSet(t, s, "SELECT bid FROM bodies"); !maps.Equal(got, map[int64]bool{1: true, 2: true}) {
		t.Fatalf("bodies %v, want 1 and 2 (the id reused)", got)
	}
	checkIndexRows(t, "after the id was reused", s)
	if m, u := searchUIDs(t, s, "bravo"); len(m) != 0 {
		t.Errorf("bravo (expunged) before indexing: match %v unindexed %v, want no match", m, u)
	}
	if m, u := searchUIDs(t, s, "charlie"); len(m) != 0 || !slices.Equal(u, []UID{3}) {
		t.Errorf("charlie before indexing: match %v unindexed %v, want UID 3 unindexed", m, u)
	}
	indexAll(t, s)
	checkIndexRows(t, "after indexing", s)
	wantIndexed(t, s, "(expunged) after indexing", "bravo")
	wantIndexed(t, s, "after indexing", "charlie", 3)
}

// TestIndexAcrossTakeBack: queued changes delete indexed bodies and store
// one under a deleted body's id; taking them back puts the bodies back
// with their old ids. Each time, the index holds exactly the rows its
// lists say, and searches answer the state shown.
func TestIndexAcrossTakeBack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	var ids []command.ID
	for _, w := range []string{"one", "two", "three"} {
		e := l.spool(deliverCmd("Subject: " + w + "\r\n\r\nalpha " + w + "\r\n"))
		ids = append(ids, e.ID)
		mustApply(t, s, e)
	}
	indexAll(t, s)
	if _, err := s.Enqueue(ctx, entryID(1000), &command.Command{Kind: command.Expunge, IDs: []command.ID{ids[0], ids[2]}}); err != nil {
		t.Fatal(err)
	}
	if p := idSet(t, s, "SELECT bid FROM unindex_pending"); !maps.Equal(p, map[int64]bool{1: true, 3: true}) {
		t.Fatalf("unindex_pending %v after the queued EXPUNGE, want 1 and 3", p)
	}
	checkIndexRows(t, "after the queued EXPUNGE", s)
	// The indexer takes some out: body 1's rows go, body 3's stay listed.
	err := s.indexTx(ctx, "test", func(tx *sql.Tx) error {
		_, err := purgeIndex(ctx, tx, 1)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Enqueue(ctx, entryID(1001), &command.Command{Kind: command.Append, Mailbox: "INBOX", MailboxID: InboxID(), Date: 5,
		Body: []byte("Subject: four\r\n\r\nbeta four\r\n")})
	if err != nil || res.Outcomes[0].Status == Rejected {
		t.Fatalf("Enqueue Append: %+v, %v", res, err)
	}
	if got := idSet(t, s, "SELECT bid FROM bodies"); !maps.Equal(got, map[int64]bool{2: true, 3: true}) {
		t.Fatalf("bodies %v, want 2 and 3 (the appended one under 3)", got)
	}
	checkIndexRows(t, "after the queued APPEND", s)
	indexAll(t, s)
	checkIndexRows(t, "after indexing the queued changes", s)
	wantIndexed(t, s, "with the changes queued", "alpha", 2)
	wantIndexed(t, s, "with the changes queued", "beta", 4)

	takeBackQueue(t, s)
	if got := idSet(t, s, "SELECT bid FROM bodies"); !maps.Equal(got, map[int64]bool{1: true, 2: true, 3: true}) {
		t.Fatalf("bodies %v after the take-back, want 1, 2 and 3", got)
	}
	checkIndexRows(t, "after the take-back", s)
	if m, u := searchUIDs(t, s, "alpha"); !slices.Equal(slices.Sorted(slices.Values(append(m, u...))), []UID{1, 2, 3}) {
		t.Errorf("alpha after the take-back: match %v unindexed %v, want UIDs 1 to 3", m, u)
	}
	if m, u := searchUIDs(t, s, "beta"); len(m) != 0 {
		t.Errorf("beta after the take-back: match %v unindexed %v, want no match", m, u)
	}
	indexAll(t, s)
	checkIndexRows(t, "after indexing again", s)
	wantIndexed(t, s, "indexed again", "alpha", 1, 2, 3)
	wantIndexed(t, s, "indexed again", "three", 3)
}

// TestPendingUnindexAcrossRestart: bodies deleted and not yet taken out
// of the index stay listed when the store is closed (as a crash leaves
// it: the list is written in the EXPUNGE's transaction) and are taken out
// after it is opened again; Reindex empties the list with the index.
func TestPendingUnindexAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	ids := deliverMany(t, s, &l, 12, "restart")
	indexAll(t, s)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[:8]}))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if p := idSet(t, s, "SELECT bid FROM unindex_pending"); len(p) != 8 {
		t.Fatalf("unindex_pending lists %d after the restart, want 8", len(p))
	}
	checkIndexRows(t, "after the restart", s)
	if _, left, err := s.IndexPending(ctx, 0); err != nil || left != 8 {
		t.Fatalf("IndexPending(0): %d left, %v; want 8", left, err)
	}
	if done, more, err := s.IndexPendingWithin(ctx, 1000, 0); err != nil || done != 8 || more {
		t.Fatalf("IndexPendingWithin: %d done, more %v, %v; want 8, false", done, more, err)
	}
	checkIndexRows(t, "after the indexer", s)

	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[8:10]}))
	if err := s.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(idSet(t, s, "SELECT bid FROM unindex_pending")); n != 0 {
		t.Errorf("unindex_pending lists %d after Reindex", n)
	}
	checkIndexRows(t, "after Reindex", s)
	indexAll(t, s)
	checkIndexRows(t, "after indexing again", s)
}

// TestSchema24Migrates: a database of schema version 23, its index
// complete, migrates to version 24 with nothing listed, and its next
// EXPUNGE leaves the rows to the indexer.
func TestSchema24Migrates(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	var l testLog
	ids := deliverMany(t, s, &l, 5, "migrate")
	indexAll(t, s)
	s = reopenedFrom(t, s, path, 23)
	checkIndexRows(t, "after the migration", s)
	before := indexPages(t, s)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[:2]}))
	if indexPages(t, s) != before {
		t.Errorf("the EXPUNGE wrote to the search index's pages")
	}
	checkIndexRows(t, "after the EXPUNGE", s)
	indexAll(t, s)
	checkIndexRows(t, "after the indexer", s)
}

// indexDataBytes returns the bytes of both FTS5 indexes' stored pages.
func indexDataBytes(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.rdb.QueryRow("SELECT (SELECT coalesce(sum(length(block)), 0) FROM fts_data) + (SELECT coalesce(sum(length(block)), 0) FROM ftsw_data)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// reclaimAll runs ReclaimIndex until it does nothing and returns how many
// steps did something.
func reclaimAll(t *testing.T, s *Store) int {
	t.Helper()
	for steps := 0; steps < 100; steps++ {
		merged, err := s.ReclaimIndex(context.Background(), 500)
		if err != nil {
			t.Fatal(err)
		}
		if !merged {
			return steps
		}
	}
	t.Fatal("ReclaimIndex still merging after 100 steps")
	return 0
}

// TestReclaimIndex: taking deleted bodies' rows out of the index writes
// tombstones only (the index's pages grow a little, none is rewritten:
// 'deletemerge' 0; FTS5's default 10 rewrote the segment in the purge's
// statement); ReclaimIndex then rewrites the level whose deleted rows
// passed a tenth of it, smaller than before the EXPUNGE, and does nothing
// when nothing is left to do or when fewer rows were deleted; searches
// answer the same throughout.
func TestReclaimIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t)
	var l testLog
	var ids []command.ID
	var batch []Entry
	text := strings.Repeat("The quick brown fox jumps over the lazy dog 0123456789\r\n", 10)
	for i := range 300 {
		e := l.spool(deliverCmd(fmt.Sprintf("Subject: m%d\r\n\r\nquarterly%d\r\n%s", i, i, text)))
		ids = append(ids, e.ID)
		batch = append(batch, e)
	}
	mustApply(t, s, batch...)
	indexAll(t, s)
	for {
		merged, err := s.MergeIndex(ctx, 500)
		if err != nil {
			t.Fatal(err)
		}
		if !merged {
			break
		}
	}
	// 210 of 300: FTS5 with its default deletemerge rewrote the segment
	// in the purge's statement (to about a third of its bytes).
	before := indexDataBytes(t, s)
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[:210]}))
	if done, more, err := s.IndexPendingWithin(ctx, 1000, 0); err != nil || done != 210 || more {
		t.Fatalf("IndexPendingWithin: %d done, more %v, %v; want 210, false", done, more, err)
	}
	if purged := indexDataBytes(t, s); purged < before {
		t.Errorf("taking 210 of 300 bodies' rows out made the index %d bytes from %d: a segment was rewritten, where only tombstones should be written", purged, before)
	}
	want := make([]UID, 0, 90)
	for u := UID(211); u <= 300; u++ {
		want = append(want, u)
	}
	for _, needle := range []string{"brown fox", "quarterly250"} {
		w := want
		if needle == "quarterly250" {
			w = []UID{251}
		}
		wantIndexed(t, s, "with tombstones", needle, w...)
	}
	if n := reclaimAll(t, s); n == 0 {
		t.Errorf("ReclaimIndex with 210 of 300 rows deleted did nothing")
	}
	if after := indexDataBytes(t, s); after*2 >= before {
		t.Errorf("after ReclaimIndex the index holds %d bytes, %d before the EXPUNGE: the deleted rows were not dropped", after, before)
	}
	for _, needle := range []string{"brown fox", "quarterly250", "quarterly20"} {
		w := want
		switch needle {
		case "quarterly250":
			w = []UID{251}
		case "quarterly20":
			w = []UID{}
			for u := UID(211); u <= 300; u++ {
				if strings.Contains(fmt.Sprint("quarterly", u-1), "quarterly20") {
					w = append(w, u)
				}
			}
		}
		wantIndexed(t, s, "after ReclaimIndex", needle, w...)
	}
	checkIndexRows(t, "after ReclaimIndex", s)
	if n := reclaimAll(t, s); n != 0 {
		t.Errorf("ReclaimIndex of an index with no deleted rows: %d steps did something, want none", n)
	}
	// 4 of the 90 left: below the share, nothing to rewrite.
	mustApply(t, s, l.user(&command.Command{Kind: command.Expunge, IDs: ids[210:214]}))
	indexAll(t, s)
	if n := reclaimAll(t, s); n != 0 {
		t.Errorf("ReclaimIndex with 4 of 90 rows deleted: %d steps did something, want none", n)
	}
	checkIndexRows(t, "after 4 more deleted", s)
}
