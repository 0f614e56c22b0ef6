package mailstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"cspool/internal/command"
)

// Rejection is one entry that was not applied.
type Rejection struct {
	Pos    uint64
	Entry  *command.ID // nil when the entry could not be opened
	Reason Reason
	Detail string
	At     time.Time // when this device rejected it
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// insertRejection records a rejection; a position already recorded keeps
// its first record.
func insertRejection(ctx context.Context, db execer, pos uint64, entry *command.ID, reason Reason, detail string, at int64) error {
	var id []byte
	if entry != nil {
		id = entry[:]
	}
	_, err := db.ExecContext(ctx, "INSERT OR IGNORE INTO rejected (pos, entry, reason, detail, at) VALUES (?, ?, ?, ?, ?)",
		int64(pos), id, string(reason), detail, at)
	if err != nil {
		return fmt.Errorf("recording rejection of position %d: %w", pos, err)
	}
	return nil
}

// RecordRejected records, in a transaction of its own, that what is at pos
// was rejected without being applied (a checkpoint that failed
// validation), so that it is listed and counted with the entries Apply
// rejected. It does not move the position. Recording the same position
// twice keeps the first record. The entries of a batch that would not open
// are recorded with the batch instead (ApplyChained).
func (s *Store) RecordRejected(ctx context.Context, pos uint64, reason string) error {
	return s.writeTx(ctx, "recording a rejection", func(tx *sql.Tx) error {
		return insertRejection(ctx, tx, pos, nil, Reason(reason), "", time.Now().UnixMilli())
	})
}

// Rejected lists the most recent rejections, newest (highest position)
// first, at most limit of them (all if limit <= 0).
func (s *Store) Rejected(ctx context.Context, limit int) ([]Rejection, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT pos, entry, reason, detail, at FROM rejected ORDER BY pos DESC LIMIT ?", limit)
	if err != nil {
		return nil, fmt.Errorf("listing rejections: %w", err)
	}
	defer rows.Close()
	var out []Rejection
	for rows.Next() {
		var r Rejection
		var pos, at int64
		var id []byte
		var reason string
		if err := rows.Scan(&pos, &id, &reason, &r.Detail, &at); err != nil {
			return nil, fmt.Errorf("listing rejections: %w", err)
		}
		r.Pos, r.Reason, r.At = uint64(pos), Reason(reason), time.UnixMilli(at)
		if len(id) == command.IDSize {
			r.Entry = new(command.ID)
			copy(r.Entry[:], id)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing rejections: %w", err)
	}
	return out, nil
}

// RejectedAsAfter calls fn with each rejection for reason at a position
// after `after`, in increasing order of position, reading one row at a
// time: what the rows cost is one row's, however many the table holds, and
// the rows at or before after are not visited (the table's key is the
// position). An error from fn stops the reading and is returned.
func (s *Store) RejectedAsAfter(ctx context.Context, reason Reason, after uint64, fn func(Rejection) error) error {
	if err := s.check(); err != nil {
		return err
	}
	rows, err := s.rdb.QueryContext(ctx, "SELECT pos, entry, detail, at FROM rejected WHERE pos > ? AND reason = ? ORDER BY pos",
		int64(min(after, 1<<63-1)), string(reason))
	if err != nil {
		return fmt.Errorf("listing rejections: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		r := Rejection{Reason: reason}
		var pos, at int64
		var id []byte
		if err := rows.Scan(&pos, &id, &r.Detail, &at); err != nil {
			return fmt.Errorf("listing rejections: %w", err)
		}
		r.Pos, r.At = uint64(pos), time.UnixMilli(at)
		if len(id) == command.IDSize {
			r.Entry = new(command.ID)
			copy(r.Entry[:], id)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing rejections: %w", err)
	}
	return nil
}

// RejectionOf returns the rejection of the entry id that was seen first at
// pos (EntriesSeen), nil if it was applied there. Its position is the
// rejected table's key, so this is one lookup: an append whose answer was
// lost is answered as the rejection it met (syncer/queue.go).
func (s *Store) RejectionOf(ctx context.Context, id command.ID, pos uint64) (*Rejection, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var reason string
	var at int64
	r := Rejection{Pos: pos, Entry: new(command.ID)}
	*r.Entry = id
	err := s.rdb.QueryRowContext(ctx, "SELECT reason, detail, at FROM rejected WHERE pos = ? AND entry = ?", int64(pos), id[:]).Scan(&reason, &r.Detail, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the rejection at position %d: %w", pos, err)
	}
	r.Reason, r.At = Reason(reason), time.UnixMilli(at)
	return &r, nil
}

// ForgetRejectedAs deletes the rejections for reason at positions up to
// upTo.
func (s *Store) ForgetRejectedAs(ctx context.Context, reason Reason, upTo uint64) error {
	return s.writeTx(ctx, "forgetting rejections", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM rejected WHERE reason = ? AND pos <= ?", string(reason), min(upTo, 1<<63-1))
		return err
	})
}

// RejectedAs returns how many entries were rejected for reason.
func (s *Store) RejectedAs(ctx context.Context, reason Reason) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM rejected WHERE reason = ?", string(reason)).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting rejections: %w", err)
	}
	return n, nil
}

// RejectedCount returns how many entries were rejected in all.
func (s *Store) RejectedCount(ctx context.Context) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.rdb.QueryRowContext(ctx, "SELECT count(*) FROM rejected").Scan(&n); err != nil {
		return 0, fmt.Errorf("counting rejections: %w", err)
	}
	return n, nil
}

// Forbidden returns how many entries were rejected because their author
// acted beyond its rights (ReasonForbidden: the spool's key signing anything
// but a delivery), and the newest of them, nil if none.
func (s *Store) Forbidden(ctx context.Context) (int, *Rejection, error) {
	if err := s.check(); err != nil {
		return 0, nil, err
	}
	var n int
	var pos, at int64
	var detail string
	err := s.rdb.QueryRowContext(ctx, "SELECT count(*), coalesce(max(pos), 0) FROM rejected WHERE reason = ?", string(ReasonForbidden)).Scan(&n, &pos)
	if err != nil {
		return 0, nil, fmt.Errorf("counting forbidden entries: %w", err)
	}
	if n == 0 {
		return 0, nil, nil
	}
	err = s.rdb.QueryRowContext(ctx, "SELECT detail, at FROM rejected WHERE pos = ?", pos).Scan(&detail, &at)
	if err != nil {
		return 0, nil, fmt.Errorf("reading forbidden entry %d: %w", pos, err)
	}
	return n, &Rejection{Pos: uint64(pos), Reason: ReasonForbidden, Detail: detail, At: time.UnixMilli(at)}, nil
}
