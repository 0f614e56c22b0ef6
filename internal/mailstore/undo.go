package mailstore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

// The undo log. While capture.qseq names a queued change (queue.go),
// triggers on every table an apply writes record, in table undo, one row
// per row change: the table (tbl), what happened (op: ins, upd or del),
// the row's primary key as the change left it (k0, k1...: ins and upd) and
// its values before the change (v0, v1... in the table's column order: upd
// and del). The values are copied as SQLite holds them, with no affinity
// on the way, so every one, blobs and text holding a NUL included, comes
// back byte for byte.
//
// undoQueued puts the rows back newest first with one statement per chunk
// of records, an INSERT of the records into the view undo_replay: its
// INSTEAD OF triggers, one per table and op, delete the row inserted,
// update the row back, or insert the row deleted. SQLite compiles the
// triggers once per statement, so an undo parses no SQL per row change.
//
// A record of schema version 15 or before holds instead, in stmt, an SQL
// statement that puts the row back (built by the triggers with quote());
// those left from before the upgrade are run one by one, after the newer
// records (they are older than any of them).
//
// undoTables lists every table an apply writes. A table added to the apply
// must be added here, or an undo would leave its rows behind (the tests
// compare the state after an undo with the state before, field by field).
// The triggers take their columns from the schema, and are made again
// whenever the schema version moves, so a column added later is covered
// (undo gains a v column if a table outgrows those it has).
var undoTables = []string{"state", "mailboxes", "subscriptions", "keywords", "bodies", "forms", "structures", "blobs", "messages", "entries", "rejected"}

// undoKey is an extra column of the undo row and the value a trigger
// gives it.
type undoKey struct{ col, val string }

// undoKeys are the extra columns of the undo row some tables fill, by op:
// where a message was and went (for the changes IMAP sessions must hear),
// and which mailbox a mailboxes row is.
var undoKeys = map[string]map[string][]undoKey{
	"messages": {
		"ins": {{"mb2", "(SELECT id FROM mailboxes WHERE mid = NEW.mailbox)"}, {"uid2", "NEW.uid"}},
		"upd": {{"mb1", "(SELECT id FROM mailboxes WHERE mid = OLD.mailbox)"}, {"uid1", "OLD.uid"},
			{"mb2", "(SELECT id FROM mailboxes WHERE mid = NEW.mailbox)"}, {"uid2", "NEW.uid"}},
		"del": {{"mb1", "(SELECT id FROM mailboxes WHERE mid = OLD.mailbox)"}, {"uid1", "OLD.uid"}},
	},
	"mailboxes": {
		"ins": {{"mbox", "NEW.id"}},
		"upd": {{"mbox", "NEW.id"}},
		"del": {{"mbox", "OLD.id"}},
	},
}

// undoColumns limits, for some tables, the columns an undo puts back to
// those a provisional apply writes: the position moves with the log, also
// while provisional changes stay applied on top, and must not go back
// with them.
var undoColumns = map[string][]string{"state": {"k", "next_uidvalidity"}}

// makeUndoTriggers (re)creates the undo triggers of every table in
// undoTables from its current columns, and the view undo_replay with the
// triggers that put the rows back.
func makeUndoTriggers(ctx context.Context, tx *sql.Tx) error {
	type table struct {
		name     string
		cols, pk []string
	}
	var tables []table
	nv, nk := 0, 0
	for _, t := range undoTables {
		cols, pk, err := tableColumns(ctx, tx, t)
		if err != nil {
			return err
		}
		if only, ok := undoColumns[t]; ok {
			cols = only
		}
		tables = append(tables, table{t, cols, pk})
		nv, nk = max(nv, len(cols)), max(nk, len(pk))
	}
	// The view is made again below, after any column undo gains, and
	// dropping it drops the replay triggers.
	if _, err := tx.ExecContext(ctx, "DROP VIEW IF EXISTS undo_replay"); err != nil {
		return fmt.Errorf("making the undo triggers: %w", err)
	}
	have, _, err := tableColumns(ctx, tx, "undo")
	if err != nil {
		return err
	}
	for _, c := range append(undoSlots("v", nv), undoSlots("k", nk)...) {
		if !slices.Contains(have, c) {
			if _, err := tx.ExecContext(ctx, "ALTER TABLE undo ADD COLUMN "+c); err != nil {
				return fmt.Errorf("making the undo triggers: %w", err)
			}
		}
	}
	stmts := []string{"CREATE VIEW undo_replay AS SELECT * FROM undo"}
	names := make([]string, len(tables))
	for i, t := range tables {
		stmts = append(stmts, undoTriggerSQL(t.name, t.cols, t.pk)...)
		names[i] = "'" + t.name + "'"
	}
	// A record no trigger puts back stops the undo.
	stmts = append(stmts, "CREATE TRIGGER undo_replay_unknown INSTEAD OF INSERT ON undo_replay"+
		" WHEN NEW.tbl IS NULL OR NEW.tbl NOT IN ("+strings.Join(names, ", ")+") OR NEW.op IS NULL OR NEW.op NOT IN ('ins', 'upd', 'del')"+
		" BEGIN SELECT RAISE(ABORT, 'mailstore: an undo record of no known table or kind'); END")
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("making the undo triggers (%.80s): %w", q, err)
		}
	}
	return nil
}

