package mailstore

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
)

// ApplicationID marks the file as a cspool mail store ("cSm1") in the SQLite
// header, so Open refuses another program's database, and a plaintext one
// is encrypted in place only when it is a mail store (devicedb.Foreign).
const ApplicationID = 0x63536d31

const applicationID = ApplicationID

// migrations[i] brings the schema from version i to version i+1 (PRAGMA
// user_version). Append only: never edit a released step.
var migrations = [...]string{
	// 1: the state row, mailboxes, subscriptions, keyword spellings, shared
	// bodies (metadata apart from the bytes, so scans stay small), messages,
	// the ids of entries already seen and the rejections. The initial
	// mailboxes are part of the schema: every device starts with them.
	`
CREATE TABLE state (
	k                INTEGER PRIMARY KEY CHECK (k = 1),
	position         INTEGER NOT NULL CHECK (position >= 0),
	next_uidvalidity INTEGER NOT NULL CHECK (next_uidvalidity > 0)
);
CREATE TRIGGER state_never_goes_back
BEFORE UPDATE ON state
WHEN NEW.position < OLD.position OR NEW.next_uidvalidity < OLD.next_uidvalidity
BEGIN
	SELECT RAISE(ABORT, 'mailstore: position and uidvalidity counter never decrease');
END;
CREATE TABLE mailboxes (
	mid            INTEGER PRIMARY KEY,
	id             BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
	name           TEXT    NOT NULL UNIQUE,
	special_use    TEXT    NOT NULL DEFAULT '',
	uidvalidity    INTEGER NOT NULL UNIQUE CHECK (uidvalidity > 0 AND uidvalidity < 4294967296),
	uidnext        INTEGER NOT NULL CHECK (uidnext > 0 AND uidnext < 4294967296),
	highest_modseq INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER mailboxes_uidnext_never_decreases
BEFORE UPDATE OF uidnext ON mailboxes WHEN NEW.uidnext < OLD.uidnext
BEGIN
	SELECT RAISE(ABORT, 'mailstore: uidnext never decreases');
END;
CREATE TABLE subscriptions (
	name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE keywords (
	fold TEXT PRIMARY KEY,
	name TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE bodies (
	bid        INTEGER PRIMARY KEY,
	digest     BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
	refs       INTEGER NOT NULL CHECK (refs > 0),
	size       INTEGER NOT NULL,
	header_len INTEGER NOT NULL,
	parsed     INTEGER NOT NULL,
	envelope   BLOB    NOT NULL,
	structure  BLOB    NOT NULL
);
CREATE TABLE blobs (
	bid  INTEGER PRIMARY KEY REFERENCES bodies (bid) ON DELETE CASCADE,
	data BLOB NOT NULL
);
CREATE TABLE messages (
	rid      INTEGER PRIMARY KEY,
	id       BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
	mailbox  INTEGER NOT NULL REFERENCES mailboxes (mid),
	uid      INTEGER NOT NULL CHECK (uid > 0),
	body     INTEGER NOT NULL REFERENCES bodies (bid),
	date     INTEGER NOT NULL,
	size     INTEGER NOT NULL,
	flags    INTEGER NOT NULL DEFAULT 0,
	keywords TEXT    NOT NULL DEFAULT '',
	modseq   INTEGER NOT NULL,
	UNIQUE (mailbox, uid)
);
CREATE INDEX messages_body ON messages (body);
CREATE TABLE entries (
	id  BLOB    PRIMARY KEY,
	pos INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE rejected (
	pos    INTEGER PRIMARY KEY,
	entry  BLOB,
	reason TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT '',
	at     INTEGER NOT NULL
);
INSERT INTO state (k, position, next_uidvalidity) VALUES (1, 0, 7);
INSERT INTO mailboxes (id, name, special_use, uidvalidity, uidnext) VALUES
	(x'00000000000000000000000000000001', 'INBOX',   '',          1, 1),
	(x'00000000000000000000000000000002', 'Sent',    '\Sent',     2, 1),
	(x'00000000000000000000000000000003', 'Drafts',  '\Drafts',   3, 1),
	(x'00000000000000000000000000000004', 'Trash',   '\Trash',    4, 1),
	(x'00000000000000000000000000000005', 'Junk',    '\Junk',     5, 1),
	(x'00000000000000000000000000000006', 'Archive', '\Archive',  6, 1);
INSERT INTO subscriptions (name) VALUES ('INBOX'), ('Sent'), ('Drafts'), ('Trash'), ('Junk'), ('Archive');
`,
	// 2: the log position of the entry that holds each body (a Deliver or
	// Append whose message has these bytes), so a checkpoint can name the
	// entries compaction must keep. 0 for bodies stored before this step.
	`
ALTER TABLE bodies ADD COLUMN origin INTEGER NOT NULL DEFAULT 0;
`,
	// 3: tamper evidence: the log's chain hash at every applied position
	// (to check the heads other devices saw), and integrity alarms, which
	// stay until a person clears them.
	`
CREATE TABLE chain (
	pos  INTEGER PRIMARY KEY,
	hash BLOB NOT NULL CHECK (length(hash) = 32)
);
CREATE TABLE alarms (
	id     INTEGER PRIMARY KEY,
	at     INTEGER NOT NULL,
	pos    INTEGER NOT NULL,
	detail TEXT    NOT NULL
);
`,
	// 4: the entries this device appended, at the positions the spool's
	// answers gave them, until an apply or a restore reaches them and finds
	// them there (history.go): a dropped append is noticed, also after a
	// restart.
	`
CREATE TABLE appended (
	id  BLOB    PRIMARY KEY CHECK (length(id) = 16),
	pos INTEGER NOT NULL CHECK (pos > 0)
) WITHOUT ROWID;
`,
	// 5: restorations (restoration.go): entries of a history a restore
	// replaced stay known, marked old, so they are never applied again and
	// a device that applied them can tell a restoration covers it; the
	// position goes back only when a restoration is adopted, which counts.
	`
ALTER TABLE entries ADD COLUMN old INTEGER NOT NULL DEFAULT 0 CHECK (old IN (0, 1));
ALTER TABLE state ADD COLUMN restorations INTEGER NOT NULL DEFAULT 0;
DROP TRIGGER state_never_goes_back;
CREATE TRIGGER state_never_goes_back
BEFORE UPDATE ON state
WHEN (NEW.position < OLD.position AND NEW.restorations <= OLD.restorations) OR NEW.next_uidvalidity < OLD.next_uidvalidity
BEGIN
	SELECT RAISE(ABORT, 'mailstore: position and uidvalidity counter never decrease (the position only with a restoration)');
END;
`,
	// 6: changes made on this device wait in a queue until the spool has
	// them, applied provisionally meanwhile (queue.go): the queue, the undo
	// log the provisional applies write (its triggers come from
	// makeUndoTriggers, made again whenever the schema version moves), and
	// the UIDVALIDITYs this device gives mailboxes whose provisional UIDs
	// the log did not keep. The never-decrease triggers let an undo
	// through.
	`
CREATE TABLE queue (
	seq     INTEGER PRIMARY KEY,
	id      BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
	cmd     BLOB    NOT NULL,
	vpos    INTEGER,
	outcome BLOB
);
CREATE TABLE undo (
	seq  INTEGER PRIMARY KEY,
	qseq INTEGER NOT NULL,
	stmt TEXT    NOT NULL,
	mb1  BLOB, uid1 INTEGER,
	mb2  BLOB, uid2 INTEGER,
	mbox BLOB
);
CREATE INDEX undo_qseq ON undo (qseq);
CREATE TABLE capture (
	k       INTEGER PRIMARY KEY CHECK (k = 1),
	qseq    INTEGER,
	undoing INTEGER NOT NULL DEFAULT 0
);
INSERT INTO capture (k) VALUES (1);
CREATE TABLE uidvalidity_override (
	mailbox     BLOB    PRIMARY KEY CHECK (length(mailbox) = 16),
	uidvalidity INTEGER NOT NULL UNIQUE CHECK (uidvalidity >= 2147483648 AND uidvalidity < 4294967296)
) WITHOUT ROWID;
CREATE TABLE local (
	k                INTEGER PRIMARY KEY CHECK (k = 1),
	next_uidvalidity INTEGER NOT NULL CHECK (next_uidvalidity >= 2147483648)
);
INSERT INTO local (k, next_uidvalidity) VALUES (1, 2147483648);
DROP TRIGGER state_never_goes_back;
CREATE TRIGGER state_never_goes_back
BEFORE UPDATE ON state
WHEN ((NEW.position < OLD.position AND NEW.restorations <= OLD.restorations) OR NEW.next_uidvalidity < OLD.next_uidvalidity)
	AND NOT (SELECT undoing FROM capture)
BEGIN
	SELECT RAISE(ABORT, 'mailstore: position and uidvalidity counter never decrease (the position only with a restoration)');
END;
DROP TRIGGER mailboxes_uidnext_never_decreases;
CREATE TRIGGER mailboxes_uidnext_never_decreases
BEFORE UPDATE OF uidnext ON mailboxes WHEN NEW.uidnext < OLD.uidnext AND NOT (SELECT undoing FROM capture)
BEGIN
	SELECT RAISE(ABORT, 'mailstore: uidnext never decreases');
END;
`,
	// 7: the search index (search.go): an FTS5 table with the trigram
	// tokenizer, one row per body (rowid = bid), contentless; the bodies
	// not indexed (yet) are listed in unindexed, every existing one at
	// first, and each new one as it is inserted; the daemon indexes them
	// in the background, and searches scan them meanwhile.
	`
CREATE VIRTUAL TABLE fts USING fts5 (body, hdr, hfrom, hto, hcc, hbcc, hsubject,
	content = '', contentless_delete = 1, tokenize = 'trigram case_sensitive 1');
CREATE TABLE unindexed (
	bid INTEGER PRIMARY KEY
);
INSERT INTO unindexed (bid) SELECT bid FROM bodies;
CREATE TRIGGER bodies_unindexed AFTER INSERT ON bodies
BEGIN
	INSERT INTO unindexed (bid) VALUES (NEW.bid);
END;
CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	DELETE FROM fts WHERE rowid = OLD.bid;
	DELETE FROM unindexed WHERE bid = OLD.bid;
END;
`,
	// 8: the index's hdr column holds every header field's unfolded value
	// too (TEXT tests it, and HEADER of a field without a column of its
	// own asks hdr): every body is indexed again.
	`
INSERT INTO fts (fts) VALUES ('delete-all');
DELETE FROM unindexed;
INSERT INTO unindexed (bid) SELECT bid FROM bodies;
`,
	// 9: the envelope's IMAP form (envelope_wire.go), which FETCH writes
	// as it is; NULL for an envelope that has none: FETCH then encodes
	// the stored envelope. migrate fills it for the bodies stored before
	// (fillWireForms). Moved to forms by version 13.
	`
ALTER TABLE bodies ADD COLUMN envelope_wire BLOB;
`,
	// 10: the body structure's IMAP form as BODYSTRUCTURE writes it, the
	// same way.
	`
ALTER TABLE bodies ADD COLUMN structure_wire BLOB;
`,
	// 11: the word index beside the trigram index (search.go, "Words"):
	// ftsw holds the same columns split into words by the ascii tokenizer,
	// without positions; words lists every word of three bytes or more
	// once, and wordgrams indexes the words' trigrams. Every body is
	// indexed again, so that both indexes hold the same bodies.
	`
CREATE VIRTUAL TABLE ftsw USING fts5 (body, hdr, hfrom, hto, hcc, hbcc, hsubject,
	content = '', contentless_delete = 1, detail = column, tokenize = 'ascii');
CREATE TABLE words (
	wid INTEGER PRIMARY KEY,
	word TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE wordgrams USING fts5 (word, content = 'words', content_rowid = 'wid',
	tokenize = 'trigram case_sensitive 1');
CREATE TRIGGER words_grams AFTER INSERT ON words
BEGIN
	INSERT INTO wordgrams (rowid, word) VALUES (NEW.wid, NEW.word);
END;
DROP TRIGGER bodies_unindex;
CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	DELETE FROM fts WHERE rowid = OLD.bid;
	DELETE FROM ftsw WHERE rowid = OLD.bid;
	DELETE FROM unindexed WHERE bid = OLD.bid;
END;
INSERT INTO fts (fts) VALUES ('delete-all');
DELETE FROM unindexed;
INSERT INTO unindexed (bid) SELECT bid FROM bodies;
`,
	// 12: the messages of a mailbox in body order, with their UIDs, for a
	// search that matches many bodies to merge them with the index's
	// answer instead of searching each (search.go, matchUIDs).
	`
CREATE INDEX messages_mailbox_body ON messages (mailbox, body, uid);
`,
	// 13: the IMAP forms of the envelope and the body structure move from
	// bodies to a table of their own, forms (one row per body, NULL where
	// a body has no form): a FETCH of ENVELOPE or BODYSTRUCTURE reads
	// these narrow rows, about a third of a bodies row, instead of the
	// bodies with their decoded envelopes and structures, so a FETCH of
	// many messages reads and decrypts a third of the pages. The undo
	// triggers of bodies name the columns dropped: they are made again by
	// the migration.
	`
CREATE TABLE forms (
	bid       INTEGER PRIMARY KEY REFERENCES bodies (bid) ON DELETE CASCADE,
	envelope  BLOB,
	structure BLOB
);
INSERT INTO forms (bid, envelope, structure) SELECT bid, envelope_wire, structure_wire FROM bodies ORDER BY bid;
DROP TRIGGER IF EXISTS undo_bodies_ins;
DROP TRIGGER IF EXISTS undo_bodies_upd;
DROP TRIGGER IF EXISTS undo_bodies_del;
ALTER TABLE bodies DROP COLUMN envelope_wire;
ALTER TABLE bodies DROP COLUMN structure_wire;
`,
	// 14: a mailbox's messages in UID order with what a FETCH of UID,
	// FLAGS, INTERNALDATE and RFC822.SIZE writes (FetchForms with
	// WantListing): such a FETCH reads this index alone, not a row of the
	// table per message.
	`
CREATE INDEX messages_listing ON messages (mailbox, uid, flags, keywords, size, date);
`,
	// 15: the keywords in use in a mailbox (MailboxKeywords, at every
	// SELECT) are read from the few messages that have any, instead of
	// every message of the mailbox: 0.5 s over 1,000,000 messages.
	`
CREATE INDEX messages_keywords ON messages (mailbox, keywords) WHERE keywords != '';
`,
	// 16: an undo record holds the row's values (v0...) and key (k0...)
	// instead of an SQL statement made by quote(), and an undo puts the
	// rows back through the triggers of a view (undo.go), instead of
	// parsing one statement per row change. The records of provisional
	// changes queued before the upgrade keep their statements (stmt, NULL
	// in the new ones), which an undo still runs, after the newer records.
	// The undo triggers of version 15 are dropped first: they write to the
	// table replaced, and makeUndoTriggers makes the new ones (and the
	// view) at the end of the migration.
	`
DROP VIEW IF EXISTS undo_replay;
DROP TRIGGER IF EXISTS undo_state_ins;
DROP TRIGGER IF EXISTS undo_state_upd;
DROP TRIGGER IF EXISTS undo_state_del;
DROP TRIGGER IF EXISTS undo_mailboxes_ins;
DROP TRIGGER IF EXISTS undo_mailboxes_upd;
DROP TRIGGER IF EXISTS undo_mailboxes_del;
DROP TRIGGER IF EXISTS undo_subscriptions_ins;
DROP TRIGGER IF EXISTS undo_subscriptions_upd;
DROP TRIGGER IF EXISTS undo_subscriptions_del;
DROP TRIGGER IF EXISTS undo_keywords_ins;
DROP TRIGGER IF EXISTS undo_keywords_upd;
DROP TRIGGER IF EXISTS undo_keywords_del;
DROP TRIGGER IF EXISTS undo_bodies_ins;
DROP TRIGGER IF EXISTS undo_bodies_upd;
DROP TRIGGER IF EXISTS undo_bodies_del;
DROP TRIGGER IF EXISTS undo_forms_ins;
DROP TRIGGER IF EXISTS undo_forms_upd;
DROP TRIGGER IF EXISTS undo_forms_del;
DROP TRIGGER IF EXISTS undo_blobs_ins;
DROP TRIGGER IF EXISTS undo_blobs_upd;
DROP TRIGGER IF EXISTS undo_blobs_del;
DROP TRIGGER IF EXISTS undo_messages_ins;
DROP TRIGGER IF EXISTS undo_messages_upd;
DROP TRIGGER IF EXISTS undo_messages_del;
DROP TRIGGER IF EXISTS undo_entries_ins;
DROP TRIGGER IF EXISTS undo_entries_upd;
DROP TRIGGER IF EXISTS undo_entries_del;
DROP TRIGGER IF EXISTS undo_rejected_ins;
DROP TRIGGER IF EXISTS undo_rejected_upd;
DROP TRIGGER IF EXISTS undo_rejected_del;
CREATE TABLE undo_v16 (
	seq  INTEGER PRIMARY KEY,
	qseq INTEGER NOT NULL,
	tbl  TEXT,
	op   TEXT,
	k0,
	v0, v1, v2, v3, v4, v5, v6, v7, v8, v9,
	mb1  BLOB, uid1 INTEGER,
	mb2  BLOB, uid2 INTEGER,
	mbox BLOB,
	stmt TEXT
);
INSERT INTO undo_v16 (seq, qseq, mb1, uid1, mb2, uid2, mbox, stmt)
	SELECT seq, qseq, mb1, uid1, mb2, uid2, mbox, stmt FROM undo ORDER BY seq;
DROP TABLE undo;
ALTER TABLE undo_v16 RENAME TO undo;
CREATE INDEX undo_qseq ON undo (qseq);
`,
	// 17: messages_listing holds the body too: a FETCH of BODYSTRUCTURE
	// (FetchForms with WantStructureWire and WantListing) reads the
	// messages from the index alone and only the forms row of each body,
	// not a row of messages besides (BenchmarkFormsFetch in
	// internal/imapd: about 13% less CPU at 100,000 messages).
	`
DROP INDEX messages_listing;
CREATE INDEX messages_listing ON messages (mailbox, uid, flags, keywords, size, date, body);
`,
	// 18: the number of bodies, kept by triggers in body_count's one row:
	// the sync loop asks for it after every batch (LiveBodies, whether a
	// checkpoint is due), and count(*) read the whole of an index of
	// bodies each time, a cost that grew with the mailbox (6% of the
	// daemon's CPU at 300,000 messages in a first sync). The triggers
	// fire for every row inserted or deleted however it is (an apply, an
	// undo, a restore); a later migration that makes bodies again must
	// count them again.
	`
CREATE TABLE body_count (
	n INTEGER NOT NULL
);
INSERT INTO body_count (n) SELECT count(*) FROM bodies;
CREATE TRIGGER bodies_counted AFTER INSERT ON bodies
BEGIN
	UPDATE body_count SET n = n + 1;
END;
CREATE TRIGGER bodies_uncounted AFTER DELETE ON bodies
BEGIN
	UPDATE body_count SET n = n - 1;
END;
`,
	// 19: the IMAP form of the body structure moves from forms to a table
	// of its own, structures (one row per body, NULL where a body has
	// none): a FETCH of BODYSTRUCTURE steps these rows, about 100 bytes
	// each in the benchmark's mailbox, instead of the forms rows with the
	// envelope beside, about 250, so it reads and decrypts well under
	// half the pages (BenchmarkFormsFetch in internal/imapd: 83 to 85 ms
	// of CPU against 118 to 121 ms at 100,000 messages); a FETCH of
	// ENVELOPE reads forms without the structures. The undo triggers and
	// the replay view name the column dropped: makeUndoTriggers makes
	// them again.
	`
DROP VIEW IF EXISTS undo_replay;
DROP TRIGGER IF EXISTS undo_forms_ins;
DROP TRIGGER IF EXISTS undo_forms_upd;
DROP TRIGGER IF EXISTS undo_forms_del;
CREATE TABLE structures (
	bid       INTEGER PRIMARY KEY REFERENCES bodies (bid) ON DELETE CASCADE,
	structure BLOB
);
INSERT INTO structures (bid, structure) SELECT bid, structure FROM forms ORDER BY bid;
ALTER TABLE forms DROP COLUMN structure;
`,
	// 20: both FTS5 indexes merge a level's segments once it holds 16 of
	// them rather than 4 (crisismerge 32 rather than 16): each body's
	// postings are rewritten at fewer levels as the index grows, so
	// building it costs about the same per body at the end as at the start
	// (BenchmarkIndexMerge at 100,000 bodies: 0.39 ms of CPU a body in the
	// first tenth and the last, against 0.49 and 0.57); the more segments
	// this leaves are merged into one when a large build is done
	// (MergeIndex), so searches read fewer than before.
	`
INSERT INTO fts (fts, rank) VALUES ('automerge', 16);
INSERT INTO fts (fts, rank) VALUES ('crisismerge', 32);
INSERT INTO ftsw (ftsw, rank) VALUES ('automerge', 16);
INSERT INTO ftsw (ftsw, rank) VALUES ('crisismerge', 32);
`,
	// 21: the spool's public key the device trusts for deliveries,
	// recorded by the first sync loop to run on the database
	// (TrustSpoolKey), so that a later start with another key is refused
	// instead of rejecting every delivery signed by the right one.
	`
ALTER TABLE local ADD COLUMN spool_key BLOB CHECK (spool_key IS NULL OR length(spool_key) = 64);
`,
	// 22: the highest body id whose forms and structures rows Relocate
	// has written into pages that follow each other (placement.go):
	// Placement counts the bodies stored since, for the daemon to know
	// when to relocate again, and Relocate moves only those. 0 for a
	// database none relocated yet.
	`
ALTER TABLE local ADD COLUMN relocated_bid INTEGER NOT NULL DEFAULT 0;
`,
	// 23: the bodies whose texts are too long for the search index
	// (maxIndexedText, search.go): the indexer lists them here instead of
	// indexing them, and searches scan them as they scan the bodies not
	// indexed yet.
	`
CREATE TABLE unindexable (
	bid INTEGER PRIMARY KEY
);
DROP TRIGGER bodies_unindex;
CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	DELETE FROM fts WHERE rowid = OLD.bid;
	DELETE FROM ftsw WHERE rowid = OLD.bid;
	DELETE FROM unindexed WHERE bid = OLD.bid;
	DELETE FROM unindexable WHERE bid = OLD.bid;
END;
`,
	// 24: a deleted body's rows leave the search index in the background,
	// not in the transaction that deletes it: its id is listed in
	// unindex_pending (when the index holds it: not when it is listed in
	// unindexed or unindexable), and the indexer takes the rows listed out
	// of both indexes many a statement (IndexPendingWithin). Each delete
	// from an FTS5 table of contentless_delete costs about 0.13 ms at
	// 4,000 bodies and grows with the index: an EXPUNGE of 20,000
	// messages whose bodies went spent most of its 20 s there, holding
	// the device's writer. A search joins the index's rows to the
	// messages, so a row of a body gone matches no message. A body stored
	// with an id still listed (ids are reused: the largest plus one; an
	// undo puts a body back with its own) first has that id's rows taken
	// out, in the insert's transaction, so the index never holds two
	// bodies' rows for one id; the common insert pays one look-up in the
	// short list.
	`
CREATE TABLE unindex_pending (
	bid INTEGER PRIMARY KEY
);
DROP TRIGGER bodies_unindex;
CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	INSERT OR IGNORE INTO unindex_pending (bid) SELECT OLD.bid
		WHERE NOT EXISTS (SELECT 1 FROM unindexed WHERE bid = OLD.bid)
		AND NOT EXISTS (SELECT 1 FROM unindexable WHERE bid = OLD.bid);
	DELETE FROM unindexed WHERE bid = OLD.bid;
	DELETE FROM unindexable WHERE bid = OLD.bid;
END;
CREATE TRIGGER bodies_reuse_id AFTER INSERT ON bodies
WHEN EXISTS (SELECT 1 FROM unindex_pending WHERE bid = NEW.bid)
BEGIN
	DELETE FROM fts WHERE rowid = NEW.bid;
	DELETE FROM ftsw WHERE rowid = NEW.bid;
	DELETE FROM unindex_pending WHERE bid = NEW.bid;
END;
`,
	// 25: a statement that deletes rows from either FTS5 index no longer
	// rewrites, at its end, a level whose deleted rows passed a tenth of
	// its rows ('deletemerge' 0, FTS5's default 10): the indexer's purge
	// of 10,000 deleted bodies then held the device's writer up to 2.4 s
	// (4 KB messages, 20,000 of them), where writing the tombstones alone
	// takes about 0.26 s. ReclaimIndex does that rewrite instead, a
	// bounded number of pages a transaction ('merge' with deletemerge set
	// for it alone), which the daemon runs once applying is quiet.
	// 'usermerge' 16, as automerge (version 20), so that those steps
	// merge no level FTS5's own merging would leave as it is.
	`
INSERT INTO fts (fts, rank) VALUES ('deletemerge', 0);
INSERT INTO fts (fts, rank) VALUES ('usermerge', 16);
INSERT INTO ftsw (ftsw, rank) VALUES ('deletemerge', 0);
INSERT INTO ftsw (ftsw, rank) VALUES ('usermerge', 16);
`,
	// 26: whether an entry signed by the recorded spool key (version 21)
	// has been applied. Until one has, the key is only what the first
	// sync was given: a device started with the wrong key stops before
	// deliveries signed by another (the syncer's UntrustedSpoolError)
	// instead of passing them by, and a later start with another key
	// replaces it (TrustSpoolKey). A database that read past position 0
	// before this version keeps the rule it had: its key is fixed.
	`
ALTER TABLE local ADD COLUMN spool_key_used INTEGER NOT NULL DEFAULT 0 CHECK (spool_key_used IN (0, 1));
UPDATE local SET spool_key_used = 1 WHERE (SELECT position FROM state) > 0;
`,
	// 27: the newest entry format every device of the user reads, as the
	// spool last said (SetReaders); 0 until it has. From format 4 the
	// device writes an EXPUNGE and a DELETE as commands of version 2.
	`
ALTER TABLE local ADD COLUMN readers INTEGER NOT NULL DEFAULT 0 CHECK (readers >= 0);
`,
	// 28: the texts of the bodies too long for the search index
	// (searchtext.go), kept once when the indexer lists such a body in
	// unindexable: lower-cased, a text (part) of an index column (col) in
	// pieces, each compressed (data, len bytes of text) beside a filter
	// of its trigrams (grams). Searches read them instead of the message,
	// which they decoded again at every SEARCH. The trigger that removes
	// a deleted body from unindexable removes its texts. The bodies listed
	// before are listed as unindexed again, for the indexer to keep their
	// texts.
	`
CREATE TABLE search_texts (
	bid   INTEGER NOT NULL,
	piece INTEGER NOT NULL,
	col   INTEGER NOT NULL,
	part  INTEGER NOT NULL,
	len   INTEGER NOT NULL,
	grams BLOB NOT NULL,
	data  BLOB NOT NULL,
	PRIMARY KEY (bid, piece)
);
DROP TRIGGER bodies_unindex;
CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	INSERT OR IGNORE INTO unindex_pending (bid) SELECT OLD.bid
		WHERE NOT EXISTS (SELECT 1 FROM unindexed WHERE bid = OLD.bid)
		AND NOT EXISTS (SELECT 1 FROM unindexable WHERE bid = OLD.bid);
	DELETE FROM unindexed WHERE bid = OLD.bid;
	DELETE FROM unindexable WHERE bid = OLD.bid;
	DELETE FROM search_texts WHERE bid = OLD.bid;
END;
INSERT OR IGNORE INTO unindexed (bid) SELECT bid FROM unindexable;
DELETE FROM unindexable;
`,
	// 29: the user's usage and the quota the spool last stated on a read
	// (SetStatedQuota); a limit of 0: none stated. A device started while
	// the spool is down refuses an APPEND past it until a read answers.
	`
ALTER TABLE local ADD COLUMN quota_usage INTEGER NOT NULL DEFAULT 0 CHECK (quota_usage >= 0);
ALTER TABLE local ADD COLUMN quota_limit INTEGER NOT NULL DEFAULT 0 CHECK (quota_limit >= 0);
`,
	// 30: the version of the parser's derivation that made each body's
	// stored envelope and structure and their IMAP forms (Versioned,
	// mimeform.FormsVersion), 0 for the bodies stored before, and an
	// index of the bodies by it: UpgradeForms finds those an earlier
	// version made, a batch at a time, and parses them again from their
	// bytes (formsupgrade.go). The undo triggers of bodies name its
	// columns: makeUndoTriggers makes them again.
	`
ALTER TABLE bodies ADD COLUMN forms_version INTEGER NOT NULL DEFAULT 0 CHECK (forms_version >= 0);
CREATE INDEX bodies_forms_version ON bodies (forms_version);
`,
	// 31: the version of the texts SEARCH tests that the index holds of
	// each body (TextsVersioned, mimeform.TextsVersion), 0 for the bodies
	// indexed before, and an index of the bodies by it: UpgradeTexts
	// finds those an earlier version indexed, a batch at a time, and
	// lists them for the indexer again (textsupgrade.go). The undo
	// triggers of bodies name its columns: makeUndoTriggers makes them
	// again.
	`
ALTER TABLE bodies ADD COLUMN texts_version INTEGER NOT NULL DEFAULT 0 CHECK (texts_version >= 0);
CREATE INDEX bodies_texts_version ON bodies (texts_version);
`,
	// 32: the spool key replaced (ReplaceSpoolKey). previous_spool_key is
	// the key the database trusted before spool_key, given as the
	// device's --previous-spool-key, trusted for deliveries until the
	// cutover; spool_key_cutover is the position of the first entry
	// signed by spool_key the database applied, set with spool_key_used
	// (0: none, or applied before this version). Deliveries signed by the
	// previous key after it are rejected as a stranger's.
	`
ALTER TABLE local ADD COLUMN previous_spool_key BLOB CHECK (previous_spool_key IS NULL OR length(previous_spool_key) = 64);
ALTER TABLE local ADD COLUMN spool_key_cutover INTEGER NOT NULL DEFAULT 0 CHECK (spool_key_cutover >= 0);
`,
	// 33: the spool keys before previous_spool_key (ReplaceSpoolKeyChain),
	// as the spool's chain of statements vouched for them: ord 2 is the key
	// previous_spool_key replaced, 3 the one before it, and so on. Each is
	// trusted for deliveries until its cutover, the position of the first
	// entry the database applied signed by a later key of the chain (0:
	// none yet); those it signed after it are rejected as a stranger's.
	`
CREATE TABLE earlier_spool_keys (
	ord     INTEGER PRIMARY KEY CHECK (ord >= 2),
	key     BLOB    NOT NULL UNIQUE CHECK (length(key) = 64),
	cutover INTEGER NOT NULL DEFAULT 0 CHECK (cutover >= 0)
);
`,
}

