package imapd

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// TestHeaderFieldsNamesOnce: a FETCH of HEADER.FIELDS and
// HEADER.FIELDS.NOT lists of 7,000 names hands the library, for each
// message, only the names of its own fields among them, the set of the
// list made once for the command. The library got the 7,000 for each
// message, and made its set of them again each time (2.4 ms a message;
// .NOT, taking the names out one after the other, 1.4 ms). Not parallel:
// namesHanded counts for the whole package.
func TestHeaderFieldsNamesOnce(t *testing.T) {
	r := newRig(t)
	d := r.device("a")
	const n = 20
	var pos uint64
	for i := range n {
		pos = r.Deliver(fmt.Appendf(nil, "From: a@example.org\r\nTo: b@example.org\r\nSubject: s%d\r\nX-Extra: e\r\nx-extra: f\r\n\r\nbody\r\n", i))
	}
	d.synced(pos)
	w := loginWire(t, d.addr)
	w.ok("SELECT INBOX")
	names := make([]string, 0, 7000)
	for i := range 6998 {
		names = append(names, fmt.Sprintf("X%d", i))
	}
	names = append(names, "SUBJECT", "x-EXTRA")
	list := strings.Join(names, " ")
	before := namesHanded.Load()
	u := w.ok(fmt.Sprintf("FETCH 1:%d (BODY.PEEK[HEADER.FIELDS (%s)])", n, list))
	if len(u) != n {
		t.Fatalf("%d responses, want %d", len(u), n)
	}
	for i, l := range u {
		want := fmt.Sprintf("Subject: s%d\r\nX-Extra: e\r\nx-extra: f\r\n\r\n)\r\n", i)
		if !strings.HasSuffix(l, want) {
			t.Fatalf("message %d: %.200q, want it to end with %q", i+1, l[max(0, len(l)-200):], want)
		}
	}
	u = w.ok(fmt.Sprintf("FETCH 1:%d (BODY.PEEK[HEADER.FIELDS.NOT (%s)])", n, list))
	for i, l := range u {
		if want := "From: a@example.org\r\nTo: b@example.org\r\n\r\n)\r\n"; !strings.HasSuffix(l, want) {
			t.Fatalf("message %d, .NOT: %.200q, want it to end with %q", i+1, l[max(0, len(l)-200):], want)
		}
	}
	// Two names of the list a message has (Subject, X-Extra) for
	// HEADER.FIELDS, and for .NOT; the 7,000 were handed each time.
	if handed, most := namesHanded.Load()-before, int64(2*n*2); handed > most {
		t.Errorf("%d names handed the library for %d messages, want at most %d", handed, 2*n, most)
	}
}

// TestHeaderFieldsNarrowedAnswersAlike: the list cut to a header's own
// fields gives what the whole list gives, for random headers (names in
// any case, repeated, folded, with characters a canonical name keeps as
// they are) and lists long and short, HEADER.FIELDS and .NOT.
func TestHeaderFieldsNarrowedAnswersAlike(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(11, 13))
	pool := []string{"Subject", "SUBJECT", "subject", "From", "to", "X-Extra", "x-extra", "X Y", "x y", "Received",
		"Content-Type", "content-TYPE", "X-Empty", "Date", "Message-ID", "message-id", "X_Under", "x_under"}
	for round := range 400 {
		var hb strings.Builder
		for range rng.IntN(12) {
			k := pool[rng.IntN(len(pool))]
			fmt.Fprintf(&hb, "%s: v%d\r\n", k, rng.IntN(100))
			if rng.IntN(5) == 0 {
				hb.WriteString("\tfolded\r\n")
			}
		}
		hb.WriteString("\r\nbody\r\n")
		b := []byte(hb.String())
		var names []string
		for range 1 + rng.IntN(40) {
			if rng.IntN(3) == 0 {
				names = append(names, fmt.Sprintf("X-Other-%d", rng.IntN(1000)))
			} else {
				names = append(names, pool[rng.IntN(len(pool))])
			}
		}
		for _, not := range []bool{false, true} {
			sec := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: names}
			if not {
				sec = &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: names}
			}
			want := imapserver.ExtractBodySection(bytes.NewReader(b), sec)
			if got := extractTop(b, sec); !bytes.Equal(got, want) {
				t.Fatalf("round %d, not %v, names %q, header %q:\n got  %q\n want %q", round, not, names, b, got, want)
			}
		}
	}
}
