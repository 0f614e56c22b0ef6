package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cspool/internal/spool"
)

// usageTTL is how long one summary of the logs' usage answers scrapes: the
// gauges of a scrape share one scan of the logs, and scrapes closer than
// this share it too.
const usageTTL = time.Second

// RegisterUsage adds the usage of the logs against the quota (limit, 0 for
// none) to r: how many logs, their bytes, the largest, and how many are
// near or over the quota. No series names a user (docs/METRICS.md).
// The figures are left out of a scrape when the store does not answer
// within 5 s; the quota itself is always there.
func RegisterUsage(r prometheus.Registerer, q spool.Quotas, limit int64) {
	r.MustRegister(&usageCollector{q: q, limit: limit})
}

// usageDescs are the gauges of one summary, in the order of their values
// in usageCollector.Collect.
var (
	quotaDesc  = prometheus.NewDesc("cspool_quota_bytes", "The per-user quota on what a delivery may fill a log to (--quota); 0: none.", nil, nil)
	usageDescs = [...]*prometheus.Desc{
		prometheus.NewDesc("cspool_logs", "Users' logs in the store.", nil, nil),
		prometheus.NewDesc("cspool_log_bytes", "Bytes all logs hold: entries not compacted away and checkpoints.", nil, nil),
		prometheus.NewDesc("cspool_log_bytes_max", "Bytes the largest log holds.", nil, nil),
		prometheus.NewDesc("cspool_logs_near_quota", "Logs at or above 90% of the quota.", nil, nil),
		prometheus.NewDesc("cspool_logs_over_quota", "Logs at or above the quota: deliveries to them are refused (LMTP 452 4.2.2, HTTP 507).", nil, nil),
	}
)

// usageCollector reads spool.Quotas.UsageSummary once per scrape, at most
// once per usageTTL.
type usageCollector struct {
	q     spool.Quotas
	limit int64

	mu  sync.Mutex
	at  time.Time
	u   spool.UsageSummary
	err error
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- quotaDesc
	for _, d := range usageDescs {
		ch <- d
	}
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(quotaDesc, prometheus.GaugeValue, float64(c.limit))
	u, ok := c.get()
	if !ok {
		return
	}
	for i, v := range [len(usageDescs)]float64{float64(u.Logs), float64(u.Bytes), float64(u.Largest), float64(u.Near), float64(u.Over)} {
		ch <- prometheus.MustNewConstMetric(usageDescs[i], prometheus.GaugeValue, v)
	}
}

func (c *usageCollector) get() (spool.UsageSummary, bool) {
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
