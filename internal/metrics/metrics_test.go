package metrics

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"cspool/internal/spool"
	"cspool/internal/spool/sqlitestore"
)

const openMetrics = "application/openmetrics-text; version=1.0.0"

// known is a part of the label values the server gives NewSpool.
var known = Known{LMTPOutcomes: []string{"ok", "unknown_user", "unknown_domain"}, AuthReasons: []string{"unknown_key", "nonce_budget"}}

// scrape fetches url with the Accept header given ("" for none) and parses
// the answer with expfmt in the format the Content-Type names (of
// OpenMetrics, only the families named with one of the prefixes). Families are
// keyed by the name a query uses: OpenMetrics names a counter family
// without its _total, which is put back.
func scrape(t *testing.T, url, accept string, prefixes ...string) (map[string]*dto.MetricFamily, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d, %v", resp.StatusCode, err)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format == expfmt.FmtUnknown {
		t.Fatalf("scrape: unknown format %q", resp.Header.Get("Content-Type"))
	}
	in := string(body)
	if format.FormatType() == expfmt.TypeOpenMetrics {
		in = ownFamilies(in, prefixes...)
	}
	fams := map[string]*dto.MetricFamily{}
	dec := expfmt.NewDecoder(strings.NewReader(in), format)
	for {
		f := &dto.MetricFamily{}
		if err := dec.Decode(f); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("parsing the scrape (%s): %v\n%s", format, err, body)
		}
		name := f.GetName()
		if f.GetType() == dto.MetricType_COUNTER && !strings.HasSuffix(name, "_total") {
			name += "_total"
		}
		fams[name] = f
	}
	return fams, resp.Header, string(body)
}

// ownFamilies keeps of an OpenMetrics scrape the families named with one
// of the prefixes, and the closing # EOF. The process and Go runtime
// families are checked in the text format: expfmt's OpenMetrics parser
// checks each line against the grammar by general parsing (seconds to build
// the grammar once, then milliseconds a line), and in OpenMetrics the Go collector's
// go_memstats_alloc_bytes gauge and go_memstats_alloc_bytes_total counter
// share a family name (a counter's family drops the _total; client_golang
// issue 829, open), which Prometheus ingests but the parser refuses.
func ownFamilies(text string, prefixes ...string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		name := line
		for _, p := range []string{"# HELP ", "# TYPE ", "# UNIT "} {
			name = strings.TrimPrefix(name, p)
		}
		for _, p := range append(prefixes, "# EOF") {
			if strings.HasPrefix(name, p) {
				b.WriteString(line)
				break
			}
		}
	}
	return b.String()
}

// find returns the series of family name whose labels include want.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// number is a counter's or a gauge's value, -1 when the series is absent.
func number(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	m := find(fams, name, labels)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return -1
}

// failingUsage is a store whose usage scan fails (a database that does not
// answer in time).
type failingUsage struct{ spool.Quotas }

func (failingUsage) UsageSummary(context.Context, int64) (spool.UsageSummary, error) {
	return spool.UsageSummary{}, context.DeadlineExceeded
}

