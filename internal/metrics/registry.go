package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding the process collector (CPU,
// memory, open file descriptors, start time: process_*) and the Go runtime
// collector (go_*), the figures operators' dashboards expect of any
// program. The program's own metrics are registered in it next.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
	)
	return r
}

// Handler serves g at any path: the text format 0.0.4, or OpenMetrics 1.0
// to a scraper that asks for it, gzipped when the scraper accepts it. A
// collector that fails leaves its families out of that scrape rather than
// failing it, and says so in log at warning level; an error writing to the
// scraper (gone away) goes there at debug level. log nil: both discarded.
func Handler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	opts := promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}
	if log != nil {
		opts.ErrorLog = slogger{log}
	}
	return promhttp.HandlerFor(g, opts)
}

// slogger is promhttp's Logger on a slog.Logger.
type slogger struct{ l *slog.Logger }

func (s slogger) Println(v ...any) {
	msg := strings.TrimSpace(fmt.Sprintln(v...))
	if strings.HasPrefix(msg, "error gathering metrics") {
		s.l.Warn("gathering metrics", "err", msg)
		return
	}
	s.l.Debug("serving metrics", "err", msg)
}

// OptionalGauge is a gauge read at each scrape, and left out of the scrape
// when read reports false (a store that does not answer in time): absent
// rather than a made-up 0, which an alert would take for a figure.
// prometheus.NewGaugeFunc has no way to leave a value out.
func OptionalGauge(opts prometheus.GaugeOpts, read func() (float64, bool)) prometheus.Collector {
	return &optionalGauge{
		desc: prometheus.NewDesc(prometheus.BuildFQName(opts.Namespace, opts.Subsystem, opts.Name), opts.Help, nil, opts.ConstLabels),
		read: read,
	}
}

type optionalGauge struct {
	desc *prometheus.Desc
	read func() (float64, bool)
}

func (g *optionalGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *optionalGauge) Collect(ch chan<- prometheus.Metric) {
	if v, ok := g.read(); ok {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
	}
}

// LatencyBuckets returns bucket bounds for durations from a millisecond to a
// minute, in seconds.
func LatencyBuckets() []float64 {
	return []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
}
