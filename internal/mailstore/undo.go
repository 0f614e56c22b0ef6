package mailstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// The undo log. While capture.qseq names a queued change (queue.go),
// triggers on every table an apply writes record, in table undo, one SQL
// statement per row change that puts the row back as it was; undoQueued
// runs them newest first. The statements are built by SQLite itself with
// quote() (text as the cast of its bytes), so every value, blobs included,
// comes back byte for byte.
//
// undoTables lists every table an apply writes. A table added to the apply
// must be added here, or an undo would leave its rows behind (the tests
// compare the state after an undo with the state before, field by field).
// The triggers take their columns from the schema, and are made again
// whenever the schema version moves, so a column added later is covered.
var undoTables = []string{"state", "mailboxes", "subscriptions", "keywords", "bodies", "forms", "blobs", "messages", "entries", "rejected"}

// undoKeys are extra columns of the undo row some tables fill: where a
// message was and went (for the changes IMAP sessions must hear), and
// which mailbox a mailboxes row is.
var undoKeys = map[string]struct{ ins, upd, del string }{
	"messages": {
		ins: "mb2, uid2) VALUES (%s, (SELECT id FROM mailboxes WHERE mid = NEW.mailbox), NEW.uid",
		upd: "mb1, uid1, mb2, uid2) VALUES (%s, (SELECT id FROM mailboxes WHERE mid = OLD.mailbox), OLD.uid, (SELECT id FROM mailboxes WHERE mid = NEW.mailbox), NEW.uid",
		del: "mb1, uid1) VALUES (%s, (SELECT id FROM mailboxes WHERE mid = OLD.mailbox), OLD.uid",
	},
	"mailboxes": {
		ins: "mbox) VALUES (%s, NEW.id",
		upd: "mbox) VALUES (%s, NEW.id",
		del: "mbox) VALUES (%s, OLD.id",
	},
}

// undoColumns limits, for some tables, the columns an undo puts back to
// those a provisional apply writes: the position moves with the log, also
// while provisional changes stay applied on top, and must not go back
// with them.
var undoColumns = map[string][]string{"state": {"k", "next_uidvalidity"}}

// makeUndoTriggers (re)creates the undo triggers of every table in
// undoTables from its current columns.
func makeUndoTriggers(ctx context.Context, tx *sql.Tx) error {
	for _, t := range undoTables {
		cols, pk, err := tableColumns(ctx, tx, t)
		if err != nil {
			return err
		}
		if only, ok := undoColumns[t]; ok {
			cols = only
		}
		for _, q := range undoTriggerSQL(t, cols, pk) {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("making the undo triggers of %s: %w", t, err)
			}
		}
	}
	return nil
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
// undo triggers. Every table in undoTables has a primary key (an INTEGER
// PRIMARY KEY for rowid tables), which the undo statements use to find
// the row.
func undoTriggerSQL(table string, cols, pk []string) []string {
	// quote() stops a text at its first NUL (the rename's temporary names
	// have one): text goes as the blob of its bytes, cast back.
	q := func(side, c string) string {
		v := side + "." + c
		return "(CASE typeof(" + v + ") WHEN 'text' THEN 'CAST(' || quote(CAST(" + v + " AS BLOB)) || ' AS TEXT)' ELSE quote(" + v + ") END)"
	}
	where := func(side string) string {
		parts := make([]string, len(pk))
		for i, c := range pk {
			parts[i] = c + " = ' || " + q(side, c) + " || '"
		}
		return strings.Join(parts, " AND ")
	}
	var set, vals []string
	for _, c := range cols {
		set = append(set, c+" = ' || "+q("OLD", c)+" || '")
		vals = append(vals, "' || "+q("OLD", c)+" || '")
	}
	stmts := map[string]string{
		"ins": "'DELETE FROM " + table + " WHERE " + where("NEW") + "'",
		"upd": "'UPDATE " + table + " SET " + strings.Join(set, ", ") + " WHERE " + where("NEW") + "'",
		"del": "'INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.Join(vals, ", ") + ")'",
	}
	when := map[string]string{"ins": "AFTER INSERT", "upd": "AFTER UPDATE", "del": "BEFORE DELETE"}
	keys := undoKeys[table]
	extra := map[string]string{"ins": keys.ins, "upd": keys.upd, "del": keys.del}
	var out []string
	for _, op := range []string{"ins", "upd", "del"} {
		name := "undo_" + table + "_" + op
		values := ") VALUES (%s"
		if extra[op] != "" {
			values = ", " + extra[op]
		}
		head := "(SELECT qseq FROM capture), " + stmts[op]
		out = append(out, "DROP TRIGGER IF EXISTS "+name,
			"CREATE TRIGGER "+name+" "+when[op]+" ON "+table+
				" WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN "+
				"INSERT INTO undo (qseq, stmt"+fmt.Sprintf(values, head)+"); END")
	}
	return out
}

// undoQueued takes back the provisional applies of the queued changes
// from seq on, newest first, and forgets their undo records. Nothing it
// runs is recorded again, and the never-decrease triggers let it through.
func undoQueued(ctx context.Context, tx *sql.Tx, seq int64) error {
	if _, err := tx.ExecContext(ctx, "UPDATE capture SET qseq = NULL, undoing = 1"); err != nil {
		return fmt.Errorf("starting an undo: %w", err)
	}
	// A body's blob comes back before the body it refers to.
	if _, err := tx.ExecContext(ctx, "PRAGMA defer_foreign_keys = ON"); err != nil {
		return fmt.Errorf("starting an undo: %w", err)
	}
	const chunk = 256
	for {
		rows, err := tx.QueryContext(ctx, "SELECT seq, stmt FROM undo WHERE qseq >= ? ORDER BY seq DESC LIMIT ?", seq, chunk)
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
			break
		}
		for _, st := range stmts {
			if _, err := tx.ExecContext(ctx, st); err != nil {
				return fmt.Errorf("undoing a provisional change (%.300s): %w", st, err)
			}
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM undo WHERE seq >= ? AND qseq >= ?", seqs[len(seqs)-1], seq); err != nil {
			return fmt.Errorf("clearing the undo log: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE capture SET undoing = 0"); err != nil {
		return fmt.Errorf("ending an undo: %w", err)
	}
	return nil
}
