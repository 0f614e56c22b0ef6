package metrics

import (
	"bufio"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// ContentType is the media type of the text exposition format 0.0.4.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteText writes every family in the text exposition format.
func (r *Registry) WriteText(w io.Writer) error {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	r.mu.Unlock()
	slices.SortFunc(fams, func(a, b *family) int { return strings.Compare(a.name, b.name) })
	bw := bufio.NewWriter(w)
	for _, f := range fams {
		f.write(bw)
	}
	return bw.Flush()
}

// Handler serves the registry at any path, for GET and HEAD. Errors writing
// to the scraper go to log (nil: discarded).
func (r *Registry) Handler(log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", ContentType)
		w.Header().Set("Cache-Control", "no-store")
		if req.Method == http.MethodHead {
			return
		}
		if err := r.WriteText(w); err != nil && log != nil {
			log.Debug("writing metrics", "remote", req.RemoteAddr, "err", err)
		}
	})
}

func (f *family) write(w *bufio.Writer) {
	type row struct {
		values []string
		s      *series
	}
	f.mu.Lock()
	rows := make([]row, 0, len(f.series))
	for _, s := range f.series {
		rows = append(rows, row{s.values, s})
	}
	funcs := slices.Clone(f.funcs)
	f.mu.Unlock()
	slices.SortFunc(rows, func(a, b row) int { return slices.Compare(a.values, b.values) })

	w.WriteString("# HELP " + f.name + " " + escapeHelp(f.help) + "\n")
	w.WriteString("# TYPE " + f.name + " " + string(f.kind) + "\n")
	for _, r := range rows {
		if f.kind != kindHistogram {
			sample(w, f.name, f.labels, r.values, "", "", math.Float64frombits(r.s.bits.Load()))
			continue
		}
		cum, count, sum := r.s.hist.snapshot()
		for i, le := range f.buckets {
			sample(w, f.name+"_bucket", f.labels, r.values, "le", formatFloat(le), float64(cum[i]))
		}
		sample(w, f.name+"_bucket", f.labels, r.values, "le", "+Inf", float64(count))
		sample(w, f.name+"_sum", f.labels, r.values, "", "", sum)
		sample(w, f.name+"_count", f.labels, r.values, "", "", float64(count))
	}
	for _, fs := range funcs {
		v, ok := fs.fn()
		if !ok {
			continue
		}
		values := make([]string, len(f.labels))
		for i, n := range f.labels {
			values[i] = fs.labels[n]
		}
		sample(w, f.name, f.labels, values, "", "", v)
	}
}

// sample writes one line: name{labels} value. extra, if not empty, is one
// more label (le) after the others.
func sample(w *bufio.Writer, name string, labels, values []string, extra, extraValue string, v float64) {
	w.WriteString(name)
	if len(labels) > 0 || extra != "" {
		w.WriteByte('{')
		for i, l := range labels {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(l + `="` + escapeLabel(values[i]) + `"`)
		}
		if extra != "" {
			if len(labels) > 0 {
				w.WriteByte(',')
			}
			w.WriteString(extra + `="` + escapeLabel(extraValue) + `"`)
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	w.WriteString(formatFloat(v))
	w.WriteByte('\n')
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// formatFloat writes a value as the format wants it: +Inf, -Inf, NaN, or
// the shortest decimal that reads back to the same float.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}
