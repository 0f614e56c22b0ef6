package mailstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"cspool/internal/command"
	"cspool/internal/mimeform"
)

// TestTextSearchHeader: HEADER of a field without a column of its own
// asks the index for a superset of the messages (every field's text is in
// column hdr), and a field's text is its unfolded value, raw and decoded,
// for HEADER and TEXT alike: here a needle that spans a fold between an
// encoded word of an unknown charset, which does not decode, and the next.
func TestTextSearchHeader(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	mustApply(t, s,
		l.spool(deliverCmd("From: a@example.org\r\nX-Folded: =?utf-8?q?caf=C3=A9?=\r\n =?x-unknown?q?zzz?=\r\nSubject: =?utf-8?q?caf=C3=A9?= one\r\n\r\nbody one\r\n")),
		l.spool(deliverCmd("From: b@example.org\r\nMessage-ID: <uniq-123@example.org>\r\nSubject: two\r\n\r\nbody two\r\n")),
		l.spool(deliverCmd("From: c@example.org\r\nSubject: three uniq-123\r\n\r\nbody three\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	for _, tc := range []struct {
		field, needle string
		key           SearchKey
		want          []UID
		superset      bool
	}{
		{"Message-ID", "UNIQ-123", SearchHeader, []UID{2, 3}, true}, // 3 has it in Subject
		{"X-Folded", "?= =?x-unknown", SearchHeader, []UID{1}, true},
		{"", "?= =?X-unknown", SearchText, []UID{1}, false},
		{"", "café", SearchText, []UID{1}, false},
		{"Subject", "uniq-123", SearchSubject, []UID{3}, false},
	} {
		if tc.field != "" && HeaderSearchKey(tc.field) != tc.key {
			t.Errorf("HeaderSearchKey(%s) = %d, want %d", tc.field, HeaderSearchKey(tc.field), tc.key)
		}
		a, err := s.TextSearch(ctx, InboxID(), tc.key, tc.needle)
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Sorted(maps.Keys(a.Match))
		if !slices.Equal(got, tc.want) || a.Superset != tc.superset || len(a.Unindexed) != 0 {
			t.Errorf("%s %q: match %v superset %v unindexed %v; want %v %v", tc.field, tc.needle, got, a.Superset, a.Unindexed, tc.want, tc.superset)
		}
	}
}

// reopenedFrom downgrades s, the store at path, to version, closes it and
// opens it again, which migrates it: the database as a cspool of that
// version left it, opened by this one. The store returned is closed when
// the test ends.
func reopenedFrom(t *testing.T, s *Store, path string, version int) *Store {
	t.Helper()
	ctx := context.Background()
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error { return downgrade(ctx, tx, version) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// downgrade makes the database's schema version 31 (no
// previous_spool_key and spool_key_cutover in local), 30 (no texts_version in
// bodies), 29 (no forms_version in bodies), 28 (no quota_usage and
// quota_limit in local), 27 (no search_texts),
// 26 (no readers in
// local), 25 (no spool_key_used in local), 24 (FTS5's default
// deletemerge and usermerge), 23 (the rows of deleted
// bodies taken out of the index with them), 22 (no unindexable), 21
// (no relocated_bid in local), 20 (no spool_key in local), 19 (FTS5's default merge
// settings), 18 (the structure's
// form in forms), 13 (no messages_listing
// and no messages_keywords, version 15's, and the undo log of version 15,
// downgradeUndo),
// version 12 (the IMAP forms in bodies, no table forms either), version 10
// (no word index either, no messages_mailbox_body), or version 8 or 7
// (whose version 8 differs only in what the index holds, versions 9 and 10
// by a column each).
func downgrade(ctx context.Context, tx *sql.Tx, version int) error {
	if version < 33 {
		if _, err := tx.ExecContext(ctx, to32); err != nil {
			return err
		}
	}
	if version < 32 {
		for _, q := range to31 {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
	}
	if version == 30 {
		if err := dropBodiesColumn(ctx, tx, "bodies_texts_version", "texts_version"); err != nil {
			return err
		}
	}
	if version < 30 {
		if err := downgrade29(ctx, tx); err != nil {
			return err
		}
	}
	if version < 16 {
		if err := downgradeUndo(ctx, tx); err != nil {
			return err
		}
	}
	var qs []string
	if version < 29 {
		qs = append(qs, to28...)
	}
	if version < 28 {
		qs = append(qs, to27...)
	}
	if version < 27 {
		qs = append(qs, to26)
	}
	if version < 26 {
		qs = append(qs, to25)
	}
	if version < 25 {
		qs = append(qs, to24...)
	}
	if version < 24 {
		qs = append(qs, to23...)
	}
	if version < 17 {
		qs = append(qs, "DROP INDEX messages_keywords", "DROP INDEX messages_listing")
	}
	if version < 23 {
		qs = append(qs, to22...)
	}
	if version < 22 {
		qs = append(qs, to21)
	}
	if version < 21 {
		qs = append(qs, to20)
	}
	if version < 20 {
		qs = append(qs, to19...)
	}
	if version < 19 {
		qs = append(qs, to18...)
	}
	if version < 18 {
		qs = append(qs, to17...)
	}
	if version < 13 {
		qs = append(qs, to12...)
	}
	if version < 12 {
		qs = append(qs, older...)
	}
	if version < 9 {
		qs = append(qs, "ALTER TABLE bodies DROP COLUMN envelope_wire", "ALTER TABLE bodies DROP COLUMN structure_wire")
	}
	for _, q := range append(qs, fmt.Sprintf("PRAGMA user_version = %d", version)) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// to32 is downgrade's step from version 33 to 32.
const to32 = "DROP TABLE earlier_spool_keys"

// to31 are downgrade's steps from version 32 to 31.
var to31 = []string{
	"ALTER TABLE local DROP COLUMN spool_key_cutover",
	"ALTER TABLE local DROP COLUMN previous_spool_key",
}

// downgrade29 is downgrade's steps from version 31 to 29: no
// texts_version and no forms_version in bodies nor their indexes.
func downgrade29(ctx context.Context, tx *sql.Tx) error {
	if err := dropBodiesColumn(ctx, tx, "bodies_texts_version", "texts_version"); err != nil {
		return err
	}
	return dropBodiesColumn(ctx, tx, "bodies_forms_version", "forms_version")
}

// dropBodiesColumn is a step of downgrade: no column in bodies nor its
// index. The undo triggers of bodies and their view name the column:
// they are dropped first and made again after, for the bodies' columns
// left.
func dropBodiesColumn(ctx context.Context, tx *sql.Tx, index, column string) error {
	for _, q := range []string{
		"DROP VIEW IF EXISTS undo_replay",
		"DROP TRIGGER IF EXISTS undo_bodies_ins",
		"DROP TRIGGER IF EXISTS undo_bodies_upd",
		"DROP TRIGGER IF EXISTS undo_bodies_del",
		"DROP INDEX " + index,
		"ALTER TABLE bodies DROP COLUMN " + column,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return makeUndoTriggers(ctx, tx)
}

// to27 are downgrade's steps from version 28 to 27: no search_texts, and
// the bodies' delete trigger of version 24. The bodies listed in
// unindexable stay listed, without their texts, as version 27 had them.
var to27 = []string{
	"DROP TRIGGER bodies_unindex",
	`CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	INSERT OR IGNORE INTO unindex_pending (bid) SELECT OLD.bid
		WHERE NOT EXISTS (SELECT 1 FROM unindexed WHERE bid = OLD.bid)
		AND NOT EXISTS (SELECT 1 FROM unindexable WHERE bid = OLD.bid);
	DELETE FROM unindexed WHERE bid = OLD.bid;
	DELETE FROM unindexable WHERE bid = OLD.bid;
END`,
	"DROP TABLE search_texts",
}

// to24 are downgrade's steps from version 25 to 24: FTS5's default
// deletemerge and usermerge.
var to24 = []string{
	"DELETE FROM fts_config WHERE k IN ('deletemerge', 'usermerge')",
	"DELETE FROM ftsw_config WHERE k IN ('deletemerge', 'usermerge')",
}

// to23 are downgrade's steps from version 24 to 23: the rows of the
// bodies listed in unindex_pending taken out of the index at once, and
// the bodies' triggers of version 23.
var to23 = []string{
	"DELETE FROM fts WHERE rowid IN (SELECT bid FROM unindex_pending)",
	"DELETE FROM ftsw WHERE rowid IN (SELECT bid FROM unindex_pending)",
	"DROP TRIGGER bodies_reuse_id",
	"DROP TABLE unindex_pending",
	"DROP TRIGGER bodies_unindex",
	`CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	DELETE FROM fts WHERE rowid = OLD.bid;
	DELETE FROM ftsw WHERE rowid = OLD.bid;
	DELETE FROM unindexed WHERE bid = OLD.bid;
	DELETE FROM unindexable WHERE bid = OLD.bid;
END`,
}

// to22 are downgrade's steps from version 23 to 22: no unindexable, and
// the bodies' delete trigger of version 11.
var to22 = []string{
	"DROP TRIGGER bodies_unindex",
	`CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	DELETE FROM fts WHERE rowid = OLD.bid;
	DELETE FROM ftsw WHERE rowid = OLD.bid;
	DELETE FROM unindexed WHERE bid = OLD.bid;
END`,
	"DROP TABLE unindexable",
}

// to21 is downgrade's step from version 22 to 21.
const to21 = "ALTER TABLE local DROP COLUMN relocated_bid"

// to28 are downgrade's steps from version 29 to 28: no stated quota.
var to28 = []string{
	"ALTER TABLE local DROP COLUMN quota_limit",
	"ALTER TABLE local DROP COLUMN quota_usage",
}

// to26 is downgrade's step from version 27 to 26: no readers.
const to26 = "ALTER TABLE local DROP COLUMN readers"

// to25 is downgrade's step from version 26 to 25: no spool_key_used.
const to25 = "ALTER TABLE local DROP COLUMN spool_key_used"

// to20 is downgrade's step from version 21 to 20.
const to20 = "ALTER TABLE local DROP COLUMN spool_key"

// to19 are downgrade's steps from version 20 to 19: FTS5's default
// merge settings.
var to19 = []string{
	"DELETE FROM fts_config WHERE k IN ('automerge', 'crisismerge')",
	"DELETE FROM ftsw_config WHERE k IN ('automerge', 'crisismerge')",
}

// to18 are downgrade's steps from version 19 to 18: the structure's form
// back in forms. The undo triggers of forms are made again by the
// migration.
var to18 = []string{
	"ALTER TABLE forms ADD COLUMN structure BLOB",
	"UPDATE forms SET structure = (SELECT structure FROM structures s WHERE s.bid = forms.bid)",
	"DROP TABLE structures",
}

// to17 are downgrade's steps from version 18 to 17.
var to17 = []string{"DROP TRIGGER bodies_counted", "DROP TRIGGER bodies_uncounted", "DROP TABLE body_count"}

// to12 are downgrade's steps from version 13 to 12. The undo triggers
// naming the columns are made again by the migration.
var to12 = []string{
	"DROP TRIGGER undo_bodies_ins", "DROP TRIGGER undo_bodies_upd", "DROP TRIGGER undo_bodies_del",
	"DROP TRIGGER undo_forms_ins", "DROP TRIGGER undo_forms_upd", "DROP TRIGGER undo_forms_del",
	"ALTER TABLE bodies ADD COLUMN envelope_wire BLOB",
	"ALTER TABLE bodies ADD COLUMN structure_wire BLOB",
	`UPDATE bodies SET envelope_wire = (SELECT envelope FROM forms f WHERE f.bid = bodies.bid),
			structure_wire = (SELECT structure FROM forms f WHERE f.bid = bodies.bid)`,
	"DROP TABLE forms",
}

// older are downgrade's steps from version 12 to 10.
var older = []string{
	"DROP INDEX messages_mailbox_body",
	"DROP TRIGGER words_grams",
	"DROP TABLE wordgrams",
	"DROP TABLE words",
	"DROP TABLE ftsw",
	"DROP TRIGGER bodies_unindex",
	`CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
		BEGIN
			DELETE FROM fts WHERE rowid = OLD.bid;
			DELETE FROM unindexed WHERE bid = OLD.bid;
		END`,
}

// TestSchema11Reindexes: a database of schema version 10, its trigram
// index complete, has every body indexed again, in both indexes, after the
// migration to version 11.
func TestSchema11Reindexes(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("Subject: a\r\n\r\nquarterly one\r\n")), l.spool(deliverCmd("Subject: b\r\n\r\nquarterly two\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	s = reopenedFrom(t, s, path, 10)
	st, err := s.IndexSize(ctx)
	if err != nil || st.Bodies != 2 || st.Unindexed != 2 {
		t.Fatalf("after the migration: %+v, %v; want both bodies unindexed", st, err)
	}
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	for needle, want := range map[string]int{"two": 1, "quarterly": 2, "uarterl": 2, "rly tw": 1, "zzz": 0} {
		a, err := s.TextSearch(ctx, InboxID(), SearchBody, needle)
		if err != nil || len(a.Match) != want || len(a.Unindexed) != 0 {
			t.Fatalf("TextSearch %q after reindexing: %+v, %v; want %d", needle, a, err, want)
		}
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM ftsw WHERE ftsw MATCH 'quarterly'").Scan(&n); err != nil || n != 2 {
		t.Fatalf("ftsw: %d bodies with quarterly, %v", n, err)
	}
}

// TestSchema8Reindexes: a database of schema version 7 (whose index lacks
// the unfolded field values) has every body indexed again after the
// migration to version 8.
func TestSchema8Reindexes(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("Subject: a\r\n\r\none\r\n")), l.spool(deliverCmd("Subject: b\r\n\r\ntwo\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		return downgrade(ctx, tx, 7)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, err := s.IndexSize(ctx)
	if err != nil || st.Bodies != 2 || st.Unindexed != 2 {
		t.Fatalf("after the migration: %+v, %v; want both bodies unindexed", st, err)
	}
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	if a, err := s.TextSearch(ctx, InboxID(), SearchBody, "two"); err != nil || !a.Match[2] || len(a.Match) != 1 {
		t.Fatalf("TextSearch after reindexing: %+v, %v", a, err)
	}
}

// TestTextSearchManyBodies: a needle in most of a mailbox's bodies is
// answered by merging the mailbox's messages in body order with the
// index's bodies, a rare one by a join from each body; both give the UIDs
// of the mailbox's own messages only, copies sharing a body included.
func TestTextSearchManyBodies(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	var es []Entry
	for i := 1; i <= 8; i++ {
		text := fmt.Sprintf("quarterly report %d", i)
		if i > 6 {
			text = fmt.Sprintf("other words %d", i)
		}
		if i == 7 {
			text += " xylophone"
		}
		es = append(es, l.spool(deliverCmd("Subject: m\r\n\r\n"+text+"\r\n")))
	}
	mustApply(t, s, es...)
	copyCmd := &command.Command{Kind: command.Copy, Mailbox: "Archive", IDs: []command.ID{entryID(1), entryID(2), entryID(7)}}
	expunge := &command.Command{Kind: command.Expunge, IDs: []command.ID{entryID(2)}}
	mustApply(t, s, l.user(copyCmd), l.user(expunge))
	if _, left, err := s.IndexPending(ctx, 100); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	archive := mailboxID(t, s, "Archive")
	for _, tc := range []struct {
		mailbox command.ID
		key     SearchKey
		needle  string
		want    []UID
	}{
		{InboxID(), SearchBody, "quarterly", []UID{1, 3, 4, 5, 6}}, // many: merged
		{InboxID(), SearchText, "uarterl", []UID{1, 3, 4, 5, 6}},   // the trigram index, merged
		{InboxID(), SearchBody, "xylophone", []UID{7}},             // few: joined
		{InboxID(), SearchBody, "nothing", nil},
		{archive, SearchBody, "quarterly", []UID{1, 2}},
		{archive, SearchBody, "xylophone", []UID{3}},
		{archive, SearchBody, "words", []UID{3}},
		{command.ID{9}, SearchBody, "quarterly", nil}, // no such mailbox
	} {
		a, err := s.TextSearch(ctx, tc.mailbox, tc.key, tc.needle)
		if err != nil {
			t.Fatalf("TextSearch %q: %v", tc.needle, err)
		}
		var got []UID
		for u := range a.Match {
			got = append(got, u)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) || len(a.Unindexed) != 0 {
			t.Errorf("TextSearch %x %q: %v (unindexed %v), want %v", tc.mailbox[:2], tc.needle, got, a.Unindexed, tc.want)
		}
	}
}

// TestSchema12MailboxBodyIndex: a database of schema version 11 gains the
// index of messages in body order, and searches through it.
func TestSchema12MailboxBodyIndex(t *testing.T) {
	t.Parallel()
	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("Subject: a\r\n\r\nquarterly one\r\n")), l.spool(deliverCmd("Subject: b\r\n\r\nquarterly two\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		if err := downgrade(ctx, tx, 12); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "DROP INDEX messages_mailbox_body; PRAGMA user_version = 11")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'messages_mailbox_body'").Scan(&n); err != nil || n != 1 {
		t.Fatalf("messages_mailbox_body after the migration: %d, %v", n, err)
	}
	a, err := s.TextSearch(ctx, InboxID(), SearchBody, "quarterly")
	if err != nil || len(a.Match) != 2 || !a.Match[1] || !a.Match[2] {
		t.Fatalf("TextSearch after the migration: %+v, %v", a, err)
	}
}

// TestIndexPendingWithin: a batch stops taking bodies once its budget has
// passed (here at once, so one body a transaction), says whether bodies
// are left without counting them, and the index it builds answers as
// IndexPending's does.
func TestIndexPendingWithin(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var l testLog
	mustApply(t, s,
		l.spool(deliverCmd("From: a@example.org\r\nSubject: one\r\n\r\nthe quarterly report\r\n")),
		l.spool(deliverCmd("From: b@example.org\r\nMessage-ID: <uniq-7@example.org>\r\nSubject: two\r\n\r\nan invoice\r\n")),
		l.spool(deliverCmd("From: c@example.org\r\nSubject: three\r\n\r\nanother quarterly\r\n")))
	for i := 1; i <= 3; i++ {
		done, more, err := s.IndexPendingWithin(ctx, 100, time.Nanosecond)
		if err != nil || done != 1 || more != (i < 3) {
			t.Fatalf("batch %d: %d done, more %v, %v; want 1, %v", i, done, more, err, i < 3)
		}
	}
	if done, more, err := s.IndexPendingWithin(ctx, 100, time.Second); err != nil || done != 0 || more {
		t.Fatalf("nothing left: %d done, more %v, %v", done, more, err)
	}
	for _, tc := range []struct {
		key    SearchKey
		needle string
		want   []UID
	}{
		{SearchBody, "quarterly", []UID{1, 3}},
		{SearchBody, "uarterl", []UID{1, 3}},
		{SearchHeader, "uniq-7@", []UID{2}},
		{SearchFrom, "c@example", []UID{3}},
	} {
		a, err := s.TextSearch(ctx, InboxID(), tc.key, tc.needle)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(maps.Keys(a.Match)); !slices.Equal(got, tc.want) || len(a.Unindexed) != 0 {
			t.Errorf("%q: match %v unindexed %v; want %v", tc.needle, got, a.Unindexed, tc.want)
		}
	}
}

// TestColumnDedupeBounded: a column leaves out a text another of its
// texts holds while looking costs little, and stops looking past its
// budget, so that a header of many fields costs the indexer time in
// proportion to its length, not to the length times the fields (20,000
// fields here: 10 GB compared without the budget). Every text is still
// found in the column.
func TestColumnDedupeBounded(t *testing.T) {
	t.Parallel()
	build := func(n int) (string, []string) {
		var raw strings.Builder
		var texts []string
		for i := range n {
			v := fmt.Sprintf("Value-%d of field %d", i, i)
			fmt.Fprintf(&raw, "X-Field-%d: %s\r\n", i, v)
			texts = append(texts, v)
		}
		return raw.String(), texts
	}
	for _, tc := range []struct {
		fields  int
		deduped bool // every field's text left out: the raw header holds it
	}{
		{fields: 30, deduped: true},
		{fields: 20000},
	} {
		raw, texts := build(tc.fields)
		var c column
		c.add(raw)
		for _, v := range texts {
			c.add(v)
		}
		if limit := dedupeBudget + len(raw); c.compared > limit {
			t.Errorf("%d fields: the look-ups read %d bytes, want at most %d", tc.fields, c.compared, limit)
		}
		if tc.deduped && len(c.texts) != 1 {
			t.Errorf("%d fields: %d texts kept, want only the raw header", tc.fields, len(c.texts))
		}
		joined := c.String()
		for _, v := range texts {
			if !strings.Contains(joined, strings.ToLower(v)) {
				t.Fatalf("%d fields: %q is not in the column", tc.fields, v)
			}
		}
	}
}

// TestTooLongForIndex: a body with more text than the index takes for
// one body is listed as unindexable instead of indexed (its trigrams
// would hold the writer about 1 ms a KB), its texts kept, and a search
// answers for it from them: exactly, and without leaving it to the scan
// (which read and decoded the message again at every SEARCH).
func TestTooLongForIndex(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	ctx := context.Background()
	var big strings.Builder
	big.WriteString("From: b@example.org\r\nSubject: long\r\n\r\n")
	for i := 0; big.Len() <= maxIndexedText+4096; i++ {
		fmt.Fprintf(&big, "line %d of a long text uniqword\r\n", i)
	}
	big.WriteString("the needle-at-the-end\r\n")
	var l testLog
	mustApply(t, s,
		l.spool(deliverCmd("From: a@example.org\r\nSubject: one\r\n\r\nshort uniqword\r\n")),
		l.spool(deliverCmd(big.String())),
		l.spool(deliverCmd("From: c@example.org\r\nSubject: three\r\n\r\nshort too\r\n")))
	if _, left, err := s.IndexPending(ctx, 10); err != nil || left != 0 {
		t.Fatalf("IndexPending: %d left, %v", left, err)
	}
	var listed, indexed int
	if err := s.rdb.QueryRowContext(ctx, "SELECT (SELECT count(*) FROM unindexable), (SELECT count(*) FROM ftsw_docsize)").Scan(&listed, &indexed); err != nil {
		t.Fatal(err)
	}
	if listed != 1 || indexed != 2 {
		t.Errorf("%d bodies listed as unindexable, %d indexed; want 1 and 2", listed, indexed)
	}
	for _, tc := range []struct {
		needle string
		match  []UID
	}{
		{"uniqword", []UID{1, 2}},
		{"needle-at-the-end", []UID{2}},
		{"NEEDLE-at", []UID{2}},
		{"not-in-any", nil},
	} {
		a, err := s.TextSearch(ctx, InboxID(), SearchBody, tc.needle)
		if err != nil {
			t.Fatal(err)
		}
		got := slices.Sorted(maps.Keys(a.Match))
		if !slices.Equal(got, tc.match) || len(a.Unindexed) != 0 {
			t.Errorf("%q: match %v, not indexed %v; want %v and none: the long body's texts answer", tc.needle, got, a.Unindexed, tc.match)
		}
	}
	var pieces int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM search_texts").Scan(&pieces); err != nil || pieces == 0 {
		t.Errorf("%d pieces of texts kept (%v), want some", pieces, err)
	}
	if err := s.Reindex(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM unindexable").Scan(&listed); err != nil || listed != 0 {
		t.Errorf("after Reindex %d bodies listed as unindexable (%v), want 0: each is looked at again", listed, err)
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM search_texts").Scan(&pieces); err != nil || pieces != 0 {
		t.Errorf("after Reindex %d pieces of texts kept (%v), want 0", pieces, err)
	}
}

// TestFoldFinalSigma: final sigma is folded as sigma, by the scan's test
// and in the index (a body's texts and the needle alike), so a Greek word
// written in small letters, which ends in ς, finds it in capitals, and
// the other way round, as i;unicode-casemap (RFC 5051) has them.
func TestFoldFinalSigma(t *testing.T) {
	t.Parallel()
	for _, c := range [][2]string{{"ΣΟΦΟΣ ΑΝΘΡΩΠΟΣ", "σοφος"}, {"ο σοφος", "ΣΟΦΟΣ"}, {"σοφοσ", "σοφος"}, {"σοφος", "σοφοσ"}} {
		if !ContainsFold(c[0], c[1]) {
			t.Errorf("ContainsFold(%q, %q) is false", c[0], c[1])
		}
	}
	s := openTest(t)
	var l testLog
	mustApply(t, s, l.spool(deliverCmd("Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nΟ ΣΟΦΟΣ ΑΝΘΡΩΠΟΣ\r\n")),
		l.spool(deliverCmd("Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nο σοφος\r\n")))
	indexAll(t, s)
	wantIndexed(t, s, "in small letters", "σοφος", 1, 2)
	wantIndexed(t, s, "in capitals", "ΣΟΦΟΣ", 1, 2)
	wantIndexed(t, s, "ending in σ", "ανθρωποσ", 1)
}

// TestFoldDecomposes: SEARCH compares texts decomposed (NFKD), as
// i;unicode-casemap (RFC 5051) has them, by the scan's test, in the index
// and in the texts kept of a body too long for it: é written as one code
// point finds it written as e and U+0301 and the other way round, the
// ligature ﬁ is f and i, fullwidth letters are letters, and letters of
// one upper case (ſ and s, ı and i) are one letter.
func TestFoldDecomposes(t *testing.T) {
	t.Parallel()
	for _, c := range [][2]string{
		{"Le café", "cafe\u0301"}, {"Le cafe\u0301", "CAFÉ"}, {"the ﬁnal report", "final"}, {"the final report", "ＦＩＮＡＬ"},
		{"ＦＵＬＬ ｗｉｄｔｈ", "full width"}, {"Glaſs", "glass"}, {"DIŞ", "dış"}, {"KELVIN", "\u212aelvin"}, {"café", "cafe"},
	} {
		if !ContainsFold(c[0], c[1]) {
			t.Errorf("ContainsFold(%q, %q) is false", c[0], c[1])
		}
	}
	for _, c := range [][2]string{{"cafe au lait", "café"}, {"café au lait", "cafe au"}, {"Straße", "strasse"}} {
		if ContainsFold(c[0], c[1]) {
			t.Errorf("ContainsFold(%q, %q) is true", c[0], c[1])
		}
	}
	for _, limit := range []int{maxIndexedText, 0} {
		s := openTest(t)
		s.textLimits = textLimits{index: limit, piece: 3}
		var l testLog
		mustApply(t, s, l.spool(deliverCmd("Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nUn café, the ﬁnal ＲＥＰＯＲＴ\r\n")),
			l.spool(deliverCmd("Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nUn cafe\u0301 au lait, final report\r\n")),
			l.spool(deliverCmd("Subject: u\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nUn cafe noir\r\n")))
		indexAll(t, s)
		var listed int
		if err := s.rdb.QueryRow("SELECT count(*) FROM unindexable").Scan(&listed); err != nil || (listed == 3) != (limit == 0) {
			t.Fatalf("limit %d: %d bodies unindexable (%v)", limit, listed, err)
		}
		what := fmt.Sprintf("limit %d", limit)
		wantIndexed(t, s, what+", composed", "un café", 1, 2)
		wantIndexed(t, s, what+", decomposed", "un cafe\u0301", 1, 2)
		wantIndexed(t, s, what+", a prefix of é", "un cafe", 1, 2, 3)
		wantIndexed(t, s, what+", ligature", "ﬁnal report", 1, 2)
		wantIndexed(t, s, what+", fullwidth", "ｆｉｎａｌ ｒｅｐｏｒｔ", 1, 2)
		wantIndexed(t, s, what+", é before a", "cafe\u0301 au", 2)
	}
}

// TestFoldVersionGolden: what foldCase makes of every code point is the
// one recorded for foldVersion, so that a change of the fold (or of the
// Unicode tables it reads, with a new Go or golang.org/x/text) raises
// foldVersion, and the daemon indexes the bodies indexed before again
// (textsupgrade.go): a body indexed under another fold is not found by
// what the needle folds to now.
func TestFoldVersionGolden(t *testing.T) {
	t.Parallel()
	golden := map[int]string{
		1: "3d1185eb24911382333d24e8fc3d0964e80bf2c7b1482c2fbb97453b32559da0",
		2: "665828113c1e97bffcf7d9d5b14053cdd8c2a17ddf2db3073d8ef36d2ff5b4fb",
	}
	h := sha256.New()
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if utf8.ValidRune(r) {
			h.Write([]byte(foldCase(string(r)) + "\n"))
		}
	}
	got := hex.EncodeToString(h.Sum(nil))
	if golden[foldVersion] != got {
		t.Errorf("foldCase of every code point hashes to %s, where foldVersion %d recorded %s: raise foldVersion and record the hash", got, foldVersion, golden[foldVersion])
	}
	for v, g := range golden {
		if v != foldVersion && g == got {
			t.Errorf("foldCase is version %d's, and foldVersion is %d", v, foldVersion)
		}
	}
}

// TestContainsFoldChunks: ContainsFold of a text longer than it folds at
// once (foldChunk) folds it a chunk at a time, and answers as the text
// folded whole, for chunks of 1 to 40 bytes: needles across a chunk's
// end, combining marks that decomposition reorders across it, a ligature
// that decomposes to 18 code points, bytes that are not UTF-8.
func TestContainsFoldChunks(t *testing.T) {
	t.Parallel()
	hay := "Le CAFE\u0301 ᾳ\u0301 e\u0323\u0301 ﬁnal ＲＥＰＯＲＴ \xff\xc3 ﷺ o" + strings.Repeat("\u0301\u0323", 20) + " ΣΟΦΟΣ end"
	folded := foldCase(hay)
	needles := []string{"café", "cafe\u0301 ", "ά", "ᾳ", "e\u0301\u0323", "final report", "\ufffd\ufffd", "صلى الله", "σοφοσ end", "\u034f", "o\u0301", "zzz", "le cafe", "αι"}
	for _, c := range []int{1, 2, 3, 5, 7, 16, 40} {
		for _, n := range needles {
			want := strings.Contains(folded, foldCase(n))
			if got := containsFold(hay, n, c); got != want {
				t.Errorf("chunks of %d: %q in the text: %v, folded whole %v", c, n, got, want)
			}
		}
		// ASCII, folded whole, as long as it is.
		if !containsFold("The Final REPORT", "final report", c) || containsFold("The Final REPORT", "final reports", c) {
			t.Errorf("chunks of %d: an ASCII text answers otherwise", c)
		}
	}
}

// TestContainsFoldASCIIWindows checks ContainsFold over ASCII texts, which
// it lower-cases a window at a time (containsLower), against the
// definition (the text folded whole), with needles across each window's
// end, at its start and end, longer than the part of a window kept, and
// not ASCII.
func TestContainsFoldASCIIWindows(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(9, 9))
	letters := "abcXYZ Q.-"
	for i := range 300 {
		b := make([]byte, r.IntN(3*lowerWindow))
		for j := range b {
			b[j] = letters[r.IntN(len(letters))]
		}
		hay := string(b)
		var needles []string
		for range 12 {
			if len(hay) == 0 {
				break
			}
			// Cut around a window's end, or anywhere.
			at := r.IntN(len(hay))
			if k := len(hay) / lowerWindow; k > 0 && r.IntN(2) == 0 {
				at = max(0, min(len(hay)-1, lowerWindow*(1+r.IntN(k))-r.IntN(8)))
			}
			n := hay[at:min(len(hay), at+1+r.IntN(lowerWindow/4+40))]
			needles = append(needles, strings.ToUpper(n), n+"zz", "\u212a"+n) // the Kelvin sign: k folded
		}
		needles = append(needles, "", "é", "xyz", strings.Repeat("a", lowerWindow/4+1))
		folded := foldCase(hay)
		for _, n := range needles {
			if got, want := ContainsFold(hay, n), strings.Contains(folded, foldCase(n)); got != want {
				t.Fatalf("text %d (%d bytes), needle of %d bytes at %d: %v, folded whole %v", i, len(hay), len(n), strings.Index(folded, foldCase(n)), got, want)
			}
		}
	}
}

// TestContainsFoldASCIIEdges checks ContainsFold on ASCII texts against the
// text folded whole where containsLower's windows could go wrong: texts
// of every ASCII byte (controls and NUL among them), texts of exactly one
// window and around it, needles of one byte, of exactly lowerWindow/4
// bytes and one more, and needles longer than the text.
func TestContainsFoldASCIIEdges(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 5))
	check := func(hay, n string) {
		t.Helper()
		if got, want := ContainsFold(hay, n), strings.Contains(foldCase(hay), foldCase(n)); got != want {
			t.Fatalf("text of %d bytes, needle of %d: %v, folded whole %v", len(hay), len(n), got, want)
		}
	}
	for range 400 {
		b := make([]byte, r.IntN(3*lowerWindow))
		for j := range b {
			b[j] = byte(r.IntN(128))
		}
		hay := string(b)
		for range 4 {
			n := ""
			if len(hay) > 0 {
				at := r.IntN(len(hay))
				n = hay[at:min(len(hay), at+1+r.IntN(lowerWindow/4+8))]
			}
			check(hay, n)
			check(hay, strings.ToUpper(n))
			check(hay, n+"\x00")
		}
	}
	for _, size := range []int{1, lowerWindow - 1, lowerWindow, lowerWindow + 1, 2 * lowerWindow} {
		hay := strings.Repeat("a", size-1) + "B"
		for _, nl := range []int{1, 2, lowerWindow/4 - 1, lowerWindow / 4, lowerWindow/4 + 1, size, size + 1} {
			check(hay, strings.Repeat("A", nl-1)+"b")
			check(hay, strings.Repeat("A", nl))
		}
	}
}
