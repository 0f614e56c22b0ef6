package mailstore

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
)

// A restore's messages and entries, built whole beside the store's.
//
// The restored state's rows of messages and entries are written before
// the restore's last step, into tables made as copies of the store's
// (restore_new_messages, restore_new_entries: the same columns, checks
// and indexes, under other names), a run of stageRun rows a transaction,
// each holding the store's write lock only while it writes (buildState).
// The last step then drops the store's tables and gives the copies their
// names (swapIn): a few rows of sqlite_schema, whatever the mailbox's
// size, where writing the rows in it held the store's write lock and the
// syncer's for as long as they took (7.8 s of its 9.3 s at 100,000
// messages; minutes at a million).
//
// The copies name no other table (their REFERENCES clauses are left out,
// and given back with their names): a local change between the runs
// and the last step may remove a body the copy names (a queued EXPUNGE of
// the last message that used it), which the clause would refuse. What
// such a change did to the bodies is taken back at the last step before
// the swap (undo), and the rows of the copy that name a body a queued
// change stored, removed or changed are resolved again there, by digest,
// as are the messages whose body was missing when their run was written
// (restore_missing): both as many as the queued changes touched.
//
// Giving the copies their names writes sqlite_schema under
// writable_schema, as SQLite documents for a change of the schema that
// leaves the stored content as it is (https://sqlite.org/lang_altertable.html,
// "Making Other Kinds Of Table Schema Changes"): the rows of the copy
// and of its indexes take the names and the SQL text the store's had, the
// schema's version moves, and the triggers on the store's table are made
// again. It is one statement list in the last step's transaction: a crash
// leaves the old tables or the new ones, never a mix.

// swapTables are the store's tables a restore builds beside them.
var swapTables = []string{"messages", "entries"}

// newPrefix names the restore's copy of a table and of its indexes.
const newPrefix = "restore_new_"

// schemaRow is a row of sqlite_schema that has SQL text.
type schemaRow struct{ typ, name, sql string }

