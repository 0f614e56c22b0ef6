package mailstore

import (
	"slices"
	"sort"
	"strings"
)

// System flag bits as stored in messages.flags.
const (
	bitSeen uint8 = 1 << iota
	bitAnswered
	bitFlagged
	bitDeleted
	bitDraft
)

// systemFlag maps a canonical system flag to its bit (0 if not one).
func systemFlag(f string) uint8 {
	switch f {
	case `\Seen`:
		return bitSeen
	case `\Answered`:
		return bitAnswered
	case `\Flagged`:
		return bitFlagged
	case `\Deleted`:
		return bitDeleted
	case `\Draft`:
		return bitDraft
	}
	return 0
}

// systemFlagNames lists the bits' names in their output order.
func systemFlagNames(bits uint8) []string {
	names := [...]string{`\Seen`, `\Answered`, `\Flagged`, `\Deleted`, `\Draft`}
	var out []string
	for i, n := range names {
		if bits&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// flagSet is a message's flags: system bits and keywords spelled as stored,
// sorted by their case-folded form.
type flagSet struct {
	bits     uint8
	keywords []string
}

// decodeKeywords splits the stored keyword column.
func decodeKeywords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, " ")
}

func (f flagSet) encodeKeywords() string { return strings.Join(f.keywords, " ") }

// list returns the flags in output order: system flags, then keywords.
func (f flagSet) list() []string {
	out := systemFlagNames(f.bits)
	out = append(out, f.keywords...)
	if out == nil {
		out = []string{}
	}
	return out
}

func foldKeyword(k string) string { return strings.ToLower(k) }

// union returns f with the flags of g added.
func (f flagSet) union(g flagSet) flagSet {
	out := flagSet{bits: f.bits | g.bits}
	seen := map[string]bool{}
	for _, list := range [][]string{f.keywords, g.keywords} {
		for _, k := range list {
			if !seen[foldKeyword(k)] {
				seen[foldKeyword(k)] = true
				out.keywords = append(out.keywords, k)
			}
		}
	}
	sortKeywords(out.keywords)
	return out
}

// minus returns f without the flags of g.
func (f flagSet) minus(g flagSet) flagSet {
	out := flagSet{bits: f.bits &^ g.bits}
	drop := map[string]bool{}
	for _, k := range g.keywords {
		drop[foldKeyword(k)] = true
	}
	for _, k := range f.keywords {
		if !drop[foldKeyword(k)] {
			out.keywords = append(out.keywords, k)
		}
	}
	return out
}

// has reports whether f holds every flag of g, without allocating.
func (f flagSet) has(g flagSet) bool {
	if f.bits&g.bits != g.bits {
		return false
	}
	for _, k := range g.keywords {
		if !slices.ContainsFunc(f.keywords, func(h string) bool { return foldKeyword(h) == foldKeyword(k) }) {
			return false
		}
	}
	return true
}

func (f flagSet) equal(g flagSet) bool {
	if f.bits != g.bits || len(f.keywords) != len(g.keywords) {
		return false
	}
	for i := range f.keywords {
		if f.keywords[i] != g.keywords[i] {
			return false
		}
	}
	return true
}

func sortKeywords(k []string) {
	sort.Slice(k, func(i, j int) bool { return foldKeyword(k[i]) < foldKeyword(k[j]) })
}
