package main

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"cspool/internal/spool/sqlitestore"
)

// docTable returns the rows of the first table after heading in
// docs/METRICS.md, each as its cells without backquotes.
func docTable(t *testing.T, heading string) [][]string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("docs/METRICS.md has no %q", heading)
	}
	var rows [][]string
	for line := range strings.Lines(rest) {
		switch {
		case strings.HasPrefix(line, "|---"):
		case strings.HasPrefix(line, "|"):
			cells := strings.Split(strings.TrimSpace(line), "|")
			for i := range cells {
				cells[i] = strings.Trim(cells[i], " `")
			}
			rows = append(rows, cells[1:len(cells)-1])
		case len(rows) > 0:
			return rows[1:] // the header row is not data
		}
	}
	return rows[1:]
}

// documentedMetrics reads the table of docs/METRICS.md, "The metrics": for
// each family, its type and label names joined by commas, sorted.
func documentedMetrics(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, cells := range docTable(t, "## The metrics") {
		if len(cells) != 4 {
			t.Fatalf("docs/METRICS.md, The metrics: a row with %d cells: %q", len(cells), cells)
		}
		var labels []string
		for l := range strings.SplitSeq(cells[2], ",") {
			if l = strings.Trim(l, " `"); l != "" {
				labels = append(labels, l)
			}
		}
		slices.Sort(labels)
		if _, dup := out[cells[0]]; dup {
			t.Errorf("docs/METRICS.md lists %s twice", cells[0])
		}
		out[cells[0]] = cells[1] + " " + strings.Join(labels, ",")
	}
	return out
}

// TestMetricsDocumented compares the families of the server's registry
// (SQLite store, every hook called once so that each labelled family has a
// series) with the table of docs/METRICS.md: the same names, types and
// label names, so that neither can change without the other. Beyond them
// only the process and Go runtime collectors' families are exported.
func TestMetricsDocumented(t *testing.T) {
	t.Parallel()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, sp := newServerRegistry(st, st, 1<<20)
	h, l := sp.HTTP(), sp.LMTP()
	h.Request("GET", "/v1/users/{user}/head", 200)
	h.AuthFailure("missing")
	h.StoreAppend(time.Millisecond, errors.New("failed"))
	h.Delivery(200)
	h.CheckpointHeld(1)
	h.CheckpointWaiting(1)
	h.CheckpointRefused("too_large")
	h.AppendRefused("memory")
	h.ReadRefused("memory")
	l.Delivery("ok")
	if _, err := sp.TimeAppends(st).Append(context.Background(), "u", [][]byte{[]byte("x")}); err != nil {
		t.Fatal(err)
	}

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]string{}
	var goFams, processFams int
	for _, f := range fams {
		name := f.GetName()
		switch {
		case strings.HasPrefix(name, "go_"):
			goFams++
			continue
		case strings.HasPrefix(name, "process_"):
			processFams++
			continue
		case !strings.HasPrefix(name, "cspool_"):
			t.Errorf("family %s is neither cspool's nor a standard collector's", name)
			continue
		}
		if len(f.GetMetric()) == 0 {
			t.Errorf("family %s has no series in this test: call its hook", name)
			continue
		}
		var labels []string
		for _, lp := range f.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		slices.Sort(labels)
		exported[name] = strings.ToLower(dto.MetricType_name[int32(f.GetType())]) + " " + strings.Join(labels, ",")
	}
	if goFams == 0 || processFams == 0 {
		t.Errorf("%d go_ and %d process_ families, want the Go runtime and process collectors", goFams, processFams)
	}
	documented := documentedMetrics(t)
	for name, sig := range exported {
		if d, ok := documented[name]; !ok {
			t.Errorf("%s (%s) is exported but not in docs/METRICS.md", name, sig)
		} else if d != sig {
			t.Errorf("%s: docs/METRICS.md says %q, the registry %q (type and labels)", name, d, sig)
		}
	}
	for name := range documented {
		if _, ok := exported[name]; !ok {
			t.Errorf("docs/METRICS.md lists %s, which is not exported", name)
		}
	}

	// The delivery outcomes and auth failure reasons are fixed sets, each
	// series there from the start: the tables list exactly them.
	values := func(family string, names ...string) []string {
		var out []string
		for _, f := range fams {
			if f.GetName() != family {
				continue
			}
			for _, m := range f.GetMetric() {
				have := map[string]string{}
				for _, lp := range m.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				var v []string
				for _, n := range names {
					v = append(v, have[n])
				}
				out = append(out, strings.Join(v, " "))
			}
		}
		slices.Sort(out)
		return out
	}
	documentedValues := func(heading string, columns int) []string {
		var out []string
		for _, cells := range docTable(t, heading) {
			out = append(out, strings.Join(cells[:columns], " "))
		}
		slices.Sort(out)
		return out
	}
	if got, doc := values("cspool_deliveries_total", "via", "outcome"), documentedValues("### Delivery outcomes", 2); !slices.Equal(got, doc) {
		t.Errorf("delivery outcomes: exported %q, docs/METRICS.md %q", got, doc)
	}
	if got, doc := values("cspool_auth_failures_total", "reason"), documentedValues("### Auth failure reasons", 1); !slices.Equal(got, doc) {
		t.Errorf("auth failure reasons: exported %q, docs/METRICS.md %q", got, doc)
	}
	if got, doc := values("cspool_checkpoint_refusals_total", "reason"), documentedValues("### Checkpoint refusal reasons", 1); !slices.Equal(got, doc) {
		t.Errorf("checkpoint refusal reasons: exported %q, docs/METRICS.md %q", got, doc)
	}
}