// undoSlots returns the names of n undo columns: prefix0, prefix1...
func undoSlots(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(prefix, i)
	}
	return out
}

// tableColumns returns a table's columns and its primary key columns.
func tableColumns(ctx context.Context, tx *sql.Tx, table string) (cols, pk []string, err error) {
	rows, err := tx.QueryContext(ctx, "SELECT name, pk FROM pragma_table_info(?) ORDER BY cid", table)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the columns of %s: %w", table, err)
	}
	defer rows.Close()
	type keyCol struct {
		name string
		n    int
	}
	var keys []keyCol
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, nil, fmt.Errorf("reading the columns of %s: %w", table, err)
		}
		cols = append(cols, name)
		if n > 0 {
			keys = append(keys, keyCol{name, n})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading the columns of %s: %w", table, err)
	}
	if len(cols) == 0 || len(keys) == 0 {
		return nil, nil, fmt.Errorf("table %s has no columns or no primary key", table)
	}
	pk = make([]string, len(keys))
	for _, k := range keys {
		pk[k.n-1] = k.name
	}
	return cols, pk, nil
}

// undoTriggerSQL returns the statements that drop and create table's three
// undo triggers, and create its three replay triggers on undo_replay (made
// anew with the view). Every table in undoTables has a primary key (an
// INTEGER PRIMARY KEY for rowid tables), by which the replay finds the
// row.
func undoTriggerSQL(table string, cols, pk []string) []string {
	vs, ks := undoSlots("v", len(cols)), undoSlots("k", len(pk))
	prefixed := func(side string, names []string) []string {
		out := make([]string, len(names))
		for i, c := range names {
			out[i] = side + "." + c
		}
		return out
	}
	// What each op records: the key after the change, the values before.
	rec := map[string]struct{ cols, vals []string }{
		"ins": {ks, prefixed("NEW", pk)},
		"upd": {append(append([]string{}, ks...), vs...), append(prefixed("NEW", pk), prefixed("OLD", cols)...)},
		"del": {vs, prefixed("OLD", cols)},
	}
	where := make([]string, len(pk))
	for i, c := range pk {
		where[i] = c + " = NEW." + ks[i]
	}
	set := make([]string, len(cols))
	for i, c := range cols {
		set[i] = c + " = NEW." + vs[i]
	}
	replay := map[string]string{
		"ins": "DELETE FROM " + table + " WHERE " + strings.Join(where, " AND "),
		"upd": "UPDATE " + table + " SET " + strings.Join(set, ", ") + " WHERE " + strings.Join(where, " AND "),
		"del": "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(prefixed("NEW", vs), ", ") + ")",
	}
	when := map[string]string{"ins": "AFTER INSERT", "upd": "AFTER UPDATE", "del": "BEFORE DELETE"}
	var out []string
	for _, op := range []string{"ins", "upd", "del"} {
		c := append([]string{"qseq", "tbl", "op"}, rec[op].cols...)
		v := append([]string{"(SELECT qseq FROM capture)", "'" + table + "'", "'" + op + "'"}, rec[op].vals...)
		for _, k := range undoKeys[table][op] {
			c, v = append(c, k.col), append(v, k.val)
		}
		name := "undo_" + table + "_" + op
		out = append(out, "DROP TRIGGER IF EXISTS "+name,
			"CREATE TRIGGER "+name+" "+when[op]+" ON "+table+
				" WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN "+
				"INSERT INTO undo ("+strings.Join(c, ", ")+") VALUES ("+strings.Join(v, ", ")+"); END",
			"CREATE TRIGGER undo_replay_"+table+"_"+op+" INSTEAD OF INSERT ON undo_replay"+
				" WHEN NEW.tbl = '"+table+"' AND NEW.op = '"+op+"' BEGIN "+replay[op]+"; END")
	}
	return out
}