// TestExposition records through every hook of Spool, with the usage of a
// real SQLite store, and reads each figure back from a scrape in the text
// format and in OpenMetrics, along with the process and Go runtime
// families.
func TestExposition(t *testing.T) {
	ctx := context.Background()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	reg := NewRegistry()
	s := NewSpool(reg, known)
	RegisterUsage(reg, st, 1000)
	reg.MustRegister(
		OptionalGauge(prometheus.GaugeOpts{Name: "test_size_bytes", Help: "Size.", ConstLabels: prometheus.Labels{"backend": "a"}},
			func() (float64, bool) { return 1234, true }),
		OptionalGauge(prometheus.GaugeOpts{Name: "test_absent_bytes", Help: "Not read."},
			func() (float64, bool) { return 0, false }),
	)

	lmtp, api := s.LMTP(), s.HTTP()
	if _, err := s.TimeAppends(st).Append(ctx, "alice", [][]byte{make([]byte, 950)}); err != nil {
		t.Fatal(err)
	}
	lmtp.Delivery("ok")
	lmtp.Delivery("ok")
	lmtp.Delivery("unknown_user")
	api.Request("POST", "/v1/users/{user}/entries", 200)
	api.Request("GET", "/v1/users/{user}/head", 401)
	api.AuthFailure("unknown_key")
	api.LongPoll(1)
	api.LongPoll(1)
	api.LongPoll(-1)
	api.StoreAppend(3*time.Millisecond, nil)
	api.StoreAppend(2*time.Second, errors.New("disk full"))
	api.Delivery(200)
	api.Delivery(403)
	api.Delivery(507)

	srv := httptest.NewServer(Handler(reg, nil))
	defer srv.Close()
	for _, accept := range []string{"", openMetrics} {
		fams, h, text := scrape(t, srv.URL+"/metrics", accept, "cspool_", "test_", "process_cpu_seconds")
		ct := h.Get("Content-Type")
		wantCT := "text/plain; version=0.0.4"
		if accept != "" {
			wantCT = openMetrics
		}
		if !strings.HasPrefix(ct, wantCT) {
			t.Errorf("Accept %q: Content-Type %q, want %q", accept, ct, wantCT)
		}
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   float64
		}{
			{"cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "ok"}, 2},
			{"cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "unknown_user"}, 1},
			{"cspool_deliveries_total", map[string]string{"via": "http", "outcome": "ok"}, 1},
			{"cspool_deliveries_total", map[string]string{"via": "http", "outcome": "forbidden"}, 1},
			{"cspool_deliveries_total", map[string]string{"via": "http", "outcome": "over_quota"}, 1},
			{"cspool_http_requests_total", map[string]string{"method": "POST", "route": "/v1/users/{user}/entries", "status": "200"}, 1},
			{"cspool_http_requests_total", map[string]string{"method": "GET", "route": "/v1/users/{user}/head", "status": "401"}, 1},
			{"cspool_auth_failures_total", map[string]string{"reason": "unknown_key"}, 1},
			{"cspool_longpolls_open", nil, 1},
			{"cspool_store_append_errors_total", map[string]string{"via": "http"}, 1},
			{"cspool_store_append_errors_total", map[string]string{"via": "lmtp"}, 0}, // there from the start
			{"cspool_deliveries_total", map[string]string{"via": "http", "outcome": "wrong_key"}, 0},
			{"cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "unknown_domain"}, 0},
			{"cspool_auth_failures_total", map[string]string{"reason": "nonce_budget"}, 0},
			{"cspool_quota_bytes", nil, 1000},
			{"cspool_logs", nil, 1},
			{"cspool_logs_near_quota", nil, 1},
			{"cspool_logs_over_quota", nil, 0},
			{"test_size_bytes", map[string]string{"backend": "a"}, 1234},
		} {
			if got := number(fams, c.name, c.labels); got != c.want {
				t.Errorf("Accept %q: %s%v = %v, want %v", accept, c.name, c.labels, got, c.want)
			}
		}
		if got := number(fams, "cspool_log_bytes_max", nil); got < 950 {
			t.Errorf("Accept %q: cspool_log_bytes_max = %v, want at least 950", accept, got)
		}
		if fams["test_absent_bytes"] != nil && len(fams["test_absent_bytes"].GetMetric()) > 0 {
			t.Errorf("Accept %q: a gauge that could not be read was written", accept)
		}
		hist := func(via string) *dto.Histogram {
			m := find(fams, "cspool_store_append_seconds", map[string]string{"via": via})
			if m == nil || m.Histogram == nil {
				t.Fatalf("Accept %q: no histogram for via=%s:\n%s", accept, via, text)
			}
			return m.Histogram
		}
		if h := hist("http"); h.GetSampleCount() != 2 || h.GetSampleSum() < 2 || len(h.GetBucket()) < len(LatencyBuckets()) {
			t.Errorf("Accept %q: http appends: count %d sum %v buckets %d", accept, h.GetSampleCount(), h.GetSampleSum(), len(h.GetBucket()))
		} else {
			for _, b := range h.GetBucket() {
				if math.IsInf(b.GetUpperBound(), 1) {
					continue // kept by some parsers, not by others
				}
				want := uint64(0)
				if b.GetUpperBound() >= 0.005 {
					want = 1
				}
				if b.GetUpperBound() >= 2.5 {
					want = 2
				}
				if b.GetCumulativeCount() != want {
					t.Errorf("Accept %q: bucket le=%v holds %d, want %d", accept, b.GetUpperBound(), b.GetCumulativeCount(), want)
				}
			}
		}
		if h := hist("lmtp"); h.GetSampleCount() != 1 {
			t.Errorf("Accept %q: lmtp appends: count %d, want 1", accept, h.GetSampleCount())
		}
		if fams["process_cpu_seconds_total"] == nil {
			t.Errorf("Accept %q: process_cpu_seconds_total missing", accept)
		}
		for _, name := range []string{"process_resident_memory_bytes", "process_start_time_seconds",
			"go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds"} {
			if accept == "" && fams[name] == nil || !strings.Contains(text, "\n# TYPE "+name+" ") {
				t.Errorf("Accept %q: family %s missing", accept, name)
			}
		}
		if strings.Contains(text, "alice") {
			t.Errorf("Accept %q: the scrape names a user", accept)
		}
	}
}

// TestUsageLeftOut: when the store does not answer, the usage gauges are
// left out of the scrape (never a made-up 0) and the quota stays.
func TestUsageLeftOut(t *testing.T) {
	reg := prometheus.NewRegistry()
	RegisterUsage(reg, failingUsage{}, 5)
	srv := httptest.NewServer(Handler(reg, nil))
	defer srv.Close()
	fams, _, text := scrape(t, srv.URL, "")
	if got := number(fams, "cspool_quota_bytes", nil); got != 5 {
		t.Errorf("cspool_quota_bytes = %v, want 5", got)
	}
	for _, name := range []string{"cspool_logs", "cspool_log_bytes", "cspool_log_bytes_max", "cspool_logs_near_quota", "cspool_logs_over_quota"} {
		if fams[name] != nil {
			t.Errorf("%s written although the store did not answer:\n%s", name, text)
		}
	}
}

// TestConcurrentUpdatesAndScrapes scrapes while hooks are called from
// several goroutines: every scrape parses, and no count is lost.
func TestConcurrentUpdatesAndScrapes(t *testing.T) {
	reg := NewRegistry()
	s := NewSpool(reg, known)
	srv := httptest.NewServer(Handler(reg, nil))
	defer srv.Close()
	lmtp, api := s.LMTP(), s.HTTP()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 1000 {
				lmtp.Delivery([]string{"ok", "temporary"}[i%2])
				api.StoreAppend(time.Duration(j)*time.Millisecond, nil)
			}
		}()
	}
	for _, accept := range []string{"", openMetrics, "", openMetrics, ""} {
		scrape(t, srv.URL, accept, "cspool_")
	}
	wg.Wait()
	fams, _, _ := scrape(t, srv.URL, openMetrics, "cspool_")
	ok := number(fams, "cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "ok"})
	tmp := number(fams, "cspool_deliveries_total", map[string]string{"via": "lmtp", "outcome": "temporary"})
	m := find(fams, "cspool_store_append_seconds", map[string]string{"via": "http"})
	if ok != 4000 || tmp != 4000 || m == nil || m.GetHistogram().GetSampleCount() != 8000 {
		t.Errorf("counts ok=%v temporary=%v histogram=%v, want 4000 4000 8000", ok, tmp, m)
	}
}
