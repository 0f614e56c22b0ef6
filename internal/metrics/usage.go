package metrics

import (
	"context"
	"sync"
	"time"

	"cspool/internal/spool"
)

// usageTTL is how long one summary of the logs' usage answers scrapes: the
// six gauges of a scrape share one scan of the logs.
const usageTTL = time.Second

// RegisterUsage adds the usage of the logs against the quota (limit, 0 for
// none) to r: how many logs, their bytes, the largest, and how many are
// near or over the quota. No series names a user (docs/METRICS.md).
// The figures are left out of a scrape when the store does not answer
// within 5 s.
func RegisterUsage(r *Registry, q spool.Quotas, limit int64) {
	c := &usageCache{q: q, limit: limit}
	gauge := func(name, help string, f func(spool.UsageSummary) float64) {
		r.GaugeFunc(name, help, nil, func() (float64, bool) {
			u, ok := c.get()
			return f(u), ok
		})
	}
	r.GaugeFunc("cspool_quota_bytes", "The per-user quota on what a delivery may fill a log to (--quota); 0: none.", nil,
		func() (float64, bool) { return float64(limit), true })
	gauge("cspool_logs", "Users' logs in the store.", func(u spool.UsageSummary) float64 { return float64(u.Logs) })
	gauge("cspool_log_bytes", "Bytes all logs hold: entries not compacted away and checkpoints.",
		func(u spool.UsageSummary) float64 { return float64(u.Bytes) })
	gauge("cspool_log_bytes_max", "Bytes the largest log holds.", func(u spool.UsageSummary) float64 { return float64(u.Largest) })
	gauge("cspool_logs_near_quota", "Logs at or above 90% of the quota.", func(u spool.UsageSummary) float64 { return float64(u.Near) })
	gauge("cspool_logs_over_quota", "Logs at or above the quota: deliveries to them are refused (LMTP 452 4.2.2, HTTP 507).",
		func(u spool.UsageSummary) float64 { return float64(u.Over) })
}

type usageCache struct {
	q     spool.Quotas
	limit int64

	mu  sync.Mutex
	at  time.Time
	u   spool.UsageSummary
	err error
}

func (c *usageCache) get() (spool.UsageSummary, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > usageTTL {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c.u, c.err = c.q.UsageSummary(ctx, c.limit)
		cancel()
		c.at = time.Now()
	}
	return c.u, c.err == nil
}
