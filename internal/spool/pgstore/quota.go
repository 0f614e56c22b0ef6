package pgstore

import (
	"context"
	"math"

	"cspool/internal/spool"
)

var _ spool.Quotas = (*Store)(nil)

// Usage implements spool.Quotas: cspool_logs.bytes (schema/0004.sql).
func (s *Store) Usage(ctx context.Context, user string) (int64, error) {
	return s.logNumber(ctx, user, "the usage", "SELECT bytes FROM cspool_logs WHERE name = $1")
}

// UsageSummary implements spool.Quotas with one scan of cspool_logs (one
// row per log).
func (s *Store) UsageSummary(ctx context.Context, limit int64) (spool.UsageSummary, error) {
	var u spool.UsageSummary
	cctx, cancel, err := s.begin(ctx)
	if err != nil {
		return u, err
	}
	defer cancel()
	near, over := int64(math.MaxInt64), int64(math.MaxInt64)
	if limit > 0 {
		near, over = int64(math.Ceil(spool.Near*float64(limit))), limit
	}
	err = s.pool.QueryRow(cctx, `SELECT count(*), coalesce(sum(bytes), 0)::bigint, coalesce(max(bytes), 0),
		count(*) FILTER (WHERE bytes >= $1), count(*) FILTER (WHERE bytes >= $2) FROM cspool_logs`, near, over).
		Scan(&u.Logs, &u.Bytes, &u.Largest, &u.Near, &u.Over)
	if err != nil {
		return spool.UsageSummary{}, callErr(ctx, "summing usage", err)
	}
	return u, nil
}
