package mailstore

import (
	"context"
	"database/sql"
	"fmt"
)

// Search texts made by an earlier version of the parser
// (docs/MAILSTORE.md, "Search texts made by an earlier cspool"). Every
// body row keeps the version of the texts the search index holds of it
// (bodies.texts_version, schema version 31; 0 for a body indexed
// before): the indexer stamps it with the parser's TextsVersion, plus
// the version of the store's fold of the texts (textsVersion), as it
// indexes the body. UpgradeTexts lists the bodies an earlier version
// indexed for the indexer again, a batch at a time, and the indexer
// makes their texts as it makes those of mail just applied.
//
// Invariants:
//
//   - The index holds a row for every stored body not listed in
//     unindexed or unindexable (and for the deleted bodies listed in
//     unindex_pending), none other: a batch's rows leave both indexes,
//     or its kept texts leave search_texts, in the transaction that lists
//     its bodies in unindexed, so the indexer never inserts a second row
//     for a body. A body listed is searched by the scan, with the
//     parser's texts of now, until the indexer takes it: answers stay
//     exact throughout.
//   - Only the search index changes: no body, message, UID, flag,
//     keyword or modseq does (what SEARCH tests is a function of the
//     message's bytes, RFC 9051 section 2.3; RFC 7162 section 3.1.1
//     gives a modseq to metadata only), so nothing of the replicated
//     state (Dump) changes.
//   - Resumable: what is done is what the rows say. A batch is listed in
//     one short write transaction; a stop or a crash after it leaves its
//     bodies in unindexed, which the indexer takes at the next start, as
//     it takes any body listed there.
//   - A body listed in unindexed is never in a batch: the indexer makes
//     its texts with the parser of now anyway.
//   - An undo that puts back a body row puts back its version too (the
//     undo triggers take every column of bodies): a row put back whole
//     is listed in unindexed by the insert trigger, and one whose
//     earlier values an update record restores may be stamped with a
//     version below that of the texts the index holds, which only has it
//     indexed once more.

// TextsVersion is the version of the search texts the store stamps the
// bodies it indexes with (TextsVersioned; 0 for a parser without it).
func (s *Store) TextsVersion() int { return textsVersion(s.parser) }

// textsOld selects the bodies the index holds texts of an earlier
// version ?1 than the parser's of: those UpgradeTexts lists again.
const textsOld = `SELECT bid FROM bodies b WHERE texts_version < ?1
	AND NOT EXISTS (SELECT 1 FROM unindexed u WHERE u.bid = b.bid)`

// TextsPending counts the bodies whose search texts an earlier version
// of the parser made: those UpgradeTexts would list for the indexer.
func (s *Store) TextsPending(ctx context.Context) (int, error) {
	v := textsVersion(s.parser)
	if v == 0 {
		return 0, nil
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM ("+textsOld+")", v).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting the bodies of earlier search texts: %w", err)
	}
	return n, nil
}

// UpgradeTexts lists up to limit bodies whose search texts an earlier
// version of the parser made (lowest version, then lowest id, first) in
// unindexed, their rows taken out of both indexes and their kept texts
// out of search_texts, in one write transaction, for IndexPending to
// index them again. It returns how many it listed and whether bodies of
// an earlier version are left besides them.
func (s *Store) UpgradeTexts(ctx context.Context, limit int) (done int, more bool, err error) {
	v := textsVersion(s.parser)
	if v == 0 || limit <= 0 {
		return 0, false, nil
	}
	err = s.indexTx(ctx, "listing bodies of earlier search texts for the index", func(tx *sql.Tx) error {
		var batch sql.NullString
		if err := tx.QueryRowContext(ctx, "SELECT json_group_array(bid), count(*) FROM ("+textsOld+" ORDER BY texts_version, bid LIMIT ?2)",
			v, limit).Scan(&batch, &done); err != nil {
			return fmt.Errorf("listing bodies of earlier search texts: %w", err)
		}
		if done > 0 {
			for _, q := range []string{
				// The rows of the bodies the index holds (those listed in
				// unindexable it does not): tombstones only, as
				// purgeIndex writes them (deletemerge 0, schema version
				// 25); ReclaimIndex drops them later.
				"DELETE FROM fts WHERE rowid IN (SELECT value FROM json_each(?1) WHERE value NOT IN (SELECT bid FROM unindexable))",
				"DELETE FROM ftsw WHERE rowid IN (SELECT value FROM json_each(?1) WHERE value NOT IN (SELECT bid FROM unindexable))",
				"DELETE FROM search_texts WHERE bid IN (SELECT value FROM json_each(?1))",
				"DELETE FROM unindexable WHERE bid IN (SELECT value FROM json_each(?1))",
				"INSERT INTO unindexed (bid) SELECT value FROM json_each(?1)",
			} {
				if _, err := tx.ExecContext(ctx, q, batch.String); err != nil {
					return fmt.Errorf("listing bodies of earlier search texts: %w", err)
				}
			}
		}
		return tx.QueryRowContext(ctx, "SELECT EXISTS ("+textsOld+")", v).Scan(&more)
	})
	if err != nil {
		return 0, false, err
	}
	return done, more, nil
}