// undoChunk is how many undo records one statement puts back: it holds
// them in memory (old rows with their blobs among them).
const undoChunk = 1024

// undoChunkStart finds where the next chunk of undo records to put back
// starts: the lowest seq of the undoChunk newest records of the queued
// changes from qseq on. The unary + keeps SQLite off the index on qseq:
// through it, each chunk read and sorted every record left, and a
// take-back of five queued changes of 20,000 messages each took 133 s,
// 80 of them here (TestUndoChunkStartPlan).
const undoChunkStart = "SELECT min(seq) FROM (SELECT seq FROM undo WHERE +qseq >= ? AND stmt IS NULL ORDER BY seq DESC LIMIT ?)"

// undoQueued takes back the provisional applies of the queued changes
// from seq on, newest first, and forgets their undo records. Nothing it
// runs is recorded again, and the never-decrease triggers let it through.
// tx is the transaction, or an applier in it (whose statements, the
// replay's with its triggers compiled, are prepared once on the writer).
func undoQueued(ctx context.Context, tx execQueryer, seq int64) error {
	if _, err := tx.ExecContext(ctx, "UPDATE capture SET qseq = NULL, undoing = 1"); err != nil {
		return fmt.Errorf("starting an undo: %w", err)
	}
	// A body's blob comes back before the body it refers to.
	if _, err := tx.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON"); err != nil {
		return fmt.Errorf("starting an undo: %w", err)
	}
	if err := replayUndo(ctx, tx, seq); err != nil {
		return err
	}
	if err := replayUndoStatements(ctx, tx, seq); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE capture SET undoing = 0"); err != nil {
		return fmt.Errorf("ending an undo: %w", err)
	}
	return nil
}

// replayUndo puts back the rows of the undo records of the queued changes
// from seq on, newest first, a chunk of records per statement, and
// forgets the records.
func replayUndo(ctx context.Context, tx execQueryer, seq int64) error {
	for {
		var from sql.NullInt64
		if err := tx.QueryRowContext(ctx, undoChunkStart, seq, undoChunk).Scan(&from); err != nil {
			return fmt.Errorf("reading the undo log: %w", err)
		}
		if !from.Valid {
			return nil
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO undo_replay SELECT * FROM undo WHERE qseq >= ? AND stmt IS NULL AND seq >= ? ORDER BY seq DESC",
			seq, from.Int64); err != nil {
			return fmt.Errorf("undoing provisional changes: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM undo WHERE qseq >= ? AND stmt IS NULL AND seq >= ?", seq, from.Int64); err != nil {
			return fmt.Errorf("clearing the undo log: %w", err)
		}
	}
}

// replayUndoStatements runs, newest first, the statements of the undo
// records of schema version 15 and before for the queued changes from
// seq on, and forgets the records.
func replayUndoStatements(ctx context.Context, db execQueryer, seq int64) error {
	// Each statement runs once: on the transaction, not prepared on the
	// writer for good by an applier.
	tx := db
	if a, ok := db.(*applier); ok {
		tx = a.tx
	}
	const chunk = 256
	for {
		rows, err := tx.QueryContext(ctx, "SELECT seq, stmt FROM undo WHERE qseq >= ? AND stmt IS NOT NULL ORDER BY seq DESC LIMIT ?", seq, chunk)
		if err != nil {
			return fmt.Errorf("reading the undo log: %w", err)
		}
		var seqs []int64
		var stmts []string
		for rows.Next() {
			var n int64
			var st string
			if err := rows.Scan(&n, &st); err != nil {
				rows.Close()
				return fmt.Errorf("reading the undo log: %w", err)
			}
			seqs, stmts = append(seqs, n), append(stmts, st)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("reading the undo log: %w", err)
		}
		if len(stmts) == 0 {
			return nil
		}
		for _, st := range stmts {
			if _, err := tx.ExecContext(ctx, st); err != nil {
				return fmt.Errorf("undoing a provisional change (%.300s): %w", st, err)
			}
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM undo WHERE seq >= ? AND qseq >= ? AND stmt IS NOT NULL", seqs[len(seqs)-1], seq); err != nil {
			return fmt.Errorf("clearing the undo log: %w", err)
		}
	}
}
