package metrics

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families. The zero value is not usable: call
// NewRegistry. It is safe for concurrent use.
type Registry struct {
	mu       sync.Mutex
	families map[string]*family
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{families: map[string]*family{}} }

// Labels are constant label names and values of a function metric.
type Labels map[string]string

type kind string

const (
	kindCounter   kind = "counter"
	kindGauge     kind = "gauge"
	kindHistogram kind = "histogram"
)

// family is one metric name with its series.
type family struct {
	name, help string
	kind       kind
	labels     []string
	buckets    []float64 // histograms only

	mu     sync.Mutex
	series map[string]*series // by joined label values
	funcs  []funcSeries
}

// series is one combination of label values.
type series struct {
	values []string
	bits   atomic.Uint64 // counters and gauges: math.Float64bits
	hist   *Histogram
}

// funcSeries is a value read at each scrape.
type funcSeries struct {
	labels Labels
	fn     func() (float64, bool)
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

func (r *Registry) register(name, help string, k kind, labels []string, buckets []float64) *family {
	if !metricName.MatchString(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	for _, l := range labels {
		if !labelName.MatchString(l) || strings.HasPrefix(l, "__") || (k == kindHistogram && l == "le") {
			panic(fmt.Sprintf("metrics: %s: invalid label name %q", name, l))
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.families[name]; ok {
		panic(fmt.Sprintf("metrics: %s registered twice", name))
	}
	f := &family{name: name, help: help, kind: k, labels: slices.Clone(labels), buckets: buckets, series: map[string]*series{}}
	r.families[name] = f
	return f
}

// get returns the series for values, creating it.
func (f *family) get(values []string) *series {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("metrics: %s: %d label values for %d labels", f.name, len(values), len(f.labels)))
	}
	key := strings.Join(values, "\xff")
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.series[key]
	if s == nil {
		s = &series{values: slices.Clone(values)}
		if f.kind == kindHistogram {
			s.hist = &Histogram{upper: f.buckets, counts: make([]uint64, len(f.buckets))}
		}
		f.series[key] = s
	}
	return s
}

// CounterVec is a counter family with labels.
type CounterVec struct{ f *family }

// Counter registers a counter. Its name should end in _total.
func (r *Registry) Counter(name, help string, labels ...string) *CounterVec {
	return &CounterVec{r.register(name, help, kindCounter, labels, nil)}
}

// With returns the counter for these label values, in the order of the
// label names.
func (v *CounterVec) With(values ...string) *Counter { return &Counter{v.f.get(values)} }

// Counter is a value that only goes up.
type Counter struct{ s *series }

// Inc adds 1.
func (c *Counter) Inc() { c.Add(1) }

// Add adds d, which must not be negative (a negative d is ignored).
func (c *Counter) Add(d float64) {
	if d < 0 || math.IsNaN(d) {
		return
	}
	addFloat(&c.s.bits, d)
}

// Value returns the current value.
func (c *Counter) Value() float64 { return math.Float64frombits(c.s.bits.Load()) }

// GaugeVec is a gauge family with labels.
type GaugeVec struct{ f *family }

// Gauge registers a gauge.
func (r *Registry) Gauge(name, help string, labels ...string) *GaugeVec {
	return &GaugeVec{r.register(name, help, kindGauge, labels, nil)}
}

// With returns the gauge for these label values.
func (v *GaugeVec) With(values ...string) *Gauge { return &Gauge{v.f.get(values)} }

// Gauge is a value that goes up and down.
type Gauge struct{ s *series }

// Set sets the value.
func (g *Gauge) Set(x float64) { g.s.bits.Store(math.Float64bits(x)) }

// Add adds d (negative to subtract).
func (g *Gauge) Add(d float64) { addFloat(&g.s.bits, d) }

// Value returns the current value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.s.bits.Load()) }

func addFloat(bits *atomic.Uint64, d float64) {
	for {
		old := bits.Load()
		if bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+d)) {
			return
		}
	}
}

// GaugeFunc registers a gauge read by calling fn at each scrape; when fn
// reports false the series is left out of that scrape. Several calls with
// the same name add series with different constant labels; they must all
// use the same label names.
func (r *Registry) GaugeFunc(name, help string, labels Labels, fn func() (float64, bool)) {
	r.addFunc(name, help, kindGauge, labels, fn)
}

// CounterFunc is GaugeFunc for a value that only goes up (a counter kept
// elsewhere, e.g. by a store).
func (r *Registry) CounterFunc(name, help string, labels Labels, fn func() (float64, bool)) {
	r.addFunc(name, help, kindCounter, labels, fn)
}

func (r *Registry) addFunc(name, help string, k kind, labels Labels, fn func() (float64, bool)) {
	names := make([]string, 0, len(labels))
	for n := range labels {
		names = append(names, n)
	}
	slices.Sort(names)
	r.mu.Lock()
	f := r.families[name]
	r.mu.Unlock()
	if f == nil {
		f = r.register(name, help, k, names, nil)
	} else if f.kind != k || !slices.Equal(f.labels, names) || len(f.funcs) == 0 {
		panic(fmt.Sprintf("metrics: %s registered twice with different kinds or labels", name))
	}
	f.mu.Lock()
	f.funcs = append(f.funcs, funcSeries{labels, fn})
	f.mu.Unlock()
}

// HistogramVec is a histogram family with labels.
type HistogramVec struct{ f *family }

// Histogram registers a histogram with the given upper bucket bounds
// (strictly increasing; +Inf is implied).
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *HistogramVec {
	if len(buckets) == 0 || !slices.IsSorted(buckets) || slices.Contains(buckets, math.Inf(1)) {
		panic(fmt.Sprintf("metrics: %s: buckets must be increasing and finite", name))
	}
	for i := 1; i < len(buckets); i++ {
		if buckets[i] == buckets[i-1] {
			panic(fmt.Sprintf("metrics: %s: bucket %v given twice", name, buckets[i]))
		}
	}
	return &HistogramVec{r.register(name, help, kindHistogram, labels, slices.Clone(buckets))}
}

// With returns the histogram for these label values.
func (v *HistogramVec) With(values ...string) *Histogram { return v.f.get(values).hist }

// Histogram counts observations in buckets.
type Histogram struct {
	upper []float64

	mu     sync.Mutex
	counts []uint64 // not cumulative; the last bucket (+Inf) is count - sum(counts)
	count  uint64
	sum    float64
}

// Observe records one value.
func (h *Histogram) Observe(x float64) {
	i, _ := slices.BinarySearch(h.upper, x) // first bound >= x
	h.mu.Lock()
	if i < len(h.counts) {
		h.counts[i]++
	}
	h.count++
	h.sum += x
	h.mu.Unlock()
}

// snapshot returns cumulative bucket counts, the count and the sum.
func (h *Histogram) snapshot() (cum []uint64, count uint64, sum float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	cum = make([]uint64, len(h.counts))
	var c uint64
	for i, n := range h.counts {
		c += n
		cum[i] = c
	}
	return cum, h.count, h.sum
}

// LatencyBuckets returns bucket bounds for durations from a millisecond to a
// minute, in seconds.
func LatencyBuckets() []float64 {
	return []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
}
