package metrics

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestWriteAndParse(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("test_requests_total", "Requests.\nSecond line with a \\ backslash.", "route", "status")
	c.With("/a", "200").Add(3)
	c.With(`we"ird\path`+"\n", "500").Inc()
	c.With("/a", "200").Add(-5) // ignored: counters only go up
	g := r.Gauge("test_open", "Open things.")
	g.With().Add(2)
	g.With().Add(-1)
	h := r.Histogram("test_seconds", "Durations.", []float64{0.1, 1, 10}, "via")
	for _, v := range []float64{0.05, 0.1, 0.5, 5, 50} {
		h.With("x").Observe(v)
	}
	h.With("y") // a series with no observations
	r.GaugeFunc("test_size_bytes", "Size.", Labels{"backend": "sqlite"}, func() (float64, bool) { return 1234, true })
	r.GaugeFunc("test_size_bytes", "Size.", Labels{"backend": "postgres"}, func() (float64, bool) { return 0, false })
	r.CounterFunc("test_commits_total", "Commits.", nil, func() (float64, bool) { return 7, true })

	var buf bytes.Buffer
	if err := r.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	fams, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing our own output: %v\n%s", err, text)
	}
	checks := []struct {
		fam, sample string
		labels      map[string]string
		want        float64
	}{
		{"test_requests_total", "test_requests_total", map[string]string{"route": "/a", "status": "200"}, 3},
		{"test_requests_total", "test_requests_total", map[string]string{"route": `we"ird\path` + "\n"}, 1},
		{"test_open", "test_open", nil, 1},
		{"test_seconds", "test_seconds_bucket", map[string]string{"via": "x", "le": "0.1"}, 2},
		{"test_seconds", "test_seconds_bucket", map[string]string{"via": "x", "le": "1"}, 3},
		{"test_seconds", "test_seconds_bucket", map[string]string{"via": "x", "le": "10"}, 4},
		{"test_seconds", "test_seconds_bucket", map[string]string{"via": "x", "le": "+Inf"}, 5},
		{"test_seconds", "test_seconds_count", map[string]string{"via": "x"}, 5},
		{"test_seconds", "test_seconds_sum", map[string]string{"via": "x"}, 55.65},
		{"test_seconds", "test_seconds_count", map[string]string{"via": "y"}, 0},
		{"test_size_bytes", "test_size_bytes", map[string]string{"backend": "sqlite"}, 1234},
		{"test_commits_total", "test_commits_total", nil, 7},
	}
	for _, c := range checks {
		f := fams[c.fam]
		if f == nil {
			t.Errorf("family %s missing from\n%s", c.fam, text)
			continue
		}
		got, ok := f.Get(c.sample, c.labels)
		if !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%s%v = %v (found %v), want %v", c.sample, c.labels, got, ok, c.want)
		}
	}
	if f := fams["test_requests_total"]; f.Type != "counter" || f.Help != "Requests.\nSecond line with a \\ backslash." {
		t.Errorf("requests family: type %q help %q", f.Type, f.Help)
	}
	if _, ok := fams["test_size_bytes"].Get("test_size_bytes", map[string]string{"backend": "postgres"}); ok {
		t.Error("a function gauge that reported false was written")
	}
	for _, want := range []string{
		"# HELP test_requests_total Requests.\\nSecond line with a \\\\ backslash.\n",
		"# TYPE test_seconds histogram\n",
		`test_requests_total{route="we\"ird\\path\n",status="500"} 1` + "\n",
		`test_seconds_bucket{via="x",le="+Inf"} 5` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	// Families come sorted, so the output is the same from scrape to scrape.
	var again bytes.Buffer
	r.WriteText(&again)
	if again.String() != text {
		t.Errorf("two scrapes differ:\n%s\n---\n%s", text, again.String())
	}
}

func TestParseRefuses(t *testing.T) {
	for _, text := range []string{
		"x 1\n",                                    // no HELP/TYPE
		"# HELP x h\n# TYPE x counter\nx -1\n",     // negative counter
		"# HELP x h\n# TYPE x gauge\ny 1\n",        // wrong family
		"# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n", // unterminated
		"# HELP x h\n# TYPE x gauge\nx{a=\"\\q\"} 1\n",
		"# HELP x h\n# TYPE x histogram\nx_bucket{le=\"1\"} 2\nx_bucket{le=\"+Inf\"} 1\nx_sum 1\nx_count 1\n",
		"# HELP x h\n# TYPE x histogram\nx_bucket{le=\"+Inf\"} 2\nx_sum 1\nx_count 3\n",
		"# HELP x h\n# TYPE x summary\n",
	} {
		if _, err := Parse(strings.NewReader(text)); err == nil {
			t.Errorf("Parse accepted %q", text)
		}
	}
}

func TestRegistrationPanics(t *testing.T) {
	for name, f := range map[string]func(r *Registry){
		"bad name":      func(r *Registry) { r.Counter("1x", "h") },
		"bad label":     func(r *Registry) { r.Counter("x", "h", "a-b") },
		"le label":      func(r *Registry) { r.Histogram("x", "h", []float64{1}, "le") },
		"twice":         func(r *Registry) { r.Gauge("x", "h"); r.Gauge("x", "h") },
		"label count":   func(r *Registry) { r.Counter("x", "h", "a").With("1", "2") },
		"bad buckets":   func(r *Registry) { r.Histogram("x", "h", []float64{2, 1}) },
		"func and vec":  func(r *Registry) { r.Gauge("x", "h"); r.GaugeFunc("x", "h", nil, nil) },
		"double bucket": func(r *Registry) { r.Histogram("x", "h", []float64{1, 1}) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f(NewRegistry())
		}()
	}
}

func TestConcurrentUpdatesAndHandler(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c_total", "c", "k")
	h := r.Histogram("h_seconds", "h", LatencyBuckets())
	srv := httptest.NewServer(r.Handler(nil))
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 1000 {
				c.With(string(rune('a' + i%2))).Inc()
				h.With().Observe(float64(j) / 1000)
			}
		}()
	}
	// Scrape while the writers run: every scrape must parse and be consistent.
	for range 5 {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != ContentType {
			t.Errorf("Content-Type %q, want %q", ct, ContentType)
		}
		if _, err := Parse(bytes.NewReader(body)); err != nil {
			t.Fatalf("scrape during updates: %v", err)
		}
	}
	wg.Wait()
	var buf bytes.Buffer
	r.WriteText(&buf)
	fams, err := Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := fams["c_total"].Get("c_total", map[string]string{"k": "a"})
	b, _ := fams["c_total"].Get("c_total", map[string]string{"k": "b"})
	n, _ := fams["h_seconds"].Get("h_seconds_count", nil)
	if a != 4000 || b != 4000 || n != 8000 {
		t.Errorf("counts a=%v b=%v histogram=%v, want 4000 4000 8000", a, b, n)
	}
	resp, err := http.Post(srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405", resp.StatusCode)
	}
}
