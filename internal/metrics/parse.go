package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Family is one metric family read back by Parse.
type Family struct {
	Name, Help, Type string
	Samples          []Sample
}

// Sample is one line of a family.
type Sample struct {
	Name   string // the family's name, or with _bucket, _sum, _count
	Labels map[string]string
	Value  float64
}

// Get returns the value of the sample named name whose labels include
// every pair in want, and whether there is one.
func (f *Family) Get(name string, want map[string]string) (float64, bool) {
	for _, s := range f.Samples {
		if s.Name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.Labels[k] != v {
				match = false
				break
			}
		}
		if match {
			return s.Value, true
		}
	}
	return 0, false
}

// Parse reads the text exposition format 0.0.4 strictly, as this package
// writes it (for tests and tools): every family opens with # HELP and
// # TYPE, samples follow their family, and histograms are checked (bounds
// increasing, counts cumulative, le="+Inf" equal to _count).
func Parse(r io.Reader) (map[string]*Family, error) {
	fams := map[string]*Family{}
	var cur *Family
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if err := parseLine(fams, &cur, line); err != nil {
			return nil, fmt.Errorf("line %d %q: %w", n, line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading metrics: %w", err)
	}
	for _, f := range fams {
		if f.Type == "histogram" {
			if err := checkHistogram(f); err != nil {
				return nil, fmt.Errorf("histogram %s: %w", f.Name, err)
			}
		}
	}
	return fams, nil
}

func parseLine(fams map[string]*Family, cur **Family, line string) error {
	switch {
	case strings.HasPrefix(line, "# HELP "):
		name, help, _ := strings.Cut(line[len("# HELP "):], " ")
		if !metricName.MatchString(name) {
			return fmt.Errorf("bad metric name %q", name)
		}
		if fams[name] != nil {
			return fmt.Errorf("family %s given twice", name)
		}
		h, err := unescape(help, false)
		if err != nil {
			return err
		}
		*cur = &Family{Name: name, Help: h}
		fams[name] = *cur
		return nil
	case strings.HasPrefix(line, "# TYPE "):
		name, typ, _ := strings.Cut(line[len("# TYPE "):], " ")
		if *cur == nil || (*cur).Name != name || (*cur).Type != "" || len((*cur).Samples) > 0 {
			return fmt.Errorf("TYPE of %s not right after its HELP", name)
		}
		switch typ {
		case "counter", "gauge", "histogram":
		default:
			return fmt.Errorf("unknown type %q", typ)
		}
		(*cur).Type = typ
		return nil
	case strings.HasPrefix(line, "#"), line == "":
		return fmt.Errorf("unexpected comment or blank line")
	}
	f := *cur
	if f == nil || f.Type == "" {
		return fmt.Errorf("sample before HELP and TYPE")
	}
	s, err := parseSample(line)
	if err != nil {
		return err
	}
	ok := s.Name == f.Name
	if f.Type == "histogram" {
		ok = s.Name == f.Name+"_bucket" || s.Name == f.Name+"_sum" || s.Name == f.Name+"_count"
	}
	if !ok {
		return fmt.Errorf("sample %s in family %s (%s)", s.Name, f.Name, f.Type)
	}
	if f.Type == "counter" && (s.Value < 0 || math.IsNaN(s.Value)) {
		return fmt.Errorf("counter value %v", s.Value)
	}
	f.Samples = append(f.Samples, s)
	return nil
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, fmt.Errorf("no value")
	}
	s.Name, line = line[:i], line[i:]
	if !metricName.MatchString(s.Name) {
		return s, fmt.Errorf("bad sample name %q", s.Name)
	}
	if line[0] == '{' {
		line = line[1:]
		for len(line) > 0 && line[0] != '}' {
			eq := strings.IndexByte(line, '=')
			if eq <= 0 || eq+1 >= len(line) || line[eq+1] != '"' {
				return s, fmt.Errorf("bad label")
			}
			name := line[:eq]
			if !labelName.MatchString(name) {
				return s, fmt.Errorf("bad label name %q", name)
			}
			end := closingQuote(line[eq+2:])
			if end < 0 {
				return s, fmt.Errorf("unterminated label value")
			}
			v, err := unescape(line[eq+2:eq+2+end], true)
			if err != nil {
				return s, err
			}
			if _, dup := s.Labels[name]; dup {
				return s, fmt.Errorf("label %s twice", name)
			}
			s.Labels[name] = v
			line = strings.TrimPrefix(line[eq+3+end:], ",")
		}
		if !strings.HasPrefix(line, "}") {
			return s, fmt.Errorf("unterminated labels")
		}
		line = line[1:]
	}
	if !strings.HasPrefix(line, " ") {
		return s, fmt.Errorf("no space before the value")
	}
	v, err := parseValue(line[1:])
	s.Value = v
	return s, err
}

// closingQuote returns the index of the first unescaped '"' in s, or -1.
func closingQuote(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func unescape(s string, label bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i++; i == len(s) {
			return "", fmt.Errorf("trailing backslash")
		}
		switch s[i] {
		case '\\':
			b.WriteByte('\\')
		case 'n':
			b.WriteByte('\n')
		case '"':
			if !label {
				return "", fmt.Errorf(`\" in help text`)
			}
			b.WriteByte('"')
		default:
			return "", fmt.Errorf("bad escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v, nil
}

// checkHistogram checks each series of a histogram family: increasing
// bounds ending in +Inf, cumulative counts, +Inf equal to _count, one _sum.
func checkHistogram(f *Family) error {
	type state struct {
		lastLE, lastCount float64
		inf, count        float64
		seenInf, seenCnt  bool
		seenSum           bool
	}
	series := map[string]*state{}
	key := func(l map[string]string) string {
		var parts []string
		for k, v := range l {
			if k != "le" {
				parts = append(parts, k+"="+v)
			}
		}
		slices.Sort(parts)
		return strings.Join(parts, "\xff")
	}
	for _, s := range f.Samples {
		k := key(s.Labels)
		st := series[k]
		if st == nil {
			st = &state{lastLE: math.Inf(-1)}
			series[k] = st
		}
		switch s.Name {
		case f.Name + "_bucket":
			le, err := parseValue(s.Labels["le"])
			if err != nil || st.seenInf {
				return fmt.Errorf("bucket le=%q out of order", s.Labels["le"])
			}
			if le <= st.lastLE || s.Value < st.lastCount {
				return fmt.Errorf("bucket le=%q not increasing or not cumulative", s.Labels["le"])
			}
			st.lastLE, st.lastCount = le, s.Value
			if math.IsInf(le, 1) {
				st.seenInf, st.inf = true, s.Value
			}
		case f.Name + "_sum":
			st.seenSum = true
		case f.Name + "_count":
			st.seenCnt, st.count = true, s.Value
		}
	}
	for k, st := range series {
		if !st.seenInf || !st.seenCnt || !st.seenSum || st.inf != st.count {
			return fmt.Errorf("series {%s}: +Inf bucket %v, _count %v, _sum present %v", k, st.inf, st.count, st.seenSum)
		}
	}
	return nil
}