// readSchema returns table's rows of sqlite_schema with SQL text: the
// table, its named indexes and its triggers.
func readSchema(ctx context.Context, q queryer, table string) ([]schemaRow, error) {
	var out []schemaRow
	err := dumpRows(ctx, q, fmt.Sprintf("SELECT type, name, sql FROM sqlite_schema WHERE tbl_name = '%s' AND sql IS NOT NULL ORDER BY type != 'table', rowid", table),
		func(sc scanner) error {
			var r schemaRow
			if err := sc.Scan(&r.typ, &r.name, &r.sql); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("reading the schema of %s: %w", table, err)
	}
	if len(out) == 0 || out[0].typ != "table" {
		return nil, fmt.Errorf("reading the schema of %s: no such table", table)
	}
	return out, nil
}

// references matches a column's REFERENCES clause.
var references = regexp.MustCompile(`\s+REFERENCES\s+\w+\s*\(\s*\w+\s*\)`)

// copySQL is the statement that makes the restore's copy of r, a row of
// table's schema, or "" for a trigger (the copy has none).
func copySQL(table string, r schemaRow) (string, error) {
	var head, made string
	switch r.typ {
	case "table":
		head, made = "CREATE TABLE "+table+" ", "CREATE TABLE "+newPrefix+table+" "
	case "index":
		head, made = "CREATE INDEX "+r.name+" ON "+table+" ", "CREATE INDEX "+newPrefix+r.name+" ON "+newPrefix+table+" "
	default:
		return "", nil
	}
	if !strings.HasPrefix(r.sql, head) {
		return "", fmt.Errorf("copying the schema of %s: %s %s reads %q", table, r.typ, r.name, r.sql)
	}
	rest := r.sql[len(head):]
	if r.typ == "table" {
		rest = references.ReplaceAllString(rest, "")
	}
	return made + rest, nil
}

// makeCopies makes the restore's copies of swapTables, empty, and the
// table of the messages whose body was missing when their run was built.
func makeCopies(ctx context.Context, tx *sql.Tx) error {
	for _, t := range swapTables {
		rows, err := readSchema(ctx, tx, t)
		if err != nil {
			return err
		}
		for _, r := range rows {
			q, err := copySQL(t, r)
			if err != nil {
				return err
			}
			if q == "" {
				continue
			}
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("copying the schema of %s: %w", t, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE restore_missing (n INTEGER PRIMARY KEY)"); err != nil {
		return fmt.Errorf("staging the state: %w", err)
	}
	return nil
}

// buildState is the restore's third step: it writes the staged state's
// messages and entries into the copies, stageRun rows a transaction in
// the order of their bodies' positions (the messages; the order the old
// last step wrote them in) or of the staged records (the entries), each
// holding the store's write lock only while it writes. A message whose
// body the store lacks now (a queued change removed it; taking the change
// back at the last step puts it back) is listed in restore_missing
// instead, for the last step.
func (s *Store) buildState(ctx context.Context, p *StagedRestore) error {
	for after := int64(0); ; {
		var hi sql.NullInt64
		err := s.rdb.QueryRowContext(ctx, fmt.Sprintf(`SELECT max(body) FROM
			(SELECT body FROM restore_messages WHERE body > ? ORDER BY body LIMIT %d)`, stageRun), after).Scan(&hi)
		if err != nil {
			return fmt.Errorf("reading the staged messages: %w", err)
		}
		if !hi.Valid {
			break
		}
		err = s.writeTx(ctx, "writing the restored messages", func(tx *sql.Tx) error {
			res, err := tx.ExecContext(ctx, `INSERT INTO restore_new_messages (id, mailbox, uid, body, date, size, flags, keywords, modseq)
				SELECT m.id, m.mailbox + 1, m.uid, b.bid, m.date, m.size, m.flags, m.keywords, m.modseq
				FROM restore_messages m CROSS JOIN bodies b ON b.digest = m.digest
				WHERE m.body > ?1 AND m.body <= ?2 ORDER BY m.body, m.n`, after, hi.Int64)
			if err != nil {
				return fmt.Errorf("writing the restored messages: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			if _, err = tx.ExecContext(ctx, `INSERT INTO restore_missing (n) SELECT n FROM restore_messages m
				WHERE m.body > ?1 AND m.body <= ?2 AND NOT EXISTS (SELECT 1 FROM bodies b WHERE b.digest = m.digest)`, after, hi.Int64); err != nil {
				return fmt.Errorf("writing the restored messages: %w", err)
			}
			p.built += n
			return nil
		})
		if err != nil {
			return err
		}
		after = hi.Int64
		if s.buildHook != nil {
			s.buildHook()
		}
	}
	for lo := int64(1); lo <= p.g.entries; lo += stageRun {
		err := s.writeTx(ctx, "writing the restored entries", func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO restore_new_entries (id, pos, old) SELECT id, pos, old FROM restore_entries WHERE n BETWEEN ? AND ? ORDER BY n",
				lo, lo+stageRun-1)
			return err
		})
		if err != nil {
			return fmt.Errorf("writing the restored entries: %w", err)
		}
	}
	return nil
}

// touchedBodies lists the bodies the queued changes stored, removed or
// changed (their undo records), read before they are taken back.
func touchedBodies(ctx context.Context, tx *sql.Tx) ([]int64, error) {
	return queryColumn[int64](ctx, tx, `SELECT k0 FROM undo WHERE tbl = 'bodies' AND op IN ('ins', 'upd') AND k0 IS NOT NULL
		UNION SELECT v0 FROM undo WHERE tbl = 'bodies' AND op IN ('del', 'upd') AND v0 IS NOT NULL`)
}

// takenBackBodies lists the positions and digests of the staged messages whose
// body may be missing once the queued changes are taken back: those whose
// row in the copy names a body in touched (a queued change stored it, so
// taking the change back removes it), and those listed missing when
// their run was written. As many as the queued changes touched.
func takenBackBodies(ctx context.Context, tx *sql.Tx, touched []int64) (map[uint64][32]byte, error) {
	out := map[uint64][32]byte{}
	row := func(sc scanner) error {
		var p int64
		var d []byte
		if err := sc.Scan(&p, &d); err != nil {
			return err
		}
		out[uint64(p)] = [32]byte(d)
		return nil
	}
	for _, bid := range touched {
		err := dumpRows(ctx, tx, fmt.Sprintf(`SELECT m.body, m.digest FROM restore_new_messages f
			JOIN restore_messages m ON m.id = f.id WHERE f.body = %d`, bid), row)
		if err != nil {
			return nil, fmt.Errorf("reading the bodies the queued changes touched: %w", err)
		}
	}
	err := dumpRows(ctx, tx, "SELECT m.body, m.digest FROM restore_missing x JOIN restore_messages m ON m.n = x.n", row)
	if err != nil {
		return nil, fmt.Errorf("reading the bodies the queued changes touched: %w", err)
	}
	return out, nil
}

// completeCopy makes the messages' copy name the bodies as they are once
// the queued changes are taken back: its rows naming a body in touched
// find their body again by digest, and the messages listed missing are
// written. It returns how many were.
func completeCopy(ctx context.Context, tx *sql.Tx, touched []int64) (int64, error) {
	for _, bid := range touched {
		_, err := tx.ExecContext(ctx, `UPDATE restore_new_messages SET body = (SELECT b.bid FROM restore_messages m
			JOIN bodies b ON b.digest = m.digest WHERE m.id = restore_new_messages.id) WHERE body = ?`, bid)
		if err != nil {
			return 0, fmt.Errorf("restoring messages: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO restore_new_messages (id, mailbox, uid, body, date, size, flags, keywords, modseq)
		SELECT m.id, m.mailbox + 1, m.uid, (SELECT bid FROM bodies b WHERE b.digest = m.digest), m.date, m.size, m.flags, m.keywords, m.modseq
		FROM restore_missing x JOIN restore_messages m ON m.n = x.n ORDER BY m.body, m.n`)
	if err != nil {
		return 0, fmt.Errorf("restoring messages: %w", err)
	}
	return res.RowsAffected()
}

// swapIn puts the restore's copies in the place of swapTables: it drops
// the store's tables, runs between (with neither: what must change while
// no row names the old rows, the mailboxes), then gives each copy its
// table's name, its indexes theirs and the SQL text the store's had, and
// makes the triggers on the table again. An error leaves the transaction
// to be rolled back.
func swapIn(ctx context.Context, tx *sql.Tx, between func() error) (err error) {
	exec := func(q string) error {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("putting the restored state in place: %w", err)
		}
		return nil
	}
	schemas := map[string][]schemaRow{}
	for _, t := range swapTables {
		rows, err := readSchema(ctx, tx, t)
		if err != nil {
			return err
		}
		schemas[t] = rows
		if err := exec("DROP TABLE " + t); err != nil {
			return err
		}
	}
	if err := between(); err != nil {
		return err
	}
	var version int64
	if err := tx.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&version); err != nil {
		return fmt.Errorf("reading the schema's version: %w", err)
	}
	if err := exec("PRAGMA writable_schema = ON"); err != nil {
		return err
	}
	defer func() {
		if offErr := exec("PRAGMA writable_schema = OFF"); err == nil {
			err = offErr
		}
	}()
	for _, t := range swapTables {
		for _, r := range schemas[t] {
			if r.typ == "trigger" {
				continue
			}
			res, err := tx.ExecContext(ctx, "UPDATE sqlite_schema SET name = ?, tbl_name = ?, sql = ? WHERE name = ? AND type = ?",
				r.name, t, r.sql, newPrefix+r.name, r.typ)
			if err != nil {
				return fmt.Errorf("putting the restored %s in place: %w", t, err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				return fmt.Errorf("putting the restored %s in place: %s %s%s not found (%v)", t, r.typ, newPrefix, r.name, err)
			}
		}
		auto := "sqlite_autoindex_" + newPrefix + t + "_"
		_, err := tx.ExecContext(ctx, `UPDATE sqlite_schema SET name = ? || substr(name, ?), tbl_name = ?
			WHERE type = 'index' AND tbl_name = ? AND sql IS NULL AND substr(name, 1, ?) = ?`,
			"sqlite_autoindex_"+t+"_", len(auto)+1, t, newPrefix+t, len(auto), auto)
		if err != nil {
			return fmt.Errorf("putting the restored %s in place: %w", t, err)
		}
	}
	if err := exec(fmt.Sprintf("PRAGMA schema_version = %d", version+1)); err != nil {
		return err
	}
	if err := exec("PRAGMA writable_schema = OFF"); err != nil {
		return err
	}
	for _, t := range swapTables {
		for _, r := range schemas[t] {
			if r.typ == "trigger" {
				if err := exec(r.sql); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
