-- Written by TestFreshSchemaAsMigrated -update-schema (schema_fresh_test.go)
-- from a database migrated from version 0 to 33; do not edit.
CREATE TABLE state (
	k                INTEGER PRIMARY KEY CHECK (k = 1),
	position         INTEGER NOT NULL CHECK (position >= 0),
	next_uidvalidity INTEGER NOT NULL CHECK (next_uidvalidity > 0)
, restorations INTEGER NOT NULL DEFAULT 0);
CREATE TABLE mailboxes (
	mid            INTEGER PRIMARY KEY,
	id             BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
	name           TEXT    NOT NULL UNIQUE,
	special_use    TEXT    NOT NULL DEFAULT '',
	uidvalidity    INTEGER NOT NULL UNIQUE CHECK (uidvalidity > 0 AND uidvalidity < 4294967296),
	uidnext        INTEGER NOT NULL CHECK (uidnext > 0 AND uidnext < 4294967296),
	highest_modseq INTEGER NOT NULL DEFAULT 0
);
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
, origin INTEGER NOT NULL DEFAULT 0, forms_version INTEGER NOT NULL DEFAULT 0 CHECK (forms_version >= 0), texts_version INTEGER NOT NULL DEFAULT 0 CHECK (texts_version >= 0));
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
, old INTEGER NOT NULL DEFAULT 0 CHECK (old IN (0, 1))) WITHOUT ROWID;
CREATE TABLE rejected (
	pos    INTEGER PRIMARY KEY,
	entry  BLOB,
	reason TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT '',
	at     INTEGER NOT NULL
);
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
CREATE TABLE appended (
	id  BLOB    PRIMARY KEY CHECK (length(id) = 16),
	pos INTEGER NOT NULL CHECK (pos > 0)
) WITHOUT ROWID;
CREATE TABLE queue (
	seq     INTEGER PRIMARY KEY,
	id      BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
	cmd     BLOB    NOT NULL,
	vpos    INTEGER,
	outcome BLOB
);
CREATE TABLE capture (
	k       INTEGER PRIMARY KEY CHECK (k = 1),
	qseq    INTEGER,
	undoing INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE uidvalidity_override (
	mailbox     BLOB    PRIMARY KEY CHECK (length(mailbox) = 16),
	uidvalidity INTEGER NOT NULL UNIQUE CHECK (uidvalidity >= 2147483648 AND uidvalidity < 4294967296)
) WITHOUT ROWID;
CREATE TABLE local (
	k                INTEGER PRIMARY KEY CHECK (k = 1),
	next_uidvalidity INTEGER NOT NULL CHECK (next_uidvalidity >= 2147483648)
, spool_key BLOB CHECK (spool_key IS NULL OR length(spool_key) = 64), relocated_bid INTEGER NOT NULL DEFAULT 0, spool_key_used INTEGER NOT NULL DEFAULT 0 CHECK (spool_key_used IN (0, 1)), readers INTEGER NOT NULL DEFAULT 0 CHECK (readers >= 0), quota_usage INTEGER NOT NULL DEFAULT 0 CHECK (quota_usage >= 0), quota_limit INTEGER NOT NULL DEFAULT 0 CHECK (quota_limit >= 0), previous_spool_key BLOB CHECK (previous_spool_key IS NULL OR length(previous_spool_key) = 64), spool_key_cutover INTEGER NOT NULL DEFAULT 0 CHECK (spool_key_cutover >= 0));
CREATE TRIGGER state_never_goes_back
BEFORE UPDATE ON state
WHEN ((NEW.position < OLD.position AND NEW.restorations <= OLD.restorations) OR NEW.next_uidvalidity < OLD.next_uidvalidity)
	AND NOT (SELECT undoing FROM capture)
BEGIN
	SELECT RAISE(ABORT, 'mailstore: position and uidvalidity counter never decrease (the position only with a restoration)');
END;
CREATE TRIGGER mailboxes_uidnext_never_decreases
BEFORE UPDATE OF uidnext ON mailboxes WHEN NEW.uidnext < OLD.uidnext AND NOT (SELECT undoing FROM capture)
BEGIN
	SELECT RAISE(ABORT, 'mailstore: uidnext never decreases');
END;
CREATE VIRTUAL TABLE fts USING fts5 (body, hdr, hfrom, hto, hcc, hbcc, hsubject,
	content = '', contentless_delete = 1, tokenize = 'trigram case_sensitive 1');
CREATE TABLE unindexed (
	bid INTEGER PRIMARY KEY
);
CREATE TRIGGER bodies_unindexed AFTER INSERT ON bodies
BEGIN
	INSERT INTO unindexed (bid) VALUES (NEW.bid);
END;
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
CREATE INDEX messages_mailbox_body ON messages (mailbox, body, uid);
CREATE TABLE forms (
	bid       INTEGER PRIMARY KEY REFERENCES bodies (bid) ON DELETE CASCADE,
	envelope  BLOB);
CREATE INDEX messages_keywords ON messages (mailbox, keywords) WHERE keywords != '';
CREATE TABLE "undo" (
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
, v10);
CREATE INDEX undo_qseq ON undo (qseq);
CREATE INDEX messages_listing ON messages (mailbox, uid, flags, keywords, size, date, body);
CREATE TABLE body_count (
	n INTEGER NOT NULL
);
CREATE TRIGGER bodies_counted AFTER INSERT ON bodies
BEGIN
	UPDATE body_count SET n = n + 1;
END;
CREATE TRIGGER bodies_uncounted AFTER DELETE ON bodies
BEGIN
	UPDATE body_count SET n = n - 1;
END;
CREATE TABLE structures (
	bid       INTEGER PRIMARY KEY REFERENCES bodies (bid) ON DELETE CASCADE,
	structure BLOB
);
CREATE TABLE unindexable (
	bid INTEGER PRIMARY KEY
);
CREATE TABLE unindex_pending (
	bid INTEGER PRIMARY KEY
);
CREATE TRIGGER bodies_reuse_id AFTER INSERT ON bodies
WHEN EXISTS (SELECT 1 FROM unindex_pending WHERE bid = NEW.bid)
BEGIN
	DELETE FROM fts WHERE rowid = NEW.bid;
	DELETE FROM ftsw WHERE rowid = NEW.bid;
	DELETE FROM unindex_pending WHERE bid = NEW.bid;
END;
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
CREATE TRIGGER bodies_unindex AFTER DELETE ON bodies
BEGIN
	INSERT OR IGNORE INTO unindex_pending (bid) SELECT OLD.bid
		WHERE NOT EXISTS (SELECT 1 FROM unindexed WHERE bid = OLD.bid)
		AND NOT EXISTS (SELECT 1 FROM unindexable WHERE bid = OLD.bid);
	DELETE FROM unindexed WHERE bid = OLD.bid;
	DELETE FROM unindexable WHERE bid = OLD.bid;
	DELETE FROM search_texts WHERE bid = OLD.bid;
END;
CREATE INDEX bodies_forms_version ON bodies (forms_version);
CREATE INDEX bodies_texts_version ON bodies (texts_version);
CREATE TABLE earlier_spool_keys (
	ord     INTEGER PRIMARY KEY CHECK (ord >= 2),
	key     BLOB    NOT NULL UNIQUE CHECK (length(key) = 64),
	cutover INTEGER NOT NULL DEFAULT 0 CHECK (cutover >= 0)
);
CREATE VIEW undo_replay AS SELECT * FROM undo;
CREATE TRIGGER undo_state_ins AFTER INSERT ON state WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'state', 'ins', NEW.k); END;
CREATE TRIGGER undo_replay_state_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'state' AND NEW.op = 'ins' BEGIN DELETE FROM state WHERE k = NEW.k0; END;
CREATE TRIGGER undo_state_upd AFTER UPDATE ON state WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1) VALUES ((SELECT qseq FROM capture), 'state', 'upd', NEW.k, OLD.k, OLD.next_uidvalidity); END;
CREATE TRIGGER undo_replay_state_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'state' AND NEW.op = 'upd' BEGIN UPDATE state SET k = NEW.v0, next_uidvalidity = NEW.v1 WHERE k = NEW.k0; END;
CREATE TRIGGER undo_state_del BEFORE DELETE ON state WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1) VALUES ((SELECT qseq FROM capture), 'state', 'del', OLD.k, OLD.next_uidvalidity); END;
CREATE TRIGGER undo_replay_state_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'state' AND NEW.op = 'del' BEGIN INSERT INTO state (k, next_uidvalidity) VALUES (NEW.v0, NEW.v1); END;
CREATE TRIGGER undo_mailboxes_ins AFTER INSERT ON mailboxes WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, mbox) VALUES ((SELECT qseq FROM capture), 'mailboxes', 'ins', NEW.mid, NEW.id); END;
CREATE TRIGGER undo_replay_mailboxes_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'mailboxes' AND NEW.op = 'ins' BEGIN DELETE FROM mailboxes WHERE mid = NEW.k0; END;
CREATE TRIGGER undo_mailboxes_upd AFTER UPDATE ON mailboxes WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1, v2, v3, v4, v5, v6, mbox) VALUES ((SELECT qseq FROM capture), 'mailboxes', 'upd', NEW.mid, OLD.mid, OLD.id, OLD.name, OLD.special_use, OLD.uidvalidity, OLD.uidnext, OLD.highest_modseq, NEW.id); END;
CREATE TRIGGER undo_replay_mailboxes_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'mailboxes' AND NEW.op = 'upd' BEGIN UPDATE mailboxes SET mid = NEW.v0, id = NEW.v1, name = NEW.v2, special_use = NEW.v3, uidvalidity = NEW.v4, uidnext = NEW.v5, highest_modseq = NEW.v6 WHERE mid = NEW.k0; END;
CREATE TRIGGER undo_mailboxes_del BEFORE DELETE ON mailboxes WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1, v2, v3, v4, v5, v6, mbox) VALUES ((SELECT qseq FROM capture), 'mailboxes', 'del', OLD.mid, OLD.id, OLD.name, OLD.special_use, OLD.uidvalidity, OLD.uidnext, OLD.highest_modseq, OLD.id); END;
CREATE TRIGGER undo_replay_mailboxes_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'mailboxes' AND NEW.op = 'del' BEGIN INSERT INTO mailboxes (mid, id, name, special_use, uidvalidity, uidnext, highest_modseq) VALUES (NEW.v0, NEW.v1, NEW.v2, NEW.v3, NEW.v4, NEW.v5, NEW.v6); END;
CREATE TRIGGER undo_subscriptions_ins AFTER INSERT ON subscriptions WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'subscriptions', 'ins', NEW.name); END;
CREATE TRIGGER undo_replay_subscriptions_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'subscriptions' AND NEW.op = 'ins' BEGIN DELETE FROM subscriptions WHERE name = NEW.k0; END;
CREATE TRIGGER undo_subscriptions_upd AFTER UPDATE ON subscriptions WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0) VALUES ((SELECT qseq FROM capture), 'subscriptions', 'upd', NEW.name, OLD.name); END;
CREATE TRIGGER undo_replay_subscriptions_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'subscriptions' AND NEW.op = 'upd' BEGIN UPDATE subscriptions SET name = NEW.v0 WHERE name = NEW.k0; END;
CREATE TRIGGER undo_subscriptions_del BEFORE DELETE ON subscriptions WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0) VALUES ((SELECT qseq FROM capture), 'subscriptions', 'del', OLD.name); END;
CREATE TRIGGER undo_replay_subscriptions_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'subscriptions' AND NEW.op = 'del' BEGIN INSERT INTO subscriptions (name) VALUES (NEW.v0); END;
CREATE TRIGGER undo_keywords_ins AFTER INSERT ON keywords WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'keywords', 'ins', NEW.fold); END;
CREATE TRIGGER undo_replay_keywords_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'keywords' AND NEW.op = 'ins' BEGIN DELETE FROM keywords WHERE fold = NEW.k0; END;
CREATE TRIGGER undo_keywords_upd AFTER UPDATE ON keywords WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1) VALUES ((SELECT qseq FROM capture), 'keywords', 'upd', NEW.fold, OLD.fold, OLD.name); END;
CREATE TRIGGER undo_replay_keywords_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'keywords' AND NEW.op = 'upd' BEGIN UPDATE keywords SET fold = NEW.v0, name = NEW.v1 WHERE fold = NEW.k0; END;
CREATE TRIGGER undo_keywords_del BEFORE DELETE ON keywords WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1) VALUES ((SELECT qseq FROM capture), 'keywords', 'del', OLD.fold, OLD.name); END;
CREATE TRIGGER undo_replay_keywords_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'keywords' AND NEW.op = 'del' BEGIN INSERT INTO keywords (fold, name) VALUES (NEW.v0, NEW.v1); END;
CREATE TRIGGER undo_bodies_ins AFTER INSERT ON bodies WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'bodies', 'ins', NEW.bid); END;
CREATE TRIGGER undo_replay_bodies_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'bodies' AND NEW.op = 'ins' BEGIN DELETE FROM bodies WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_bodies_upd AFTER UPDATE ON bodies WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10) VALUES ((SELECT qseq FROM capture), 'bodies', 'upd', NEW.bid, OLD.bid, OLD.digest, OLD.refs, OLD.size, OLD.header_len, OLD.parsed, OLD.envelope, OLD.structure, OLD.origin, OLD.forms_version, OLD.texts_version); END;
CREATE TRIGGER undo_replay_bodies_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'bodies' AND NEW.op = 'upd' BEGIN UPDATE bodies SET bid = NEW.v0, digest = NEW.v1, refs = NEW.v2, size = NEW.v3, header_len = NEW.v4, parsed = NEW.v5, envelope = NEW.v6, structure = NEW.v7, origin = NEW.v8, forms_version = NEW.v9, texts_version = NEW.v10 WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_bodies_del BEFORE DELETE ON bodies WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10) VALUES ((SELECT qseq FROM capture), 'bodies', 'del', OLD.bid, OLD.digest, OLD.refs, OLD.size, OLD.header_len, OLD.parsed, OLD.envelope, OLD.structure, OLD.origin, OLD.forms_version, OLD.texts_version); END;
CREATE TRIGGER undo_replay_bodies_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'bodies' AND NEW.op = 'del' BEGIN INSERT INTO bodies (bid, digest, refs, size, header_len, parsed, envelope, structure, origin, forms_version, texts_version) VALUES (NEW.v0, NEW.v1, NEW.v2, NEW.v3, NEW.v4, NEW.v5, NEW.v6, NEW.v7, NEW.v8, NEW.v9, NEW.v10); END;
CREATE TRIGGER undo_forms_ins AFTER INSERT ON forms WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'forms', 'ins', NEW.bid); END;
CREATE TRIGGER undo_replay_forms_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'forms' AND NEW.op = 'ins' BEGIN DELETE FROM forms WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_forms_upd AFTER UPDATE ON forms WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1) VALUES ((SELECT qseq FROM capture), 'forms', 'upd', NEW.bid, OLD.bid, OLD.envelope); END;
CREATE TRIGGER undo_replay_forms_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'forms' AND NEW.op = 'upd' BEGIN UPDATE forms SET bid = NEW.v0, envelope = NEW.v1 WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_forms_del BEFORE DELETE ON forms WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1) VALUES ((SELECT qseq FROM capture), 'forms', 'del', OLD.bid, OLD.envelope); END;
CREATE TRIGGER undo_replay_forms_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'forms' AND NEW.op = 'del' BEGIN INSERT INTO forms (bid, envelope) VALUES (NEW.v0, NEW.v1); END;
CREATE TRIGGER undo_structures_ins AFTER INSERT ON structures WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'structures', 'ins', NEW.bid); END;
CREATE TRIGGER undo_replay_structures_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'structures' AND NEW.op = 'ins' BEGIN DELETE FROM structures WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_structures_upd AFTER UPDATE ON structures WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1) VALUES ((SELECT qseq FROM capture), 'structures', 'upd', NEW.bid, OLD.bid, OLD.structure); END;
CREATE TRIGGER undo_replay_structures_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'structures' AND NEW.op = 'upd' BEGIN UPDATE structures SET bid = NEW.v0, structure = NEW.v1 WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_structures_del BEFORE DELETE ON structures WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1) VALUES ((SELECT qseq FROM capture), 'structures', 'del', OLD.bid, OLD.structure); END;
CREATE TRIGGER undo_replay_structures_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'structures' AND NEW.op = 'del' BEGIN INSERT INTO structures (bid, structure) VALUES (NEW.v0, NEW.v1); END;
CREATE TRIGGER undo_blobs_ins AFTER INSERT ON blobs WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'blobs', 'ins', NEW.bid); END;
CREATE TRIGGER undo_replay_blobs_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'blobs' AND NEW.op = 'ins' BEGIN DELETE FROM blobs WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_blobs_upd AFTER UPDATE ON blobs WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1) VALUES ((SELECT qseq FROM capture), 'blobs', 'upd', NEW.bid, OLD.bid, OLD.data); END;
CREATE TRIGGER undo_replay_blobs_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'blobs' AND NEW.op = 'upd' BEGIN UPDATE blobs SET bid = NEW.v0, data = NEW.v1 WHERE bid = NEW.k0; END;
CREATE TRIGGER undo_blobs_del BEFORE DELETE ON blobs WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1) VALUES ((SELECT qseq FROM capture), 'blobs', 'del', OLD.bid, OLD.data); END;
CREATE TRIGGER undo_replay_blobs_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'blobs' AND NEW.op = 'del' BEGIN INSERT INTO blobs (bid, data) VALUES (NEW.v0, NEW.v1); END;
CREATE TRIGGER undo_messages_ins AFTER INSERT ON messages WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, mb2, uid2) VALUES ((SELECT qseq FROM capture), 'messages', 'ins', NEW.rid, (SELECT id FROM mailboxes WHERE mid = NEW.mailbox), NEW.uid); END;
CREATE TRIGGER undo_replay_messages_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'messages' AND NEW.op = 'ins' BEGIN DELETE FROM messages WHERE rid = NEW.k0; END;
CREATE TRIGGER undo_messages_upd AFTER UPDATE ON messages WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, mb1, uid1, mb2, uid2) VALUES ((SELECT qseq FROM capture), 'messages', 'upd', NEW.rid, OLD.rid, OLD.id, OLD.mailbox, OLD.uid, OLD.body, OLD.date, OLD.size, OLD.flags, OLD.keywords, OLD.modseq, (SELECT id FROM mailboxes WHERE mid = OLD.mailbox), OLD.uid, (SELECT id FROM mailboxes WHERE mid = NEW.mailbox), NEW.uid); END;
CREATE TRIGGER undo_replay_messages_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'messages' AND NEW.op = 'upd' BEGIN UPDATE messages SET rid = NEW.v0, id = NEW.v1, mailbox = NEW.v2, uid = NEW.v3, body = NEW.v4, date = NEW.v5, size = NEW.v6, flags = NEW.v7, keywords = NEW.v8, modseq = NEW.v9 WHERE rid = NEW.k0; END;
CREATE TRIGGER undo_messages_del BEFORE DELETE ON messages WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, mb1, uid1) VALUES ((SELECT qseq FROM capture), 'messages', 'del', OLD.rid, OLD.id, OLD.mailbox, OLD.uid, OLD.body, OLD.date, OLD.size, OLD.flags, OLD.keywords, OLD.modseq, (SELECT id FROM mailboxes WHERE mid = OLD.mailbox), OLD.uid); END;
CREATE TRIGGER undo_replay_messages_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'messages' AND NEW.op = 'del' BEGIN INSERT INTO messages (rid, id, mailbox, uid, body, date, size, flags, keywords, modseq) VALUES (NEW.v0, NEW.v1, NEW.v2, NEW.v3, NEW.v4, NEW.v5, NEW.v6, NEW.v7, NEW.v8, NEW.v9); END;
CREATE TRIGGER undo_entries_ins AFTER INSERT ON entries WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'entries', 'ins', NEW.id); END;
CREATE TRIGGER undo_replay_entries_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'entries' AND NEW.op = 'ins' BEGIN DELETE FROM entries WHERE id = NEW.k0; END;
CREATE TRIGGER undo_entries_upd AFTER UPDATE ON entries WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1, v2) VALUES ((SELECT qseq FROM capture), 'entries', 'upd', NEW.id, OLD.id, OLD.pos, OLD.old); END;
CREATE TRIGGER undo_replay_entries_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'entries' AND NEW.op = 'upd' BEGIN UPDATE entries SET id = NEW.v0, pos = NEW.v1, old = NEW.v2 WHERE id = NEW.k0; END;
CREATE TRIGGER undo_entries_del BEFORE DELETE ON entries WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1, v2) VALUES ((SELECT qseq FROM capture), 'entries', 'del', OLD.id, OLD.pos, OLD.old); END;
CREATE TRIGGER undo_replay_entries_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'entries' AND NEW.op = 'del' BEGIN INSERT INTO entries (id, pos, old) VALUES (NEW.v0, NEW.v1, NEW.v2); END;
CREATE TRIGGER undo_rejected_ins AFTER INSERT ON rejected WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0) VALUES ((SELECT qseq FROM capture), 'rejected', 'ins', NEW.pos); END;
CREATE TRIGGER undo_replay_rejected_ins INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'rejected' AND NEW.op = 'ins' BEGIN DELETE FROM rejected WHERE pos = NEW.k0; END;
CREATE TRIGGER undo_rejected_upd AFTER UPDATE ON rejected WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, k0, v0, v1, v2, v3, v4) VALUES ((SELECT qseq FROM capture), 'rejected', 'upd', NEW.pos, OLD.pos, OLD.entry, OLD.reason, OLD.detail, OLD.at); END;
CREATE TRIGGER undo_replay_rejected_upd INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'rejected' AND NEW.op = 'upd' BEGIN UPDATE rejected SET pos = NEW.v0, entry = NEW.v1, reason = NEW.v2, detail = NEW.v3, at = NEW.v4 WHERE pos = NEW.k0; END;
CREATE TRIGGER undo_rejected_del BEFORE DELETE ON rejected WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN INSERT INTO undo (qseq, tbl, op, v0, v1, v2, v3, v4) VALUES ((SELECT qseq FROM capture), 'rejected', 'del', OLD.pos, OLD.entry, OLD.reason, OLD.detail, OLD.at); END;
CREATE TRIGGER undo_replay_rejected_del INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl = 'rejected' AND NEW.op = 'del' BEGIN INSERT INTO rejected (pos, entry, reason, detail, at) VALUES (NEW.v0, NEW.v1, NEW.v2, NEW.v3, NEW.v4); END;
CREATE TRIGGER undo_replay_unknown INSTEAD OF INSERT ON undo_replay WHEN NEW.tbl IS NULL OR NEW.tbl NOT IN ('state', 'mailboxes', 'subscriptions', 'keywords', 'bodies', 'forms', 'structures', 'blobs', 'messages', 'entries', 'rejected') OR NEW.op IS NULL OR NEW.op NOT IN ('ins', 'upd', 'del') BEGIN SELECT RAISE(ABORT, 'mailstore: an undo record of no known table or kind'); END;
INSERT INTO state (k, position, next_uidvalidity, restorations) VALUES
	(1, 0, 7, 0);
