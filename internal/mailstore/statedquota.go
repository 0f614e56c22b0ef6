package mailstore

import (
	"context"
	"database/sql"
	"fmt"
)

// StatedQuota returns the user's usage of the spool and its quota, in
// bytes, as the spool last stated them on a read (SetStatedQuota): limit
// 0 when it has stated none. The usage is as of that read: changes queued
// since are not in it.
func (s *Store) StatedQuota(ctx context.Context) (usage, limit int64, err error) {
	if err := s.check(); err != nil {
		return 0, 0, err
	}
	if err := s.rdb.QueryRowContext(ctx, "SELECT quota_usage, quota_limit FROM local").Scan(&usage, &limit); err != nil {
		return 0, 0, fmt.Errorf("reading the quota the spool stated: %w", err)
	}
	return usage, limit, nil
}

// SetStatedQuota records the usage and quota a read's answer stated
// (api.HeaderQuota); limit 0 records that it stated none. The caller
// writes only when they differ from what it recorded last: a read answers
// every few seconds.
func (s *Store) SetStatedQuota(ctx context.Context, usage, limit int64) error {
	if usage < 0 || limit < 0 {
		return fmt.Errorf("mailstore: quota usage %d, limit %d", usage, limit)
	}
	if limit == 0 {
		usage = 0
	}
	return s.writeTx(ctx, "recording the quota the spool stated", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE local SET quota_usage = ?, quota_limit = ?", usage, limit)
		return err
	})
}
