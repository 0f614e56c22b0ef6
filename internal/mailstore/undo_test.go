package mailstore

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"cspool/internal/mimeform"
)

// downgradeUndo gives the database the undo log of schema version 15: the
// table with a statement per record, and the triggers that write them
// (schema15UndoTriggerSQL, as version 15 made them), in place of the view
// and the triggers of version 16. The undo log must be empty.
func downgradeUndo(ctx context.Context, tx *sql.Tx) error {
	qs := []string{"DROP VIEW undo_replay"}
	for _, t := range undoTables {
		for _, op := range []string{"ins", "upd", "del"} {
			qs = append(qs, "DROP TRIGGER undo_"+t+"_"+op)
		}
	}
	qs = append(qs, "DROP TABLE undo", `CREATE TABLE undo (
	seq  INTEGER PRIMARY KEY,
	qseq INTEGER NOT NULL,
	stmt TEXT    NOT NULL,
	mb1  BLOB, uid1 INTEGER,
	mb2  BLOB, uid2 INTEGER,
	mbox BLOB
)`, "CREATE INDEX undo_qseq ON undo (qseq)")
	for _, q := range qs {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	for _, t := range undoTables {
		cols, pk, err := tableColumns(ctx, tx, t)
		if err != nil {
			return err
		}
		if only, ok := undoColumns[t]; ok {
			cols = only
		}
		for _, q := range schema15UndoTriggerSQL(t, cols, pk) {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
	}
	return nil
}

// schema15UndoTriggerSQL returns the statements with which schema version
// 15 dropped and created a table's undo triggers: each records an SQL
// statement that puts the row back, built by SQLite with quote().
func schema15UndoTriggerSQL(table string, cols, pk []string) []string {
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
	keys := map[string]map[string]string{
		"messages": {
			"ins": "mb2, uid2) VALUES (%s, (SELECT id FROM mailboxes WHERE mid = NEW.mailbox), NEW.uid",
			"upd": "mb1, uid1, mb2, uid2) VALUES (%s, (SELECT id FROM mailboxes WHERE mid = OLD.mailbox), OLD.uid, (SELECT id FROM mailboxes WHERE mid = NEW.mailbox), NEW.uid",
			"del": "mb1, uid1) VALUES (%s, (SELECT id FROM mailboxes WHERE mid = OLD.mailbox), OLD.uid",
		},
		"mailboxes": {
			"ins": "mbox) VALUES (%s, NEW.id",
			"upd": "mbox) VALUES (%s, NEW.id",
			"del": "mbox) VALUES (%s, OLD.id",
		},
	}[table]
	when := map[string]string{"ins": "AFTER INSERT", "upd": "AFTER UPDATE", "del": "BEFORE DELETE"}
	var out []string
	for _, op := range []string{"ins", "upd", "del"} {
		name := "undo_" + table + "_" + op
		values := ") VALUES (%s"
		if keys[op] != "" {
			values = ", " + keys[op]
		}
		head := "(SELECT qseq FROM capture), " + stmts[op]
		out = append(out, "DROP TRIGGER IF EXISTS "+name,
			"CREATE TRIGGER "+name+" "+when[op]+" ON "+table+
				" WHEN (SELECT qseq FROM capture) IS NOT NULL BEGIN "+
				"INSERT INTO undo (qseq, stmt"+fmt.Sprintf(values, head)+"); END")
	}
	return out
}

// TestQueueAcrossUndoUpgrade: a store of schema version 15 with changes
// queued (their undo records statements) is opened by this version, which
// migrates it and queues more (their undo records values). Taking the
// whole queue back gives the state before it; another device's entries
// take it back and apply it again on top, as a store that applied the
// log and then the queue as entries has it; and once the log has the
// queued changes the state is the log's and no undo record is left.
func TestQueueAcrossUndoUpgrade(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := generateLog(5, 120)
	base, later := log[:60], log[60:]
	r := rand.New(rand.NewPCG(5, 79))
	mine, others := splitQueued(base, later, r)

	path := emptyStoreFile(t)
	s, err := Open(path, mimeform.Parser{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, base...)
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		if err := downgradeUndo(ctx, tx); err != nil {
			return err
		}
		for _, q := range append(append(append(append(append(append(append(append(append(append(slices.Clone(to28), to27...), to26, to25), to24...), to23...), to22...), to21, to20), to19...), to18...), to17...), "PRAGMA user_version = 15") {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var queued []Entry
	enqueue := func(es []Entry) {
		t.Helper()
		for _, e := range es {
			res, err := s.Enqueue(ctx, e.ID, e.Cmd)
			if err != nil {
				t.Fatalf("Enqueue (%s): %v", e.Cmd.Kind, err)
			}
			if res.Outcomes[0].Status != Rejected {
				queued = append(queued, e)
			}
		}
	}
	enqueue(mine[:len(mine)/2])
	// Bodies of version 15 have no forms_version (version 30) nor
	// texts_version (version 31): they go once the changes are queued,
	// which this package queued with them, with the undo triggers that
	// name them.
	if err := s.writeTx(ctx, "test", func(tx *sql.Tx) error {
		for _, q := range []string{to32, to31[0], to31[1], "DROP TRIGGER undo_bodies_ins", "DROP TRIGGER undo_bodies_upd", "DROP TRIGGER undo_bodies_del",
			"DROP INDEX bodies_texts_version", "ALTER TABLE bodies DROP COLUMN texts_version",
			"DROP INDEX bodies_forms_version", "ALTER TABLE bodies DROP COLUMN forms_version"} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path, mimeform.Parser{}); err != nil {
		t.Fatalf("opening a store of version 15 with changes queued: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	enqueue(mine[len(mine)/2:])
	var old, values int
	if err := s.rdb.QueryRow("SELECT count(stmt), count(*) - count(stmt) FROM undo").Scan(&old, &values); err != nil {
		t.Fatal(err)
	}
	if old == 0 || values == 0 {
		t.Fatalf("%d undo records of version 15 and %d of this version: the test needs both", old, values)
	}

	// The whole queue taken back, in a copy.
	c := copyStore(t, s)
	takeBackQueue(t, c)
	before := openTest(t)
	mustApply(t, before, base...)
	sameState(t, "after undoing the whole queue", c, before, false)

	// Others' entries: the queue taken back, and applied again on top.
	pos := base[len(base)-1].Pos
	renumber := func(es []Entry) []Entry {
		out := make([]Entry, len(es))
		for i, e := range es {
			pos++
			out[i] = Entry{Pos: pos, ID: e.ID, Author: e.Author, Cmd: e.Cmd}
		}
		return out
	}
	theirs := renumber(others)
	if _, err := s.Apply(ctx, theirs, pos); err != nil {
		t.Fatalf("applying others' entries: %v", err)
	}
	ref := openTest(t)
	mustApply(t, ref, base...)
	mustApply(t, ref, theirs...)
	ours := renumber(queued)
	mustApply(t, ref, ours...)
	sameState(t, "after others' entries", s, ref, true)
	res, err := s.Apply(ctx, ours, pos)
	if err != nil {
		t.Fatalf("applying my own entries: %v", err)
	}
	if len(res.Changes) != 0 {
		t.Fatalf("confirming my own entries told sessions of %d changes, want none", len(res.Changes))
	}
	sameState(t, "after the log has everything", s, ref, false)
	var left int
	if err := s.rdb.QueryRow("SELECT count(*) FROM undo").Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d undo records are still kept (%v)", left, err)
	}
}

// TestUndoChunkStartPlan: finding each chunk of undo records to put back
// reads the newest records in seq order and stops after a chunk, rather
// than reading every record left through the index on qseq and sorting
// them, once a chunk: a take-back of queued changes of 20,000 messages
// each grew with the square of the undo log (133 s for five of them).
func TestUndoChunkStartPlan(t *testing.T) {
	t.Parallel()
	s := openTest(t)
	// The plan may depend on the values bound (SQLite's planner reads
	// them): for none may it go through the index.
	for _, limit := range []int{1, 2, 64, undoChunk} {
		plan := queryPlan(t, s.wdb, "EXPLAIN QUERY PLAN "+undoChunkStart, 1, limit)
		for _, d := range plan {
			if strings.Contains(d, "TEMP B-TREE") || strings.Contains(d, "undo_qseq") {
				t.Errorf("with a limit of %d the plan of %q is %q: it sorts the records left, want a scan in seq order that stops after a chunk", limit, undoChunkStart, plan)
				break
			}
		}
	}
}
