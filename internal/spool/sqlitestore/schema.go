package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
)

// applicationID marks the file as a cspool spool ("cSp1") in the SQLite
// header, so Open refuses another program's database.
const applicationID = 0x63537031

// migrations[i] brings the schema from version i to version i+1 (PRAGMA
// user_version). Append only: never edit a released step.
var migrations = [...]string{
	// 1: users with their head, and the entries. A user's name is an opaque
	// byte string, hence BLOB. head is the last position ever assigned and
	// never decreases (trigger), so deleting entries leaves holes and no
	// position is reused. size duplicates length(data) so Read can choose
	// entries without touching their data.
	`
CREATE TABLE users (
	id   INTEGER PRIMARY KEY,
	name BLOB    NOT NULL UNIQUE CHECK (length(name) > 0),
	head INTEGER NOT NULL DEFAULT 0 CHECK (head >= 0)
);
CREATE TRIGGER users_head_never_decreases
BEFORE UPDATE OF head ON users WHEN NEW.head < OLD.head
BEGIN
	SELECT RAISE(ABORT, 'spool: a user''s head must never decrease');
END;
CREATE TABLE entries (
	user_id INTEGER NOT NULL REFERENCES users (id),
	pos     INTEGER NOT NULL CHECK (pos >= 1),
	size    INTEGER NOT NULL CHECK (size >= 0),
	data    BLOB    NOT NULL,
	PRIMARY KEY (user_id, pos)
);
`,
	// 2: each user's newest checkpoint (Compactor). One row per user; pos
	// comes before data so reading the position alone never touches the
	// data's overflow pages. A trigger refuses replacing a checkpoint by one
	// at the same or a lower position.
	`
CREATE TABLE checkpoints (
	user_id INTEGER PRIMARY KEY REFERENCES users (id),
	pos     INTEGER NOT NULL CHECK (pos >= 1),
	data    BLOB    NOT NULL
);
CREATE TRIGGER checkpoints_pos_only_grows
BEFORE UPDATE OF pos ON checkpoints WHEN NEW.pos <= OLD.pos
BEGIN
	SELECT RAISE(ABORT, 'spool: a checkpoint may only be replaced by a later one');
END;
`,
	// 3: the hash chain (Chainer). users.chain is the chain hash at the
	// user's head; chain holds the hash of every position ever assigned
	// and is never updated or deleted from (triggers), so compaction keeps
	// it. WITHOUT ROWID: the primary key is the row, no second b-tree.
	// The hashes of logs present at migration are computed by
	// backfillChain in the same transaction.
	`
ALTER TABLE users ADD COLUMN chain BLOB NOT NULL
	DEFAULT X'0000000000000000000000000000000000000000000000000000000000000000'
	CHECK (length(chain) = 32);
CREATE TABLE chain (
	user_id INTEGER NOT NULL REFERENCES users (id),
	pos     INTEGER NOT NULL CHECK (pos >= 1),
	hash    BLOB    NOT NULL CHECK (length(hash) = 32),
	PRIMARY KEY (user_id, pos)
) WITHOUT ROWID;
CREATE TRIGGER chain_never_updated BEFORE UPDATE ON chain
BEGIN
	SELECT RAISE(ABORT, 'spool: a chain hash never changes');
END;
CREATE TRIGGER chain_never_deleted BEFORE DELETE ON chain
BEGIN
	SELECT RAISE(ABORT, 'spool: a chain hash is never deleted');
END;
`,
	// 4: each log's usage (spool.Quotas): the bytes of the entries
	// compaction has not deleted and of the checkpoint, kept by the append
	// and compaction transactions; computed here for the logs present.
	`
ALTER TABLE users ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0 CHECK (bytes >= 0);
UPDATE users SET bytes =
	coalesce((SELECT sum(size) FROM entries WHERE entries.user_id = users.id), 0) +
	coalesce((SELECT length(data) FROM checkpoints WHERE checkpoints.user_id = users.id), 0);
`,
	// 5: the spool key the deliveries are signed with (spool.KeyKeeper),
	// recorded by the first server or cspool deliver to write.
	`
CREATE TABLE spool_key (
	k   INTEGER PRIMARY KEY CHECK (k = 1),
	key BLOB NOT NULL CHECK (length(key) = 64)
);
`,
	// 6: the requests appended once (spool.OnceAppender): the API's
	// timestamp, key id and nonce of each unconditional append (the
	// timestamp first: new records go to the same pages), the digest of its
	// signed request, the position and count it got, and when the record
	// may go (Unix seconds). Written in the append's transaction; append
	// groups drop the expired among the oldest (spool.OncePrune each), by
	// the primary key, which starts with the timestamp.
	`
CREATE TABLE once (
	id      BLOB    PRIMARY KEY CHECK (length(id) = 32),
	digest  BLOB    NOT NULL CHECK (length(digest) = 32),
	pos     INTEGER NOT NULL CHECK (pos >= 1),
	n       INTEGER NOT NULL CHECK (n >= 1),
	expires INTEGER NOT NULL
) WITHOUT ROWID;
`,
	// 7: since when every device that read a log said it reads entry
	// format 3 (spool.ReaderFormats), Unix seconds; NULL: not so.
	`
ALTER TABLE users ADD COLUMN reads3_since INTEGER;
`,
	// 8: the same for entry format 4 (command version 2). A log made from
	// this version on has every read recorded from its start: the append
	// that makes its row sets both times to 0 (upsertUserSQL); the logs
	// present keep NULL until a read says it.
	`
ALTER TABLE users ADD COLUMN reads4_since INTEGER;
`,
	// 9: the spool keys replaced (spool.KeyHistory): each key a
	// replacement took out of spool_key and the key recorded over it, in
	// the order of the replacements. Written in ReplaceSpoolKey's
	// transaction.
	`
CREATE TABLE spool_key_replaced (
	seq         INTEGER PRIMARY KEY,
	key         BLOB NOT NULL CHECK (length(key) = 64),
	replaced_by BLOB NOT NULL CHECK (length(replaced_by) = 64)
);
`,
	// 10: each replacement's signed statement (spool.KeyChain): sig is
	// the Ed25519 signature, by replaced_by, of
	// keys.SuccessionMessage(replaced_by, key), written by the first
	// server started with replaced_by; NULL until then.
	`
ALTER TABLE spool_key_replaced ADD COLUMN sig BLOB CHECK (sig IS NULL OR length(sig) = 64);
`,
}

