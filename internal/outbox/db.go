package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"cspool/internal/devicedb"
)

// applicationID marks the file as a cspool outbox ("cSo1").
const applicationID = 0x63536f31

// migrations[i] brings the schema from version i to i+1 (PRAGMA
// user_version). Append only.
var migrations = [...]string{
	`
CREATE TABLE messages (
	qid        INTEGER PRIMARY KEY AUTOINCREMENT,
	message_id TEXT    NOT NULL,
	digest     BLOB    NOT NULL,
	sender     TEXT    NOT NULL,
	utf8       INTEGER NOT NULL,
	body_type  TEXT    NOT NULL,
	ret        TEXT    NOT NULL,
	envid      TEXT    NOT NULL,
	data       BLOB    NOT NULL,
	accepted   INTEGER NOT NULL,
	sent_box   BLOB,
	sent_from  INTEGER NOT NULL,
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_try   INTEGER NOT NULL,
	last_error TEXT    NOT NULL DEFAULT '',
	done       INTEGER NOT NULL DEFAULT 0,
	sent_copy  BLOB
);
CREATE INDEX messages_due ON messages (done, qid);
CREATE INDEX messages_message_id ON messages (message_id);
CREATE TABLE recipients (
	qid     INTEGER NOT NULL REFERENCES messages (qid) ON DELETE CASCADE,
	idx     INTEGER NOT NULL,
	address TEXT    NOT NULL,
	notify  TEXT    NOT NULL,
	orcpt   TEXT    NOT NULL,
	state   INTEGER NOT NULL DEFAULT 0,
	reply   TEXT    NOT NULL DEFAULT '',
	at      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (qid, idx)
) WITHOUT ROWID;
CREATE TABLE filings (
	fid        INTEGER PRIMARY KEY AUTOINCREMENT,
	qid        INTEGER NOT NULL REFERENCES messages (qid) ON DELETE CASCADE,
	kind       INTEGER NOT NULL,
	message_id TEXT    NOT NULL,
	mailbox    BLOB,
	from_uid   INTEGER NOT NULL,
	data       BLOB,
	created    INTEGER NOT NULL,
	done       INTEGER NOT NULL DEFAULT 0,
	placed     BLOB
);
CREATE INDEX filings_pending ON filings (done, fid);
`,
	// The queue clock: the milliseconds the outbox has run, by the
	// monotonic clock, which setting the device's clock does not move
	// (queue.go, queueClock). A message's queued is the queue clock at
	// its submission; the give-up limit counts from there. A message
	// queued before it gets its age by the device's clock, as before.
	`
CREATE TABLE clock (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	ms INTEGER NOT NULL
);
INSERT INTO clock (id, ms) VALUES (1, 0);
ALTER TABLE messages ADD COLUMN queued INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET queued = -max(0, CAST(strftime('%s', 'now') AS INTEGER) * 1000 - accepted);
`,
	// The outbox's home (home.go): the machine and file it was opened in
	// last, and the messages held because it was found in another.
	`
CREATE TABLE home (
	k       INTEGER PRIMARY KEY CHECK (k = 1),
	machine TEXT NOT NULL,
	file    TEXT NOT NULL
);
ALTER TABLE messages ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
`,
	// The name of the held queue (home.go, checkHome): the release names
	// it. Messages held before it was kept get one at the next open.
	`
ALTER TABLE home ADD COLUMN hold TEXT NOT NULL DEFAULT '';
`,
	// A message submitted without a Message-ID is told by its content
	// (submit.ContentDigest) in Sent. The copies clients appended into
	// Sent before submitting (filing.go, noteClientCopy), kept across a
	// restart: they were in memory only, and a restart between a client's
	// APPEND and its submission left two copies in Sent.
	`
ALTER TABLE messages ADD COLUMN content BLOB;
CREATE INDEX messages_content ON messages (content) WHERE content IS NOT NULL;
CREATE TABLE client_copies (
	message_id TEXT    NOT NULL,
	content    BLOB,
	mailbox    BLOB    NOT NULL,
	uid        INTEGER NOT NULL,
	at         INTEGER NOT NULL
);
CREATE INDEX client_copies_message_id ON client_copies (message_id);
CREATE INDEX client_copies_content ON client_copies (content) WHERE content IS NOT NULL;
`,
}

// Recipient states.
const (
	rcptPending = 0
	rcptRelayed = 1
	rcptFailed  = 2
)

// Filing kinds.
const (
	fileSent   = 1 // the copy in Sent
	fileBounce = 2 // a delivery status notification in INBOX
)

// openDB opens (creating, mode 0600) and migrates the outbox database,
// encrypted at rest when key is not nil (package devicedb; a plaintext
// outbox is encrypted in place).
func openDB(path string, key *devicedb.Key) (*sql.DB, error) {
	db, err := devicedb.Open(path, devicedb.Options{Key: key, AppID: applicationID,
		Params: "_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"})
	if err != nil {
		return nil, fmt.Errorf("opening outbox: %w", err)
	}
	// One connection: every write is serialised, and reads see them.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	if err := migrate(context.Background(), db); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening outbox %s: %w", path, err)
	}
	return db, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	var appID, version int
	if err := db.QueryRowContext(ctx, "PRAGMA application_id").Scan(&appID); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if appID != 0 && appID != applicationID {
		return errors.New("not a cspool outbox (another program's SQLite file)")
	}
	if appID == 0 && version != 0 {
		return errors.New("not a cspool outbox (an SQLite file with other tables)")
	}
	if version > len(migrations) {
		return fmt.Errorf("outbox schema version %d is newer than this program (%d): upgrade cspool", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		stmts := migrations[v]
		if v == 0 {
			stmts += fmt.Sprintf("PRAGMA application_id = %d;", applicationID)
		}
		stmts += fmt.Sprintf("PRAGMA user_version = %d;", v+1)
		if _, err := tx.ExecContext(ctx, stmts); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrating to version %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrating to version %d: %w", v+1, err)
		}
	}
	return nil
}

// inTx runs fn in one write transaction.
func inTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func joinNotify(n []string) string { return strings.Join(n, ",") }

func splitNotify(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
