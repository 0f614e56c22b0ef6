package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Spool is the metric set of `cspool server` (docs/METRICS.md). No series
// carries a user name, key or address: labels are the route, the status,
// the outcome, the reason and the way in ("lmtp" or "http").
type Spool struct {
	deliveries   *prometheus.CounterVec
	appendSecs   *prometheus.HistogramVec
	appendErrors *prometheus.CounterVec
	longPolls    prometheus.Gauge
	authFailures *prometheus.CounterVec
	requests     *prometheus.CounterVec
	cpHeld       prometheus.Gauge
	cpWaiting    prometheus.Gauge
	cpRefused    *prometheus.CounterVec
	apRefused    *prometheus.CounterVec
	rdRefused    *prometheus.CounterVec
}

// Known are the label values the hooks are given from fixed sets: their
// series are created at 0 by NewSpool, so that a dashboard sees every one
// and rate() the first count.
type Known struct {
	LMTPOutcomes []string // deliver.Outcomes
	AuthReasons  []string // api.AuthReasons
	// CheckpointRefusals are api.CheckpointRefusals.
	CheckpointRefusals []string
	// AppendRefusals are api.AppendRefusals.
	AppendRefusals []string
	// ReadRefusals are api.ReadRefusals.
	ReadRefusals []string
}

// NewSpool registers the spool server's metrics in r.
func NewSpool(r prometheus.Registerer, known Known) *Spool {
	s := &Spool{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_deliveries_total",
			Help: "Deliveries by way in (lmtp, http) and outcome; LMTP counts each recipient."}, []string{"via", "outcome"}),
		appendSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cspool_store_append_seconds",
			Help:    "Duration of store appends (until durable), by way in: lmtp deliveries, http appends by devices and deliveries.",
			Buckets: LatencyBuckets()}, []string{"via"}),
		appendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_store_append_errors_total",
			Help: "Store appends that failed, by way in."}, []string{"via"}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cspool_longpolls_open",
			Help: "Reads currently waiting for new entries (long-polls)."}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_auth_failures_total",
			Help: "HTTP requests refused with 401 or 403, by reason."}, []string{"reason"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_http_requests_total",
			Help: "HTTP API requests by method, route pattern and status."}, []string{"method", "route", "status"}),
		cpHeld: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cspool_checkpoint_uploads_held_bytes",
			Help: "Bytes checkpoint uploads hold now of the --checkpoint-memory budget (bodies and decoded keep lists)."}),
		cpWaiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cspool_checkpoint_uploads_waiting",
			Help: "Checkpoint uploads waiting now for room in the --checkpoint-memory budget."}),
		cpRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_checkpoint_refusals_total",
			Help: "Checkpoint uploads refused, by reason: too_large (413), memory (503)."}, []string{"reason"}),
		apRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_append_refusals_total",
			Help: "Appends refused for the --append-memory budget before their body was read, by reason: memory (503), key_share (429)."}, []string{"reason"}),
		rdRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cspool_read_refusals_total",
			Help: "Reads refused before their entries were read for what reads hold in memory, by reason: memory (503, the --read-memory budget), key_share (429, the key's quarter of it), key_reads (429, the key's 8 reads)."}, []string{"reason"}),
	}
	r.MustRegister(s.deliveries, s.appendSecs, s.appendErrors, s.longPolls, s.authFailures, s.requests,
		s.cpHeld, s.cpWaiting, s.cpRefused, s.apRefused, s.rdRefused)
	// Every series of a fixed label set is there from the start, at 0: a
	// counter that first appears at 1 loses that 1 to rate() and increase(),
	// and a dashboard or alert finds every outcome and reason to select.
	for _, via := range []string{"lmtp", "http"} {
		s.appendSecs.WithLabelValues(via)
		s.appendErrors.WithLabelValues(via)
	}
	for _, o := range known.LMTPOutcomes {
		s.deliveries.WithLabelValues("lmtp", o)
	}
	for code := 100; code < 600; code++ {
		s.deliveries.WithLabelValues("http", httpOutcome(code))
	}
	for _, r := range known.AuthReasons {
		s.authFailures.WithLabelValues(r)
	}
	for _, r := range known.CheckpointRefusals {
		s.cpRefused.WithLabelValues(r)
	}
	for _, r := range known.AppendRefusals {
		s.apRefused.WithLabelValues(r)
	}
	for _, r := range known.ReadRefusals {
		s.rdRefused.WithLabelValues(r)
	}
	return s
}

// HTTP returns the hooks for the HTTP API server (api.Config.Metrics).
func (s *Spool) HTTP() *HTTPHooks { return &HTTPHooks{s} }

// LMTP returns the hooks for the LMTP listener (deliver.LMTPOptions.Metrics).
func (s *Spool) LMTP() *LMTPHooks { return &LMTPHooks{s} }

// HTTPHooks implements the API server's Metrics interface.
type HTTPHooks struct{ s *Spool }

// Request counts one answered request.
func (h *HTTPHooks) Request(method, route string, status int) {
	h.s.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
}

// AuthFailure counts one refused request.
func (h *HTTPHooks) AuthFailure(reason string) { h.s.authFailures.WithLabelValues(reason).Inc() }

// LongPoll moves the open long-poll gauge.
func (h *HTTPHooks) LongPoll(delta int) { h.s.longPolls.Add(float64(delta)) }

// StoreAppend observes one append by an HTTP request.
func (h *HTTPHooks) StoreAppend(took time.Duration, err error) { h.s.observeAppend("http", took, err) }

// Delivery counts one append signed by the spool key.
func (h *HTTPHooks) Delivery(status int) {
	h.s.deliveries.WithLabelValues("http", httpOutcome(status)).Inc()
}

// CheckpointHeld moves the gauge of bytes checkpoint uploads hold.
func (h *HTTPHooks) CheckpointHeld(delta int64) { h.s.cpHeld.Add(float64(delta)) }

// CheckpointWaiting moves the gauge of checkpoint uploads waiting for room.
func (h *HTTPHooks) CheckpointWaiting(delta int) { h.s.cpWaiting.Add(float64(delta)) }

// CheckpointRefused counts one checkpoint upload refused.
func (h *HTTPHooks) CheckpointRefused(reason string) { h.s.cpRefused.WithLabelValues(reason).Inc() }

// AppendRefused counts one append refused for the appends' memory budget.
func (h *HTTPHooks) AppendRefused(reason string) { h.s.apRefused.WithLabelValues(reason).Inc() }

// ReadRefused counts one read refused for what reads hold in memory.
func (h *HTTPHooks) ReadRefused(reason string) { h.s.rdRefused.WithLabelValues(reason).Inc() }

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
func (l *LMTPHooks) Delivery(outcome string) { l.s.deliveries.WithLabelValues("lmtp", outcome).Inc() }

func (s *Spool) observeAppend(via string, took time.Duration, err error) {
	s.appendSecs.WithLabelValues(via).Observe(took.Seconds())
	if err != nil {
		s.appendErrors.WithLabelValues(via).Inc()
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
