package mailstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ncruces/go-sqlite3"

	"cspool/internal/command"
)

// A restore's state, staged.
//
// Restore and Adopt do not hold the state they restore: its messages and
// entry records are written, as they are decoded, into tables made for the
// restore (restore_messages, restore_entries), in the
// database file itself, whose pages SQLite writes out to the WAL past the
// writer's cache (temporary tables would be held in memory: temp_store =
// memory), stageRun rows a transaction, each committed (the store's write
// lock is held while a run is written, not while the state is read). The
// checks against what the store holds, the bodies to fetch, the new rows
// and the changes sessions hear are queries over them and the store's
// tables; the last transaction, which writes the state, drops them. The
// old state changes only at that commit: a restore that fails before
// drops the tables (dropStaged), and after a crash they go when the store
// is opened (dropLeftStage); a committed restore leaves none of them. Each
// message and entry record is checked as it is staged as Snapshot.check
// checks it (sorted by id, each field in its range), the (mailbox, UID)
// pairs and the ids of both entry lists by the tables' unique keys.
// Statements that write many rows run on stageRun rows at a time: one
// statement keeps the original of every page it changes in memory
// (recount).

// stageRun is how many rows one statement of a restore writes.
const stageRun = 4096

// restoreChangesMax bounds the per-message changes a restore lists: past
// it, a mailbox's are one MailboxRestored.
const restoreChangesMax = 10000

var stageTables = []string{
	`CREATE TABLE restore_messages (
		n        INTEGER PRIMARY KEY,
		id       BLOB    NOT NULL,
		mailbox  INTEGER NOT NULL,
		uid      INTEGER NOT NULL,
		flags    INTEGER NOT NULL,
		keywords TEXT    NOT NULL,
		date     INTEGER NOT NULL,
		size     INTEGER NOT NULL,
		modseq   INTEGER NOT NULL,
		body     INTEGER NOT NULL,
		digest   BLOB    NOT NULL,
		UNIQUE (mailbox, uid))`,
	"CREATE INDEX restore_messages_body ON restore_messages (body)",
	"CREATE INDEX restore_messages_id ON restore_messages (id)",
	`CREATE TABLE restore_entries (
		n   INTEGER PRIMARY KEY,
		id  BLOB    NOT NULL UNIQUE,
		pos INTEGER NOT NULL,
		old INTEGER NOT NULL)`,
}

// stager writes a state's messages and entry records into the restore's
// tables as they are decoded, checking each. It holds up to stageRun of
// them and writes them in a transaction of their own (flush), so that the
// store's write lock is held while rows are written, not while the state
// is read, decrypted and decoded: a local change waits for one run of
// rows, not for the whole state (at a million messages, minutes).
type stager struct {
	ctx context.Context
	s   *Store
	tx  *sql.Tx // the last step's transaction, which drops the tables (end)

	msgs []stagedMessage // decoded, not yet written
	ents []stagedEntry

	messages   int64
	entries    int64 // records of both lists
	superseded int64
	prevMsg    []byte
	prevEnt    [2][]byte // the last id of Entries, of Superseded
	// failed is an error of the store (not of the state) met while
	// staging: the restore ends with it, not with a *StateError.
	failed error
}

// stagedMessage is a message decoded, waiting for its run to be written.
type stagedMessage struct {
	n                               int64
	id, digest                      []byte
	mailbox, uid, flags, date, size int64
	modseq, body                    int64
	keywords, name                  string // name: its mailbox's, for errors
}

// stagedEntry is an entry record decoded, waiting for its run.
type stagedEntry struct {
	n   int64
	rec [24]byte
	old bool
}

// stageNames are the restore's tables.
// (restore_mailboxes is an older version's, which a crash may have left.)
var stageNames = []string{"restore_messages", "restore_entries", "restore_mailboxes",
	"restore_new_messages", "restore_new_entries", "restore_missing"}

// dropStageTables drops the restore's tables that exist.
func dropStageTables(ctx context.Context, tx *sql.Tx) error {
	for _, t := range stageNames {
		if _, err := tx.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			return fmt.Errorf("dropping the staged state: %w", err)
		}
	}
	return nil
}

// begin makes the restore's tables, after dropping those a restore
// interrupted by a crash left, in a transaction of its own.
func (g *stager) begin() error {
	return g.s.writeTx(g.ctx, "staging the state", func(tx *sql.Tx) error {
		if err := dropStageTables(g.ctx, tx); err != nil {
			return err
		}
		for _, q := range stageTables {
			if _, err := tx.ExecContext(g.ctx, q); err != nil {
				return fmt.Errorf("staging the state: %w", err)
			}
		}
		return makeCopies(g.ctx, tx)
	})
}

