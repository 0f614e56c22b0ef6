package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestMetricsQueriesDocumented holds docs/METRICS.md's "Useful queries" to
// the table of the metrics, which TestMetricsDocumented holds to the
// registry: every cspool_ name a query reads (a histogram's _bucket, _sum
// or _count included) is a family of the table, and every label a query
// groups by or matches is one of the family's (le for a histogram's
// buckets). A family or label renamed without its query breaks here, not
// on an operator's dashboard.
func TestMetricsQueriesDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## Useful queries\n")
	if !ok {
		t.Fatal(`docs/METRICS.md has no "## Useful queries"`)
	}
	blocks := codeBlocks(section)
	if len(blocks) == 0 {
		t.Fatal("docs/METRICS.md, Useful queries: no block")
	}
	families := documentedMetrics(t)
	name := regexp.MustCompile(`\bcspool_[a-z0-9_]+`)
	by := regexp.MustCompile(`\bby \(([^)]*)\)`)
	matchers := regexp.MustCompile(`\{([^}]*)\}`)
	queries := 0
	for _, q := range strings.Split(blocks[0], "\n") {
		if q = strings.TrimSpace(q); q == "" || strings.HasPrefix(q, "#") {
			continue
		}
		queries++
		var labels []string
		for _, m := range by.FindAllStringSubmatch(q, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				labels = append(labels, strings.TrimSpace(l))
			}
		}
		for _, m := range matchers.FindAllStringSubmatch(q, -1) {
			for l := range strings.SplitSeq(m[1], ",") {
				l, _, _ = strings.Cut(strings.TrimSpace(l), "=")
				labels = append(labels, strings.TrimRight(l, "!~"))
			}
		}
		for _, n := range name.FindAllString(q, -1) {
			family, isHistogram := n, false
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(n, suffix); ok && strings.HasPrefix(families[f], "histogram ") {
					family, isHistogram = f, true
				}
			}
			sig, ok := families[family]
			if !ok {
				t.Errorf("docs/METRICS.md's query %q reads %s, which the table of the metrics does not list", q, n)
				continue
			}
			_, names, _ := strings.Cut(sig, " ")
			have := strings.Split(names, ",")
			if isHistogram && strings.HasSuffix(n, "_bucket") {
				have = append(have, "le")
			}
			for _, l := range labels {
				if !slices.Contains(have, l) {
					t.Errorf("docs/METRICS.md's query %q uses the label %q; %s has %q", q, l, n, have)
				}
			}
		}
	}
	if queries < 5 {
		t.Fatalf("docs/METRICS.md, Useful queries: %d queries read, want the block's", queries)
	}
}