// SchemaVersion is the schema version this package writes.
const SchemaVersion = len(migrations)

// freshSchema makes a new database's schema at SchemaVersion at once:
// the schema objects and the rows the migrations leave in an empty
// database, as migrating it from version 0 makes them (its own SQL text,
// columns added by ALTER TABLE included; TestFreshSchemaAsMigrated
// compares the two, object for object and row for row, and rewrites this
// file with -update-schema). Migrating step by step took most of the time
// a new device's database took to open, a tenth of a second of a first
// sync of 3,000 messages.
//
//go:embed schema_fresh.sql
var freshSchema string

// freshSchemaVersion is the version freshSchema makes; a migration
// added since makes it stale, which TestFreshSchemaAsMigrated reports:
// migrate then takes the steps after it.
const freshSchemaVersion = 33

// migrateStepwise, when set, makes migrate take every step from version
// 0 even for a new database (TestFreshSchemaAsMigrated).
var migrateStepwise = false

// migrate brings the database to SchemaVersion in one IMMEDIATE transaction.
func migrate(ctx context.Context, db *sql.DB, p Parser) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("starting migration: %w", err)
	}
	defer tx.Rollback()
	var appID, version int
	if err := tx.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("reading application id: %w", err)
	}
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if appID != 0 && appID != applicationID {
		return fmt.Errorf("application id %#x: %w", appID, ErrNotMailstore)
	}
	if appID == 0 {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
			return fmt.Errorf("inspecting database: %w", err)
		}
		if n != 0 || version != 0 {
			return fmt.Errorf("database has %d schema objects but no application id: %w", n, ErrNotMailstore)
		}
	}
	if version > SchemaVersion {
		return fmt.Errorf("schema version %d, this program knows up to %d (upgrade cspool): %w",
			version, SchemaVersion, ErrNewerSchema)
	}
	if version == SchemaVersion {
		return nil
	}
	if version == 0 && !migrateStepwise {
		// A new database (an application id of 0 with schema objects
		// was refused above).
		if _, err := tx.ExecContext(ctx, freshSchema); err != nil {
			return fmt.Errorf("creating schema version %d: %w", freshSchemaVersion, err)
		}
		version = freshSchemaVersion
	}
	for v := version; v < SchemaVersion; v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrating schema to version %d: %w", v+1, err)
		}
	}
	if version < 10 {
		// Versions 9 and 10 added the IMAP forms of the envelope and the
		// body structure (in forms since version 13), which SQL cannot
		// make.
		if err := fillWireForms(ctx, tx, p); err != nil {
			return fmt.Errorf("migrating schema to version 10: %w", err)
		}
	}
	if version < SchemaVersion {
		// Made again whenever a step ran (freshSchema holds them).
		if err := makeUndoTriggers(ctx, tx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
		return fmt.Errorf("setting application id: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion)); err != nil {
		return fmt.Errorf("setting schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing migration: %w", err)
	}
	return nil
}

// fillWireForms gives the bodies of a database from before schema version
// 10 the IMAP forms apply gives a body now (tables forms and structures), in batches of
// bodies. The migration that brings such a database up to date runs it,
// once, in its own transaction; a body whose envelope or structure has no
// form keeps NULL there.
func fillWireForms(ctx context.Context, tx *sql.Tx, p Parser) error {
	update, err := tx.PrepareContext(ctx, "INSERT OR REPLACE INTO forms (envelope, bid) VALUES (?, ?)")
	if err != nil {
		return fmt.Errorf("filling the IMAP forms: %w", err)
	}
	defer update.Close()
	updateStructure, err := tx.PrepareContext(ctx, "INSERT OR REPLACE INTO structures (structure, bid) VALUES (?, ?)")
	if err != nil {
		return fmt.Errorf("filling the IMAP forms: %w", err)
	}
	defer updateStructure.Close()
	type body struct {
		bid     int64
		env, bs []byte
	}
	for after := int64(0); ; {
		rows, err := tx.QueryContext(ctx, `SELECT b.bid, b.envelope, b.structure FROM bodies b LEFT JOIN forms f ON f.bid = b.bid
			LEFT JOIN structures s ON s.bid = b.bid
			WHERE b.bid > ? AND (f.envelope IS NULL OR s.structure IS NULL) ORDER BY b.bid LIMIT 1000`, after)
		if err != nil {
			return fmt.Errorf("filling the IMAP forms: %w", err)
		}
		var batch []body
		for rows.Next() {
			var b body
			if err := rows.Scan(&b.bid, &b.env, &b.bs); err != nil {
				rows.Close()
				return fmt.Errorf("filling the IMAP forms: %w", err)
			}
			batch = append(batch, b)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("filling the IMAP forms: %w", err)
		}
		if len(batch) == 0 {
			return nil
		}
		for _, b := range batch {
			env, bs, err := p.Forms(b.env, b.bs)
			if err != nil {
				return err
			}
			if _, err := update.ExecContext(ctx, nullBlob(env), b.bid); err != nil {
				return fmt.Errorf("filling the IMAP forms: %w", err)
			}
			if _, err := updateStructure.ExecContext(ctx, nullBlob(bs), b.bid); err != nil {
				return fmt.Errorf("filling the IMAP forms: %w", err)
			}
			after = b.bid
		}
	}
}
