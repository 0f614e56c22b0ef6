package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"math"

	"cspool/internal/spool"
)

var _ spool.Quotas = (*Store)(nil)

// Usage implements spool.Quotas: users.bytes, kept by the append and
// compaction transactions.
func (s *Store) Usage(ctx context.Context, user string) (int64, error) {
	if err := spool.CheckUser(user); err != nil {
		return 0, err
	}
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int64
	err := s.rdb.QueryRowContext(ctx, "SELECT bytes FROM users WHERE name = ?", []byte(user)).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, s.dbErr("reading usage", err)
	}
	return n, nil
}

// UsageSummary implements spool.Quotas with one scan of the users table
// (one row per log).
func (s *Store) UsageSummary(ctx context.Context, limit int64) (spool.UsageSummary, error) {
	var u spool.UsageSummary
	if err := s.check(); err != nil {
		return u, err
	}
	near, over := int64(math.MaxInt64), int64(math.MaxInt64)
	if limit > 0 {
		near, over = int64(math.Ceil(spool.Near*float64(limit))), limit
	}
	err := s.rdb.QueryRowContext(ctx, `SELECT count(*), coalesce(sum(bytes), 0), coalesce(max(bytes), 0),
		coalesce(sum(bytes >= ?), 0), coalesce(sum(bytes >= ?), 0) FROM users`, near, over).
		Scan(&u.Logs, &u.Bytes, &u.Largest, &u.Near, &u.Over)
	if err != nil {
		return spool.UsageSummary{}, s.dbErr("summing usage", err)
	}
	return u, nil
}
