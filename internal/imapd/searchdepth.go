package imapd

import (
	"fmt"
	"strings"
)

// maxSearchDepth bounds how deep a SEARCH nests its keys: parenthesized
// lists, NOT and OR each open a level. go-imap parses a key inside NOT or
// OR by recursion, and so does the matcher, with frames of a few
// kilobytes (a SearchCriteria is about 400 bytes, OR holds two): a
// SEARCH of 12,000 NOTs (48 KB) grew its goroutine's stack to some 40
// MB, and 20 connections sending it at once took the daemon from 40 to
// 840 MB. go-imap's parser stops at lists nested 1,000 deep; NOT and OR
// had no bound.
const maxSearchDepth = maxListDepth

// searchDepth follows a SEARCH's keys as its lines come (RFC 9051 section
// 9, search-key) and reports how deep they nest. It is fed the command's
// lines, literals excluded: a literal the line ends with is one token.
type searchDepth struct {
	// open holds a level per list (-1) and per NOT or OR (the keys it
	// still takes).
	open    []int
	args    int // arguments of the last key still to come
	deepest int
	started bool // the command's name is behind
}

// line walks one line of the command (the first with its tag and name).
func (d *searchDepth) line(s string) {
	toks := spanTokens(s, false)
	prev := 0
	if !d.started {
		d.started = true
		// The tag, the command's name ("UID SEARCH" is two words).
		skip := 2
		if len(toks) > 1 && strings.EqualFold(toks[1].text, "UID") {
			skip = 3
		}
		if len(toks) < skip {
			return
		}
		prev = toks[skip-1].to
		toks = toks[skip:]
	}
	for _, t := range toks {
		// Between two tokens: spaces, parentheses and the line's end.
		for _, c := range s[prev:t.from] {
			d.paren(c)
		}
		prev = t.to
		d.token(t)
	}
	for _, c := range s[min(prev, len(s)):] {
		d.paren(c)
	}
}

func (d *searchDepth) paren(c rune) {
	switch c {
	case '(':
		d.push(-1)
	case ')':
		for len(d.open) > 0 {
			top := d.open[len(d.open)-1]
			d.open = d.open[:len(d.open)-1]
			if top < 0 {
				break
			}
		}
		d.keyDone()
	}
}

func (d *searchDepth) token(t spanToken) {
	if d.args > 0 {
		if d.args--; d.args == 0 {
			d.keyDone()
		}
		return
	}
	if t.quoted || t.literal {
		d.keyDone()
		return
	}
	switch k := strings.ToUpper(t.text); k {
	case "NOT":
		d.push(1)
	case "OR":
		d.push(2)
	default:
		if d.args = searchKeyArgs[k]; d.args == 0 {
			d.keyDone()
		}
	}
}

func (d *searchDepth) push(v int) {
	d.open = append(d.open, v)
	d.deepest = max(d.deepest, len(d.open))
}

// keyDone ends a key: the NOTs and ORs it completes end with it.
func (d *searchDepth) keyDone() {
	for len(d.open) > 0 {
		top := &d.open[len(d.open)-1]
		if *top < 0 {
			return
		}
		if *top--; *top > 0 {
			return
		}
		d.open = d.open[:len(d.open)-1]
	}
}

// tooDeep reports whether the keys so far nest deeper than maxSearchDepth.
func (d *searchDepth) tooDeep() bool { return d.deepest > maxSearchDepth }

// searchTooDeep is the answer to a SEARCH whose keys nest too deep, after
// BAD.
var searchTooDeep = fmt.Sprintf("[CLIENTBUG] search keys nested more than %d deep (lists, NOT and OR together); nothing was searched", maxSearchDepth)
