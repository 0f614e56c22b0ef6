package imapd

import (
	"fmt"
	"testing"
)

// TestOddFormsOnBothPaths: the ENVELOPE and BODYSTRUCTURE of every odd
// message (testdata/odd and testdata/oddparts) are the same bytes
// whichever way the FETCH response is written: by appendFetch (the direct
// path), by go-imap (directFetch off), and by go-imap with a section
// beside them. Not parallel: it turns directFetch off and on.
func TestOddFormsOnBothPaths(t *testing.T) {
	ms := append(corpus(t, "odd"), corpus(t, "oddparts")...)
	w := deliveredWire(t, ms)
	old := directFetch
	defer func() { directFetch = old }()
	for i, m := range ms {
		seq := i + 1
		var want map[string]string
		for _, c := range []struct {
			direct bool
			items  string
		}{
			{true, "ENVELOPE BODYSTRUCTURE"},
			{false, "ENVELOPE BODYSTRUCTURE"},
			{true, "ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (X-NONE)]"},
			{true, "UID BODYSTRUCTURE ENVELOPE BINARY.SIZE[1]"},
		} {
			directFetch = c.direct
			u := w.ok(fmt.Sprintf("FETCH %d (%s)", seq, c.items))
			if len(u) != 1 {
				t.Fatalf("%s, %s: %d responses", m.name, c.items, len(u))
			}
			got := map[string]string{}
			for _, item := range []string{"ENVELOPE", "BODYSTRUCTURE"} {
				if got[item] = fetchItem(u[0], item); got[item] == "" {
					t.Fatalf("%s, %s: no %s in %q", m.name, c.items, item, u[0])
				}
			}
			if want == nil {
				want = got
				continue
			}
			for item, g := range got {
				if g != want[item] {
					t.Errorf("%s %s, with %s (direct path %v):\n got  %q\n want %q", m.name, item, c.items, c.direct, g, want[item])
				}
			}
		}
	}
}
