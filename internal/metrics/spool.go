package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Spool is the metric set of `cspool server` (docs/METRICS.md). No series
// carries a user name, key or address: labels are the route, the status,
// the outcome, the reason and the way in ("lmtp" or "http").
type Spool struct {
	deliveries   *CounterVec
	appendSecs   *HistogramVec
	appendErrors *CounterVec
	longPolls    *Gauge
	authFailures *CounterVec
	requests     *CounterVec
}

// NewSpool registers the spool server's metrics in r.
func NewSpool(r *Registry) *Spool {
	return &Spool{
		deliveries: r.Counter("cspool_deliveries_total",
			"Deliveries by way in (lmtp, http) and outcome; LMTP counts each recipient.", "via", "outcome"),
		appendSecs: r.Histogram("cspool_store_append_seconds",
			"Duration of store appends (until durable), by way in: lmtp deliveries, http appends by devices and deliveries.",
			LatencyBuckets(), "via"),
		appendErrors: r.Counter("cspool_store_append_errors_total",
			"Store appends that failed, by way in.", "via"),
		longPolls: r.Gauge("cspool_longpolls_open",
			"Reads currently waiting for new entries (long-polls).").With(),
		authFailures: r.Counter("cspool_auth_failures_total",
			"HTTP requests refused with 401 or 403, by reason.", "reason"),
		requests: r.Counter("cspool_http_requests_total",
			"HTTP API requests by method, route pattern and status.", "method", "route", "status"),
	}
}

// HTTP returns the hooks for the HTTP API server (api.Config.Metrics).
func (s *Spool) HTTP() *HTTPHooks { return &HTTPHooks{s} }

// LMTP returns the hooks for the LMTP listener (deliver.LMTPOptions.Metrics).
func (s *Spool) LMTP() *LMTPHooks { return &LMTPHooks{s} }

// HTTPHooks implements the API server's Metrics interface.
type HTTPHooks struct{ s *Spool }

// Request counts one answered request.
func (h *HTTPHooks) Request(method, route string, status int) {
	h.s.requests.With(method, route, strconv.Itoa(status)).Inc()
}

// AuthFailure counts one refused request.
func (h *HTTPHooks) AuthFailure(reason string) { h.s.authFailures.With(reason).Inc() }

// LongPoll moves the open long-poll gauge.
func (h *HTTPHooks) LongPoll(delta int) { h.s.longPolls.Add(float64(delta)) }

// StoreAppend observes one append by an HTTP request.
func (h *HTTPHooks) StoreAppend(took time.Duration, err error) { h.s.observeAppend("http", took, err) }

// Delivery counts one append signed by the spool key.
func (h *HTTPHooks) Delivery(status int) { h.s.deliveries.With("http", httpOutcome(status)).Inc() }

// httpOutcome names a delivery over HTTP by its status, with the names the
// LMTP listener uses where they mean the same.
func httpOutcome(status int) string {
	switch {
	case status == http.StatusOK:
		return "ok"
	case status == http.StatusRequestEntityTooLarge:
		return "too_large"
	case status == http.StatusUnauthorized:
		return "unauthenticated"
	case status == http.StatusForbidden:
		return "forbidden"
	case status == http.StatusNotFound:
		return "unknown_user"
	case status == http.StatusUnprocessableEntity:
		return "wrong_key"
	case status == http.StatusInsufficientStorage:
		return "over_quota"
	case status >= 500:
		return "temporary"
	}
	return "rejected"
}

// LMTPHooks implements the LMTP listener's Metrics interface.
type LMTPHooks struct{ s *Spool }

// Delivery counts one recipient's outcome.
func (l *LMTPHooks) Delivery(outcome string) { l.s.deliveries.With("lmtp", outcome).Inc() }

func (s *Spool) observeAppend(via string, took time.Duration, err error) {
	s.appendSecs.With(via).Observe(took.Seconds())
	if err != nil {
		s.appendErrors.With(via).Inc()
	}
}

// Appender is the append half of a store (spool.Store, deliver.Appender).
type Appender interface {
	Append(ctx context.Context, user string, batch [][]byte) (first uint64, err error)
}

// TimeAppends returns a with its appends observed as LMTP deliveries'.
func (s *Spool) TimeAppends(a Appender) Appender { return timedAppender{a, s} }

type timedAppender struct {
	a Appender
	s *Spool
}

func (t timedAppender) Append(ctx context.Context, user string, batch [][]byte) (uint64, error) {
	start := time.Now()
	first, err := t.a.Append(ctx, user, batch)
	t.s.observeAppend("lmtp", time.Since(start), err)
	return first, err
}
