package mailstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"cspool/internal/devicedb"
)

// The placement of what a FETCH reads (docs/MAILSTORE.md, "Placement").
//
// Rows are written as mail arrives, each table's new pages taken from the
// end of the file (or its free pages) one after another, so the pages of
// the small per-message tables a FETCH of ENVELOPE or BODYSTRUCTURE reads
// (forms, structures and the index messages_listing) lie scattered among
// the pages of the bodies' bytes and of the search index: at 100,000
// messages of a first sync, a leaf of forms every twenty pages or so
// through a file of 1.1 GB. A FETCH that finds them in no cache reads them
// one at a time at random. Relocate writes them again into pages that
// follow each other, at the end of the file, in key order, so that such a
// FETCH reads them in the order of the file.

// placedTables are the tables Relocate writes again, each keyed by bid
// (an INTEGER PRIMARY KEY, the rowid), with its other column;
// placedIndexes the indexes it makes again.
var (
	placedTables  = []struct{ name, col string }{{"forms", "envelope"}, {"structures", "structure"}}
	placedIndexes = []string{"messages_listing"}
)

// relocateChunk is how many body ids one transaction of Relocate moves:
// about 1,900 pages of forms and structures in bench/fetchreads.sh's
// mailbox, so that the write lock is never held long.
const relocateChunk = 20000

// maxFillPages bounds the pages one row of relocation_fill takes (a row is
// a zeroblob, and SQLite's longest value is 10^9 bytes).
const maxFillPages = 1 << 16

// Placement says how many bodies' rows of forms and structures Relocate
// has not placed yet (those stored since it last ran, counted by their
// ids: an upper bound when bodies were removed since) and how many bodies
// there are.
func (s *Store) Placement(ctx context.Context) (unplaced, bodies int64, err error) {
	if err := s.check(); err != nil {
		return 0, 0, err
	}
	err = s.rdb.QueryRowContext(ctx, `SELECT max(coalesce((SELECT max(bid) FROM bodies), 0) - (SELECT relocated_bid FROM local), 0),
		(SELECT n FROM body_count)`).Scan(&unplaced, &bodies)
	if err != nil {
		return 0, 0, fmt.Errorf("reading the placement of the forms: %w", err)
	}
	return unplaced, bodies, nil
}

// Relocation says what a Relocate did and how long it took: reading the
// rows first, on a reader, and then holding the write lock (its
// transactions and the WAL's checkpoints after them), in all and at most
// at once.
type Relocation struct {
	Transactions             int
	Read, Locked, LockedOnce time.Duration
}