// end drops the tables, in the last step's transaction.
func (g *stager) end() error {
	return dropStageTables(g.ctx, g.tx)
}

// flush writes the rows decoded since the last run in one transaction
// under the store's write lock. Two messages at one (mailbox, UID), or an
// id both applied and superseded, break the tables' unique keys: the
// state is malformed (ErrSnapshot). Any other error is the store's
// (failed).
func (g *stager) flush() error {
	if len(g.msgs) == 0 && len(g.ents) == 0 {
		return nil
	}
	var bad error
	err := g.s.writeTx(g.ctx, "staging the state", func(tx *sql.Tx) error {
		insMsg, err := tx.PrepareContext(g.ctx, `INSERT INTO restore_messages
			(n, id, mailbox, uid, flags, keywords, date, size, modseq, body, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return fmt.Errorf("staging the state: %w", err)
		}
		defer insMsg.Close()
		for i := range g.msgs {
			m := &g.msgs[i]
			_, err := insMsg.ExecContext(g.ctx, m.n, m.id, m.mailbox, m.uid, m.flags, m.keywords, m.date, m.size, m.modseq, m.body, m.digest)
			if errors.Is(err, sqlite3.CONSTRAINT) {
				bad = fmt.Errorf("%w: two messages at UID %d of mailbox %q", ErrSnapshot, m.uid, m.name)
				return bad
			}
			if err != nil {
				return fmt.Errorf("staging message %x: %w", m.id, err)
			}
		}
		insEnt, err := tx.PrepareContext(g.ctx, "INSERT INTO restore_entries (n, id, pos, old) VALUES (?, ?, ?, ?)")
		if err != nil {
			return fmt.Errorf("staging the state: %w", err)
		}
		defer insEnt.Close()
		for i := range g.ents {
			e := &g.ents[i]
			_, err := insEnt.ExecContext(g.ctx, e.n, e.rec[:16], int64(binary.BigEndian.Uint64(e.rec[16:24])), b2i(e.old))
			if errors.Is(err, sqlite3.CONSTRAINT) {
				bad = fmt.Errorf("%w: entry %x both applied and superseded", ErrSnapshot, e.rec[:16])
				return bad
			}
			if err != nil {
				return fmt.Errorf("staging entry %x: %w", e.rec[:16], err)
			}
		}
		return nil
	})
	g.msgs, g.ents = g.msgs[:0], g.ents[:0]
	if err != nil && bad == nil {
		g.failed = err
	}
	if bad != nil {
		return bad
	}
	return err
}

// full writes the rows held once there are stageRun of them.
func (g *stager) full() error {
	if len(g.msgs)+len(g.ents) < stageRun {
		return nil
	}
	return g.flush()
}

// message checks one message of sn, whose position and mailboxes are
// decoded, and stages it.
func (g *stager) message(sn *Snapshot, m *SnapMessage) error {
	if g.prevMsg != nil && bytes.Compare(g.prevMsg, m.ID) >= 0 {
		return fmt.Errorf("%w: messages not sorted by id, or an id twice (%x)", ErrSnapshot, m.ID)
	}
	if len(m.ID) != command.IDSize || len(m.Digest) != sha256.Size || m.Body == 0 || m.Body > sn.Position ||
		int(m.Mailbox) >= len(sn.Mailboxes) || m.UID == 0 || m.UID >= sn.Mailboxes[m.Mailbox].UIDNext {
		return fmt.Errorf("%w: message %x", ErrSnapshot, m.ID)
	}
	g.prevMsg = append(g.prevMsg[:0], m.ID...)
	g.messages++
	g.msgs = append(g.msgs, stagedMessage{n: g.messages, id: bytes.Clone(m.ID), digest: bytes.Clone(m.Digest),
		mailbox: int64(m.Mailbox), uid: int64(m.UID), flags: int64(m.Flags), date: m.Date, size: m.Size,
		modseq: int64(m.ModSeq), body: int64(m.Body), keywords: m.Keywords, name: sn.Mailboxes[m.Mailbox].Name})
	return g.full()
}

// entry checks one record of Entries (old false, positions up to sn's)
// or of Superseded, and stages it.
func (g *stager) entry(sn *Snapshot, rec []byte, old bool) error {
	what, k, limit := "entries", 0, sn.Position
	if old {
		what, k, limit = "superseded entries", 1, 0
	}
	id := rec[:16]
	if p := binary.BigEndian.Uint64(rec[16:24]); p == 0 || (limit != 0 && p > limit) {
		return fmt.Errorf("%w: %s: entry %x at position %d", ErrSnapshot, what, id, p)
	}
	if g.prevEnt[k] != nil && bytes.Compare(g.prevEnt[k], id) >= 0 {
		return fmt.Errorf("%w: %s not sorted by id, or an id twice (%x)", ErrSnapshot, what, id)
	}
	g.prevEnt[k] = append(g.prevEnt[k][:0], id...)
	g.entries++
	if old {
		g.superseded++
	}
	g.ents = append(g.ents, stagedEntry{n: g.entries, rec: [24]byte(rec[:24]), old: old})
	return g.full()
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// stageSnapshot stages a state held whole (Restore, Adopt): it was
// checked when decoded.
func stageSnapshot(sn *Snapshot) func(g *stager) (*Snapshot, error) {
	return func(g *stager) (*Snapshot, error) {
		for i := range sn.Messages {
			if err := g.message(sn, &sn.Messages[i]); err != nil {
				return nil, err
			}
		}
		for old, list := range [][]byte{sn.Entries, sn.Superseded} {
			for b := list; len(b) >= 24; b = b[24:] {
				if err := g.entry(sn, b[:24], old == 1); err != nil {
					return nil, err
				}
			}
		}
		head := *sn
		head.Messages, head.Entries, head.Superseded = nil, nil, nil
		return &head, nil
	}
}

// stageDecoded decodes an encoded state from d into the tables
// (RestoreFrom, AdoptFrom), returning it without its messages and entry
// lists, checked as ReadSnapshot checks it.
func stageDecoded(d *snapDecoder) func(g *stager) (*Snapshot, error) {
	return func(g *stager) (*Snapshot, error) {
		d.message, d.entry = g.message, g.entry
		sn, err := d.snapshot()
		if g.failed != nil {
			return nil, g.failed
		}
		if err != nil {
			return nil, snapshotError(err)
		}
		if err := sn.check(); err != nil {
			return nil, err
		}
		return sn, nil
	}
}

// stagedLookup answers checkHistory from the staged entry lists.
type stagedLookup struct {
	ctx        context.Context
	tx         *sql.Tx
	byID       *sql.Stmt
	superseded bool
}

func (l *stagedLookup) entry(id command.ID) (uint64, bool, bool, error) {
	var pos, old int64
	err := l.byID.QueryRowContext(l.ctx, id[:]).Scan(&pos, &old)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, false, nil
	}
	if err != nil {
		return 0, false, false, fmt.Errorf("reading the staged entries: %w", err)
	}
	return uint64(pos), old == 1, true, nil
}

func (l *stagedLookup) at(p uint64) (string, error) {
	var id []byte
	err := l.tx.QueryRowContext(l.ctx, "SELECT id FROM restore_entries WHERE pos = ? AND old = 0 ORDER BY n LIMIT 1", int64(p)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "no entry", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the staged entries: %w", err)
	}
	return "entry " + command.ID(id).String(), nil
}

func (l *stagedLookup) anySuperseded() bool { return l.superseded }

func (l *stagedLookup) forked() ([]byte, uint64, bool, error) {
	var id []byte
	var body int64
	err := l.tx.QueryRowContext(l.ctx, `SELECT r.id, r.body FROM restore_messages r
		JOIN messages m ON m.id = r.id JOIN bodies b ON b.bid = m.body
		WHERE b.digest != r.digest ORDER BY r.n LIMIT 1`).Scan(&id, &body)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("comparing the staged messages: %w", err)
	}
	return id, uint64(body), true, nil
}

// mapLookup answers checkHistory from a state held whole and the
// messages readOld read (Covers).
type mapLookup struct {
	in, old map[command.ID]uint64
	sn      *Snapshot
	held    map[command.ID]oldMessage
}

func newMapLookup(sn *Snapshot, held map[command.ID]oldMessage) *mapLookup {
	return &mapLookup{in: listPositions(sn.Entries), old: listPositions(sn.Superseded), sn: sn, held: held}
}

func (l *mapLookup) entry(id command.ID) (uint64, bool, bool, error) {
	if p, ok := l.in[id]; ok {
		return p, false, true, nil
	}
	if p, ok := l.old[id]; ok {
		return p, true, true, nil
	}
	return 0, false, false, nil
}

func (l *mapLookup) at(p uint64) (string, error) {
	for b := l.sn.Entries; len(b) >= 24; b = b[24:] {
		if binary.BigEndian.Uint64(b[16:24]) == p {
			return "entry " + command.ID(b[:16]).String(), nil
		}
	}
	return "no entry", nil
}

func (l *mapLookup) anySuperseded() bool { return len(l.old) > 0 }

func (l *mapLookup) forked() ([]byte, uint64, bool, error) {
	for _, m := range l.sn.Messages {
		old, ok := l.held[command.ID(m.ID)]
		if ok && !bytes.Equal(old.digest[:], m.Digest) {
			return m.ID, m.Body, true, nil
		}
	}
	return nil, 0, false, nil
}
