package imapd

import (
	"fmt"
	"strings"
	"testing"

	"cspool/internal/testproc"
)

// TestListPatternOverManyMailboxes: a LIST pattern as long as the names,
// which keeps a match alive to its end in every one, over 20 hierarchies
// of 490 levels (9,800 mailboxes, names up to 986 bytes), is answered
// within the wire's deadline. The matcher stepped through the name's
// bytes for each of the pattern's: 2.8 ms a name of 1,000 bytes, and the
// LIST took half a minute of a core. It checks a time, not an order
// between goroutines: CI runs it without -race.
func TestListPatternOverManyMailboxes(t *testing.T) {
	testproc.SkipUnderRace(t)
	t.Parallel()
	r := newRig(t)
	d := r.device("a")
	w := loginWire(t, d.addr)
	levels := strings.TrimSuffix(strings.Repeat("q/", 490), "/")
	for i := range 20 {
		w.ok(fmt.Sprintf("CREATE p%02d/%s", i, levels))
	}
	for _, c := range []struct {
		pattern string
		want    int
	}{
		{strings.Repeat("*q", 490) + "x", 0},
		{strings.Repeat("*/", 490) + "q", 20},
		{"p07/" + strings.Repeat("%/", 489) + "q", 1},
		{strings.Repeat("%", 100) + "/*", 20 * 490},
	} {
		if u := w.ok(fmt.Sprintf(`LIST "" "%s"`, c.pattern)); len(u) != c.want {
			t.Errorf("LIST %.20q... (%d bytes): %d names, want %d", c.pattern, len(c.pattern), len(u), c.want)
		}
	}
}