// Relocate places what a FETCH of ENVELOPE or BODYSTRUCTURE reads into
// pages that follow each other at the end of the file: it makes the index
// messages_listing again, then moves the rows of forms and structures of
// the bodies stored since it last ran (local.relocated_bid), in bid order,
// relocateChunk ids a transaction. Every row is kept as it was (the same
// bids, the same bytes); each transaction is atomic and durable as an
// apply is (WAL, synchronous=FULL) and records how far it got, so a crash
// or an error at any point leaves the file as it was before that
// transaction, and the next Relocate goes on from there. It reads the
// rows once on a reader first, so that the write lock is held while they
// are in the operating system's cache.
//
// SQLite takes a new page from the file's free pages before it grows the
// file, and free pages are anywhere (a removed body's, the search index's
// merged segments'): so each transaction first takes every free page into
// rows of a table of its own (relocation_fill, zeroblobs: SQLite writes
// no page of it that is freed again before the commit), copies the rows
// aside, deletes them, takes the pages that freed, and inserts the rows
// again; the index it drops, takes its pages and makes again from its own
// SQL text. Dropping relocation_fill at the end gives every page taken
// back to the free list, where later mail takes it.
func (s *Store) Relocate(ctx context.Context) (Relocation, error) {
	var r Relocation
	if err := s.check(); err != nil {
		return r, err
	}
	var from int64
	if err := s.rdb.QueryRowContext(ctx, "SELECT relocated_bid FROM local").Scan(&from); err != nil {
		return r, fmt.Errorf("relocating the forms: %w", err)
	}
	t0 := time.Now()
	if err := s.readScan(ctx, func(c *sql.Conn) error {
		qs := []string{
			// What the index is made from, and the index dropped.
			"SELECT sum(size) + 0 * ?1 FROM messages NOT INDEXED",
			"SELECT count(*) + 0 * ?1 FROM messages INDEXED BY messages_listing",
		}
		for _, t := range placedTables {
			qs = append(qs, "SELECT sum(length("+t.col+")) FROM "+t.name+" WHERE bid > ?1")
		}
		var n sql.NullInt64
		for _, q := range qs {
			if err := c.QueryRowContext(ctx, q, from).Scan(&n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return r, fmt.Errorf("relocating the forms: reading them: %w", err)
	}
	r.Read = time.Since(t0)
	done := false
	for step := 0; !done; step++ {
		var err error
		done, err = s.relocateStep(ctx, step == 0, &r)
		if err != nil {
			return r, devicedb.Explain(s.path, fmt.Errorf("relocating the forms: %w", err))
		}
	}
	return r, nil
}

// relocateStep is one transaction of Relocate: the indexes when first is
// set, else the next relocateChunk body ids; done says nothing is left.
func (s *Store) relocateStep(ctx context.Context, first bool, r *Relocation) (done bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t0 := time.Now()
	if err := s.writeOn(ctx, func(tx *sql.Tx) error {
		var err error
		if first {
			err = relocateIndexes(ctx, tx)
		} else {
			chunk := int64(relocateChunk)
			if s.relocateChunk != 0 {
				chunk = s.relocateChunk
			}
			done, err = relocateRows(ctx, tx, chunk)
		}
		return err
	}); err != nil {
		return false, err
	}
	// With the connection given back: the WAL's bound checkpoints on it.
	s.committed(ctx)
	d := time.Since(t0)
	r.Transactions++
	r.Locked += d
	r.LockedOnce = max(r.LockedOnce, d)
	return done, nil
}

// writeOn runs fn in a transaction on the writer's connection with
// foreign keys off: the rows Relocate inserts again are those it deleted
// just before, from the same table, whose bodies stay, and checking each
// one's body would read the bodies' pages for nothing. (A pragma that
// changes nothing inside a transaction, so set around it.)
func (s *Store) writeOn(ctx context.Context, fn func(*sql.Tx) error) error {
	c, err := s.wdb.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "PRAGMA foreign_keys = OFF"); err != nil {
		return err
	}
	defer func() {
		if _, err := c.ExecContext(context.Background(), "PRAGMA foreign_keys = ON"); err != nil {
			// Not to leave a writer without its checks: the pool opens
			// a new one with the data source name's.
			c.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var capturing sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT qseq FROM capture").Scan(&capturing); err != nil {
		return err
	}
	if capturing.Valid {
		return errors.New("a queued change is being applied")
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE relocation_fill (fill BLOB)"); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "DROP TABLE relocation_fill"); err != nil {
		return err
	}
	return tx.Commit()
}

// relocateIndexes makes each of placedIndexes again, from its SQL text,
// in pages at the end of the file.
func relocateIndexes(ctx context.Context, tx *sql.Tx) error {
	for _, name := range placedIndexes {
		var text string
		if err := tx.QueryRowContext(ctx, "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?", name).Scan(&text); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, "DROP INDEX "+name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := takeFreePages(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, text); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// relocateRows moves the rows of placedTables of the next relocateChunk
// body ids after local.relocated_bid into pages at the end of the file,
// and records how far it got; done says none were left. The tables'
// triggers (the undo log's) are dropped for it and made again from their
// SQL text: deleting and inserting rows with them costs a trigger's test
// for each row.
func relocateRows(ctx context.Context, tx *sql.Tx, chunk int64) (done bool, err error) {
	var from, last int64
	if err := tx.QueryRowContext(ctx, "SELECT relocated_bid, coalesce((SELECT max(bid) FROM bodies), 0) FROM local").Scan(&from, &last); err != nil {
		return false, err
	}
	if from >= last {
		return true, nil
	}
	to := min(from+chunk, last)
	for _, t := range placedTables {
		var triggers []string
		rows, err := tx.QueryContext(ctx, "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? ORDER BY name", t.name)
		if err != nil {
			return false, err
		}
		var names []string
		for rows.Next() {
			var name, text string
			if err := rows.Scan(&name, &text); err != nil {
				rows.Close()
				return false, err
			}
			names, triggers = append(names, name), append(triggers, text)
		}
		if err := rows.Close(); err != nil {
			return false, err
		}
		for _, name := range names {
			if _, err := tx.ExecContext(ctx, "DROP TRIGGER "+name); err != nil {
				return false, fmt.Errorf("%s: %w", t.name, err)
			}
		}
		cols := "bid, " + t.col
		qs := []string{
			"CREATE TABLE relocation_copy AS SELECT " + cols + " FROM " + t.name + " WHERE bid > ?1 AND bid <= ?2 ORDER BY bid",
			"DELETE FROM " + t.name + " WHERE bid > ?1 AND bid <= ?2",
		}
		for _, q := range qs {
			if _, err := tx.ExecContext(ctx, q, from, to); err != nil {
				return false, fmt.Errorf("%s: %w", t.name, err)
			}
		}
		if err := takeFreePages(ctx, tx); err != nil {
			return false, err
		}
		qs = append([]string{
			"INSERT INTO " + t.name + " (" + cols + ") SELECT " + cols + " FROM relocation_copy ORDER BY rowid",
			"DROP TABLE relocation_copy",
		}, triggers...)
		for _, q := range qs {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return false, fmt.Errorf("%s: %w", t.name, err)
			}
		}
	}
	if _, err := tx.ExecContext(ctx, "UPDATE local SET relocated_bid = ?", to); err != nil {
		return false, err
	}
	return to == last, nil
}

// takeFreePages takes every page of the file's free list into rows of
// relocation_fill, so that the next pages SQLite needs come from the end
// of the file.
func takeFreePages(ctx context.Context, tx *sql.Tx) error {
	var pageSize int64
	if err := tx.QueryRowContext(ctx, "PRAGMA page_size").Scan(&pageSize); err != nil {
		return err
	}
	// Each page of a value's overflow chain holds pageSize - 4 bytes. The
	// bound is for a free list that would keep filling (none does: the
	// write lock is held).
	for range 1 << 12 {
		var free int64
		if err := tx.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
			return err
		}
		if free == 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO relocation_fill (fill) VALUES (zeroblob(?))", min(free, maxFillPages)*(pageSize-4)); err != nil {
			return fmt.Errorf("taking the free pages: %w", err)
		}
	}
	return errors.New("taking the free pages: the free list does not empty")
}
