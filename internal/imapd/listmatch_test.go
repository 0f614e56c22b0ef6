package imapd

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2/imapserver"
)

// matchList means what go-imap's MatchList means: every name and pattern
// of up to 5 characters over a small alphabet, under a few references.
func TestMatchListAsGoIMAP(t *testing.T) {
	t.Parallel()
	words := func(alphabet string, max int) []string {
		out := []string{""}
		last := []string{""}
		for n := 1; n <= max; n++ {
			var next []string
			for _, w := range last {
				for _, c := range alphabet {
					next = append(next, w+string(c))
				}
			}
			out = append(out, next...)
			last = next
		}
		return out
	}
	names := words("a/b", 5)
	patterns := words("a/*%", 5)
	for _, ref := range []string{"", "a", "a/", "/"} {
		for _, p := range patterns {
			for _, n := range names {
				if got, want := matchList(n, '/', ref, p), imapserver.MatchList(n, '/', ref, p); got != want {
					t.Fatalf("name %q, reference %q, pattern %q: got %v, go-imap says %v", n, ref, p, got, want)
				}
			}
		}
	}
}

// A LIST pattern that makes a backtracking matcher try every split of a
// long name is answered, and the connection goes on. go-imap's MatchList
// tried C(200, 12) splits of this name: the LIST was never answered, and
// the goroutine stayed busy after the client left.
func TestListPatternAnswered(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	long := strings.Repeat("a", 200)
	w.ok("CREATE " + long)
	w.ok("CREATE " + long + "/" + long)
	for _, c := range []struct {
		pattern string
		want    int
	}{
		{strings.Repeat("*a", 12) + "b", 0},
		{strings.Repeat("%a", 12) + "b", 0},
		{strings.Repeat("%a", 12) + "*", 2},
		{strings.Repeat("*%", 5000) + "a", 2},
		{strings.Repeat("%", 5000) + "a", 1},
	} {
		u := w.ok(fmt.Sprintf(`LIST "" "%s"`, c.pattern))
		if len(u) != c.want {
			t.Errorf("LIST %.20q...: %d names, want %d", c.pattern, len(u), c.want)
		}
	}
	w.ok(`LIST "" "*"`)
}

// Names below INBOX are named with INBOX in any case, as INBOX itself is
// (RFC 9051 section 5.1): CREATE, SELECT, RENAME and DELETE of
// "inbox/y" name "INBOX/y", and so does a LIST or LSUB pattern or
// reference. LIST "" "inbox/*" listed nothing, though SELECT "inbox/y"
// selected the mailbox.
func TestListInboxAnyCase(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	w.ok("CREATE inbox/y")
	w.ok("SUBSCRIBE Inbox/y")
	for _, c := range []struct{ cmd, want string }{
		{`LIST "" "inbox/*"`, `* LIST (\HasNoChildren) "/" "INBOX/y"`},
		{`LIST "" "Inbox/%"`, `* LIST (\HasNoChildren) "/" "INBOX/y"`},
		{`LIST "inbox" "%"`, `* LIST (\HasNoChildren) "/" "INBOX/y"`},
		{`LIST "iNbOx/" "y"`, `* LIST (\HasNoChildren) "/" "INBOX/y"`},
		{`LSUB "" "inbox/%"`, `* LSUB () "/" "INBOX/y"`},
		{`LIST "" "INBOX/y"`, `* LIST (\HasNoChildren) "/" "INBOX/y"`},
	} {
		u := w.ok(c.cmd)
		expectUntagged(t, c.cmd, u, c.want)
	}
	// Not a prefix of another name: "inboxes" is a name of its own.
	w.ok("CREATE inboxes")
	u := w.ok(`LIST "" "INBOXES"`)
	expectUntagged(t, `LIST "" "INBOXES"`, u)
}

// The INBOX at the start of a name below it is matched in any case by a
// wildcard pattern too, as INBOX itself is, and as Dovecot matches it:
// LIST "" "inbox*" listed INBOX but not INBOX/y, LSUB "" "inbox*" listed
// INBOX alone, without the subscribed INBOX/y, and so did LIST
// (SUBSCRIBED) "" "inb*" (or, with INBOX not subscribed, LSUB listed
// INBOX as \Noselect, a level above a subscribed name it took for one the
// pattern did not match).
func TestListInboxChildrenByWildcard(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	w.ok("CREATE INBOX/y")
	w.ok("CREATE inboxes")
	w.ok("SUBSCRIBE INBOX/y")
	for _, c := range []struct {
		cmd  string
		want []string
	}{
		{`LIST "" "inbox*"`, []string{`* LIST (\HasChildren) "/" INBOX`, `* LIST (\HasNoChildren) "/" "INBOX/y"`, `* LIST (\HasNoChildren) "/" "inboxes"`}},
		{`LIST "" "Inb*/y"`, []string{`* LIST (\HasNoChildren) "/" "INBOX/y"`}},
		{`LIST "" "in%x/y"`, []string{`* LIST (\HasNoChildren) "/" "INBOX/y"`}},
		{`LIST "" "*x/%"`, []string{`* LIST (\HasNoChildren) "/" "INBOX/y"`}},
		{`LSUB "" "inbox*"`, []string{`* LSUB () "/" INBOX`, `* LSUB () "/" "INBOX/y"`}},
		{`LIST (SUBSCRIBED) "" "inb*"`, []string{`* LIST (\HasChildren \Subscribed) "/" INBOX`, `* LIST (\HasNoChildren \Subscribed) "/" "INBOX/y"`}},
		// The fold covers INBOX only: "inboxes" is a name of its own.
		{`LIST "" "INBOXES"`, nil},
		{`LIST "" "INBOXE*"`, nil},
	} {
		u := w.ok(c.cmd)
		expectUntagged(t, c.cmd, u, c.want...)
	}
}

// matchList means what go-imap's MatchList means on names longer than a
// word of the matcher's bit sets (64 prefixes): names of up to 300 bytes
// and patterns of up to three wildcards, cut from such a name or made at
// random.
func TestMatchListLongNamesAsGoIMAP(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(alphabet string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 3000 {
		name := word("ab/", 1+rng.IntN(300))
		pattern := word("ab/*%", 1+rng.IntN(5))
		if rng.IntN(2) == 0 {
			// A pattern that matches, or nearly: the name with up to
			// three pieces of it made wildcards.
			b := []byte(name)
			for range 1 + rng.IntN(3) {
				i := rng.IntN(len(b))
				j := min(len(b), i+rng.IntN(80))
				b = append(b[:i], append([]byte{"*%"[rng.IntN(2)]}, b[j:]...)...)
			}
			if rng.IntN(3) == 0 {
				b[rng.IntN(len(b))] = 'a'
			}
			pattern = string(b)
		}
		if got, want := matchList(name, '/', "", pattern), imapserver.MatchList(name, '/', "", pattern); got != want {
			t.Fatalf("name %q, pattern %q: got %v, go-imap says %v", name, pattern, got, want)
		}
	}
}
