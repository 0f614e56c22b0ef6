package imapd

import (
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
// prefix of the pattern the set of name prefixes it matches: at most
// len(pattern)+1 passes over the name, each ending the match early once
// no prefix is left.
// The first fold bytes of the name match their pattern bytes in any ASCII
// case.
func globMatch(name, pattern string, delim byte, fold int) bool {
	cur := make([]bool, len(name)+1)
	next := make([]bool, len(name)+1)
	cur[0] = true
	for p := 0; p < len(pattern); p++ {
		c := pattern[p]
		alive := false
		switch c {
		case '*', '%':
			run := false
			for i := 0; i <= len(name); i++ {
				if c == '%' && i > 0 && name[i-1] == delim {
					run = false
				}
				run = run || cur[i]
				next[i] = run
				alive = alive || run
			}
		default:
			next[0] = false
			for i := 1; i <= len(name); i++ {
				next[i] = cur[i-1] && sameByte(name[i-1], c, i-1 < fold)
				alive = alive || next[i]
			}
		}
		if !alive {
			return false
		}
		cur, next = next, cur
	}
	return cur[len(name)]
}
