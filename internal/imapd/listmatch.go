package imapd

import (
	"math/bits"
	"strings"

	"cspool/internal/mailstore"
)

// matchList reports whether the mailbox name matches LIST's reference and
// pattern (RFC 9051 section 6.3.9): the reference is joined to the
// pattern with delim unless the pattern starts with it; "*" matches any
// run of characters, "%" any run without delim. It means what go-imap's
// imapserver.MatchList means, in time bounded by the lengths of the name
// and the pattern: MatchList tries every split of the name at each
// wildcard, and a pattern of a dozen "*a" against a mailbox name of 200
// "a" took longer than anyone waits, a goroutine busy for good that the
// client's leaving did not stop.
func matchList(name string, delim byte, ref, pattern string) bool {
	return matchListFold(name, delim, ref, pattern, 0)
}

// matchListFold is matchList with the first fold bytes of the name
// matched in any ASCII case, by the reference and the pattern alike: 5
// for INBOX and the names below it (inboxFold).
func matchListFold(name string, delim byte, ref, pattern string, fold int) bool {
	d := string(delim)
	if strings.HasPrefix(pattern, d) {
		ref = ""
		pattern = pattern[1:]
	}
	if ref != "" {
		if !strings.HasSuffix(ref, d) {
			ref += d
		}
		if len(name) < len(ref) {
			return false
		}
		for i := 0; i < len(ref); i++ {
			if !sameByte(name[i], ref[i], i < fold) {
				return false
			}
		}
		name = name[len(ref):]
		fold = max(fold-len(ref), 0)
	}
	return globMatch(name, compactWildcards(pattern), delim, fold)
}

// inboxFold is how many bytes at the start of name a LIST pattern matches
// in any case: INBOX's 5 for INBOX and the names below it, whose INBOX
// every command takes in any case (RFC 9051 section 5.1,
// mailstore.NormalizeName); none for any other name ("inboxes" is a name
// of its own).
func inboxFold(name string, delim byte) int {
	if name == mailstore.InboxName || strings.HasPrefix(name, mailstore.InboxName+string(delim)) {
		return len(mailstore.InboxName)
	}
	return 0
}

// sameByte reports whether the name's byte n is the pattern's byte p, in
// any ASCII case when fold is set.
func sameByte(n, p byte, fold bool) bool {
	if n == p {
		return true
	}
	if !fold {
		return false
	}
	if 'a' <= n && n <= 'z' {
		n -= 'a' - 'A'
	}
	if 'a' <= p && p <= 'z' {
		p -= 'a' - 'A'
	}
	return n == p
}

// compactWildcards replaces each run of wildcards with the one that
// matches the same: "*" if the run has one, else "%".
func compactWildcards(pattern string) string {
	if !strings.Contains(pattern, "**") && !strings.Contains(pattern, "%%") &&
		!strings.Contains(pattern, "*%") && !strings.Contains(pattern, "%*") {
		return pattern
	}
	var b strings.Builder
	for i := 0; i < len(pattern); {
		c := pattern[i]
		if c != '*' && c != '%' {
			b.WriteByte(c)
			i++
			continue
		}
		j := i
		for j < len(pattern) && (pattern[j] == '*' || pattern[j] == '%') {
			if pattern[j] == '*' {
				c = '*'
			}
			j++
		}
		b.WriteByte(c)
		i = j
	}
	return b.String()
}

// globMatch matches name against pattern byte by byte, keeping for each
// prefix of the pattern the set of name prefixes it matches, as a set of
// bits (bit i: the first i bytes of the name), 64 prefixes to a word: a
// pattern byte costs a pass over the set's words (a "%" about ten), not
// over the name's bytes, and the match ends early once no prefix is left.
// A pass over the name's bytes for each of the pattern's took 2.8 ms for
// a name of 1,000 bytes and a pattern of as many that keeps prefixes
// alive to its end ("*q" 490 times and "x" against "p/q/q/..."): a LIST
// of it over 20,000 such mailboxes took a minute of a core.
// The first fold bytes of the name match their pattern bytes in any ASCII
// case.
func globMatch(name, pattern string, delim byte, fold int) bool {
	n := len(name)
	words := (n + 1 + 63) / 64
	buf := make([]uint64, 5*words)
	cur, next, stay, tmp, tmp2 := buf[:words], buf[words:2*words], buf[2*words:3*words], buf[3*words:4*words], buf[4*words:]
	cur[0] = 1
	// stay: bit i is set when "%" may take the name's byte i-1, which is
	// not the delimiter.
	for i := 1; i <= n; i++ {
		if name[i-1] != delim {
			stay[i/64] |= 1 << (i % 64)
		}
	}
	var masks [256][]uint64 // bit i: the name's byte i-1 is the pattern's byte
	for p := 0; p < len(pattern); p++ {
		switch c := pattern[p]; c {
		case '*':
			// Every prefix from the shortest live one on.
			f := firstBit(cur)
			for w := range next {
				switch {
				case w < f/64:
					next[w] = 0
				case w == f/64:
					next[w] = ^uint64(0) << (f % 64)
				default:
					next[w] = ^uint64(0)
				}
			}
			next[n/64] &= ^uint64(0) >> (63 - n%64)
		case '%':
			// Every prefix reached from a live one by taking bytes that
			// are not the delimiter: doubling steps, each over the words.
			copy(next, cur)
			copy(tmp2, stay)
			for step := 1; step <= n; step *= 2 {
				shiftUp(tmp, next, step)
				for w := range next {
					next[w] |= tmp[w] & tmp2[w]
				}
				shiftUp(tmp, tmp2, step)
				for w := range tmp2 {
					tmp2[w] &= tmp[w]
				}
			}
		default:
			m := masks[c]
			if m == nil {
				m = make([]uint64, words)
				for i := 1; i <= n; i++ {
					if sameByte(name[i-1], c, i-1 < fold) {
						m[i/64] |= 1 << (i % 64)
					}
				}
				masks[c] = m
			}
			shiftUp(next, cur, 1)
			for w := range next {
				next[w] &= m[w]
			}
		}
		if firstBit(next) > n {
			return false
		}
		cur, next = next, cur
	}
	return cur[n/64]&(1<<(n%64)) != 0
}

// shiftUp sets dst to src with every bit moved up by k places.
func shiftUp(dst, src []uint64, k int) {
	wk, bk := k/64, uint(k%64)
	for w := len(dst) - 1; w >= 0; w-- {
		var v uint64
		if s := w - wk; s >= 0 {
			v = src[s] << bk
			if bk > 0 && s > 0 {
				v |= src[s-1] >> (64 - bk)
			}
		}
		dst[w] = v
	}
}

// firstBit returns the lowest bit set in set, or past its end when none is.
func firstBit(set []uint64) int {
	for w, v := range set {
		if v != 0 {
			return w*64 + bits.TrailingZeros64(v)
		}
	}
	return len(set) * 64
}
