package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"cspool/internal/command"
)

// What a device knows of the log, besides its state: the id of every entry
// it applied, at its position (table entries), and the entries it appended
// itself, at the positions the spool's answers gave them, until it applies
// or restores past them (table appended). An apply or a restore that
// contradicts either is refused with a *Contradiction and changes nothing.

// Appended is an entry this device appended to the log, at the position
// the spool's answer gave it.
type Appended struct {
	ID  command.ID
	Pos uint64
}

// A Contradiction is why an apply, a restore or RecordAppended was refused:
// what it was asked to take in contradicts what this device knows of the
// log (an entry it applied or appended, at a position). Nothing was
// changed; the syncer raises it as an integrity alarm.
type Contradiction struct {
	Pos    uint64 // the position in question
	Detail string // what differs, for the alarm
	// Crossed, refusing a state with superseded entries (a restoration, or
	// a checkpoint after one): it supersedes some of the history this
	// device applied. A restoration that supersedes none of it is not
	// one of this device's history: an older one, served again after a
	// rollback, or one of another history (docs/SECURITY.md §8).
	Crossed bool
}

func (c *Contradiction) Error() string { return c.Detail }

// RecordAppended remembers entries this device appended, at the positions
// the spool's answer gave them. Every apply and restore that reaches such a
// position must find the entry there, or it is refused with a
// *Contradiction (a dropped or replaced append); the record goes with the
// apply or restore that finds it. An entry at or below the store's position
// (the sync loop got there first) is checked at once against the entries
// applied, and a *Contradiction returned if it is not there.
func (s *Store) RecordAppended(ctx context.Context, es []Appended) error {
	return s.writeTx(ctx, "recording appended entries", func(tx *sql.Tx) error {
		var pos int64
		if err := tx.QueryRowContext(ctx, "SELECT position FROM state").Scan(&pos); err != nil {
			return fmt.Errorf("reading state: %w", err)
		}
		for _, e := range es {
			switch {
			case e.Pos == 0:
				return fmt.Errorf("appended entry %s at position 0: %w", e.ID, ErrPosition)
			case e.Pos <= uint64(pos):
				if err := verifyAppended(ctx, tx, e, uint64(pos)); err != nil {
					return err
				}
			default:
				if _, err := tx.ExecContext(ctx, "INSERT OR REPLACE INTO appended (id, pos) VALUES (?, ?)", e.ID[:], int64(e.Pos)); err != nil {
					return fmt.Errorf("recording appended entry: %w", err)
				}
			}
		}
		return nil
	})
}

// PendingAppends returns the entries this device appended and has not yet
// applied or restored past, by position.
func (s *Store) PendingAppends(ctx context.Context) ([]Appended, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	return queryAppended(ctx, s.rdb, "SELECT id, pos FROM appended ORDER BY pos")
}

// queryAppended returns the appended entries a query selects (id, pos).
func queryAppended(ctx context.Context, q queryer, query string, args ...any) ([]Appended, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("reading appended entries: %w", err)
	}
	defer rows.Close()
	var out []Appended
	for rows.Next() {
		var a Appended
		var id []byte
		var pos int64
		if err := rows.Scan(&id, &pos); err != nil {
			return nil, fmt.Errorf("reading appended entries: %w", err)
		}
		copy(a.ID[:], id)
		a.Pos = uint64(pos)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading appended entries: %w", err)
	}
	return out, nil
}

// checkAppended checks, in an apply's transaction after its entries, that
// every entry this device appended at or below upTo was applied at its
// position, and forgets them.
func checkAppended(ctx context.Context, tx *sql.Tx, upTo uint64) error {
	due, err := queryAppended(ctx, tx, "SELECT id, pos FROM appended WHERE pos <= ? ORDER BY pos", int64(upTo))
	if err != nil {
		return err
	}
	for _, a := range due {
		if err := verifyAppended(ctx, tx, a, upTo); err != nil {
			return err
		}
	}
	return forgetAppended(ctx, tx, upTo)
}

// forgetAppended drops the records of appended entries at or below upTo.
func forgetAppended(ctx context.Context, tx *sql.Tx, upTo uint64) error {
	if _, err := tx.ExecContext(ctx, "DELETE FROM appended WHERE pos <= ?", int64(upTo)); err != nil {
		return fmt.Errorf("forgetting appended entries: %w", err)
	}
	return nil
}

// verifyAppended returns a *Contradiction unless the entry a was applied
// at its position.
func verifyAppended(ctx context.Context, q queryer, a Appended, upTo uint64) error {
	var pos int64
	err := q.QueryRowContext(ctx, "SELECT pos FROM entries WHERE id = ?", a.ID[:]).Scan(&pos)
	switch {
	case err == nil && uint64(pos) == a.Pos:
		return nil
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("looking up appended entry %s: %w", a.ID, err)
	}
	there, err := describePosition(ctx, q, a.Pos)
	if err != nil {
		return err
	}
	return &Contradiction{Pos: a.Pos, Detail: fmt.Sprintf(
		"this device appended entry %s and the spool answered that it is at position %d, but the log it served up to position %d holds %s there: the spool dropped or replaced the entry, and the change it made is lost",
		a.ID, a.Pos, upTo, there)}
}

// describePosition says what this store applied at pos, for an alarm.
func describePosition(ctx context.Context, q queryer, pos uint64) (string, error) {
	var id []byte
	err := q.QueryRowContext(ctx, "SELECT id FROM entries WHERE pos = ?", int64(pos)).Scan(&id)
	if err == nil {
		var e command.ID
		copy(e[:], id)
		return "entry " + e.String(), nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("looking up position %d: %w", pos, err)
	}
	var reason string
	err = q.QueryRowContext(ctx, "SELECT reason FROM rejected WHERE pos = ?", int64(pos)).Scan(&reason)
	switch {
	case err == nil:
		return "an entry it rejected (" + reason + ")", nil
	case errors.Is(err, sql.ErrNoRows):
		return "no entry", nil
	}
	return "", fmt.Errorf("looking up position %d: %w", pos, err)
}