INSERT INTO mailboxes (mid, id, name, special_use, uidvalidity, uidnext, highest_modseq) VALUES
	(1, X'00000000000000000000000000000001', 'INBOX', '', 1, 1, 0),
	(2, X'00000000000000000000000000000002', 'Sent', '\Sent', 2, 1, 0),
	(3, X'00000000000000000000000000000003', 'Drafts', '\Drafts', 3, 1, 0),
	(4, X'00000000000000000000000000000004', 'Trash', '\Trash', 4, 1, 0),
	(5, X'00000000000000000000000000000005', 'Junk', '\Junk', 5, 1, 0),
	(6, X'00000000000000000000000000000006', 'Archive', '\Archive', 6, 1, 0);
INSERT INTO subscriptions (name) VALUES
	('Archive'),
	('Drafts'),
	('INBOX'),
	('Junk'),
	('Sent'),
	('Trash');
INSERT INTO capture (k, qseq, undoing) VALUES
	(1, NULL, 0);
INSERT INTO local (k, next_uidvalidity, spool_key, relocated_bid, spool_key_used, readers, quota_usage, quota_limit, previous_spool_key, spool_key_cutover) VALUES
	(1, 2147483648, NULL, 0, 0, 0, 0, 0, NULL, 0);
INSERT INTO body_count (n) VALUES
	(0);
INSERT INTO fts (fts, rank) VALUES ('automerge', 16);
INSERT INTO fts (fts, rank) VALUES ('crisismerge', 32);
INSERT INTO fts (fts, rank) VALUES ('deletemerge', 0);
INSERT INTO fts (fts, rank) VALUES ('usermerge', 16);
INSERT INTO ftsw (ftsw, rank) VALUES ('automerge', 16);
INSERT INTO ftsw (ftsw, rank) VALUES ('crisismerge', 32);
INSERT INTO ftsw (ftsw, rank) VALUES ('deletemerge', 0);
INSERT INTO ftsw (ftsw, rank) VALUES ('usermerge', 16);