// afterStep runs the part of migration step v (to version v) that SQL alone
// cannot do, in the migration's transaction.
func afterStep(ctx context.Context, tx *sql.Tx, v int) error {
	if v == 3 {
		return backfillChain(ctx, tx)
	}
	return nil
}

// SchemaVersion is the schema version this package writes.
const SchemaVersion = len(migrations)

// migrate brings the database to SchemaVersion in one IMMEDIATE transaction,
// so processes opening the same new spool at once apply each step once.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.wdb.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return fmt.Errorf("starting migration: %w", classify(err))
	}
	defer tx.Rollback()
	var appID, version int
	if err := tx.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return fmt.Errorf("reading application id: %w", classify(err))
	}
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("reading schema version: %w", classify(err))
	}
	if appID != 0 && appID != applicationID {
		return fmt.Errorf("application id %#x: %w", appID, ErrNotSpool)
	}
	if appID == 0 && version != 0 {
		return fmt.Errorf("schema version %d without application id: %w", version, ErrNotSpool)
	}
	if version > SchemaVersion {
		return fmt.Errorf("schema version %d, this program knows up to %d (upgrade cspool): %w",
			version, SchemaVersion, ErrNewerSchema)
	}
	if version == SchemaVersion {
		return nil
	}
	if appID == 0 {
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&n); err != nil {
			return fmt.Errorf("inspecting database: %w", classify(err))
		}
		if n != 0 {
			return fmt.Errorf("database has %d schema objects but no application id: %w", n, ErrNotSpool)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", applicationID)); err != nil {
			return fmt.Errorf("setting application id: %w", classify(err))
		}
	}
	for v := version; v < SchemaVersion; v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrating schema to version %d: %w", v+1, classify(err))
		}
		if err := afterStep(ctx, tx, v+1); err != nil {
			return fmt.Errorf("migrating schema to version %d: %w", v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", SchemaVersion)); err != nil {
		return fmt.Errorf("setting schema version: %w", classify(err))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing migration: %w", classify(err))
	}
	s.log.Info("spool: schema migrated", "dir", s.dir, "from", version, "to", SchemaVersion)
	return nil
}
