package mailstore

import (
	"context"
	"database/sql"
	"fmt"

	"cspool/internal/entry"
)

// Readers returns the newest entry format every device of the user reads,
// as the spool last said (SetReaders): 0 until it has said, and when a
// server of an earlier release says nothing.
func (s *Store) Readers(ctx context.Context) (int, error) {
	if v := s.readers.Load(); v >= 0 {
		return int(v), nil
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	var v int32
	if err := s.rdb.QueryRowContext(ctx, "SELECT readers FROM local").Scan(&v); err != nil {
		return 0, fmt.Errorf("reading the entry formats the user's devices read: %w", err)
	}
	s.readers.CompareAndSwap(-1, v)
	return int(v), nil
}

// SetReaders records what the spool says of the user's devices (v, the
// newest entry format every one of them reads; api.HeaderReaders). It
// writes only when v differs from what is recorded. When the device starts
// writing version 2 (WritesVersion2), the changes queued as version 1 are
// rewritten as version 2 in the same transaction (UpgradeQueue), and it
// returns how many.
func (s *Store) SetReaders(ctx context.Context, v int) (int, error) {
	if v < 0 || v > 255 {
		return 0, fmt.Errorf("mailstore: entry format %d", v)
	}
	cur, err := s.Readers(ctx)
	if err != nil || cur == v {
		return 0, err
	}
	if cur < entry.Version4 && v >= entry.Version4 {
		return s.upgradeQueue(ctx, v)
	}
	return 0, s.writeTx(ctx, "recording the entry formats the user's devices read", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE local SET readers = ?", v); err != nil {
			return err
		}
		s.readers.Store(int32(v))
		return nil
	})
}

// WritesVersion2 reports whether this device writes an EXPUNGE and a
// DELETE as commands of version 2 (docs/FORMAT.md §3): once the spool has
// said that every device of the user reads entry format 4, which carries
// them. Until then, and when the answer cannot be read, version 1, which
// every device applies: a device of an earlier release stops before the
// first entry of format 4 until it is upgraded.
func (s *Store) WritesVersion2(ctx context.Context) bool {
	v, err := s.Readers(ctx)
	return err == nil && v >= entry.Version4
}
