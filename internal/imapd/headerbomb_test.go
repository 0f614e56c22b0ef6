package imapd

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// TestHeaderBombSections: the sections of a message whose header has
// 400,000 fields (5.5 MB) are served without parsing that header whole,
// also for a message stored as parsed before the parse kept its bounds:
// HEADER.FIELDS and HEADER.FIELDS.NOT from the fields within
// mimeform.MaxHeaderFields, no part, BODY[] and BODY[HEADER] byte for
// byte. The library's parse of the header allocated over 180 MB for each
// such FETCH.
func TestHeaderBombSections(t *testing.T) {
	var b strings.Builder
	b.WriteString("Subject: first\r\nFrom: a@example.org\r\n")
	for i := range 400000 {
		fmt.Fprintf(&b, "X-H%d: v\r\n", i)
	}
	b.WriteString("Subject: late\r\n\r\nthe body\r\n")
	raw := []byte(b.String())
	hl := int64(len(raw) - len("the body\r\n"))
	for _, status := range []mimeform.Status{mimeform.Parsed, mimeform.Simplified} {
		m := &mailstore.Message{Raw: raw, HeaderLen: hl, Parse: uint8(status)}
		cases := []struct {
			sec  imap.FetchItemBodySection
			want string
		}{
			{imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}}, "Subject: first\r\n\r\n"},
			{imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"X-H0", "X-H1"}},
				"Subject: first\r\nFrom: a@example.org\r\n"},
			{imap.FetchItemBodySection{Part: []int{2}}, ""},
			{imap.FetchItemBodySection{}, string(raw)},
			{imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader}, string(raw[:hl])},
		}
		for _, c := range cases {
			var got []byte
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got = bodySection(m, &c.sec)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			name := fmt.Sprintf("status %d, BODY[%v %v %v %v]", status, c.sec.Part, c.sec.Specifier, c.sec.HeaderFields, c.sec.HeaderFieldsNot)
			if !strings.HasPrefix(string(got), c.want) || (len(c.sec.HeaderFieldsNot) == 0 && string(got) != c.want) {
				t.Errorf("%s: %d bytes starting %q, want %q", name, len(got), got[:min(len(got), 60)], c.want[:min(len(c.want), 60)])
			}
			if limit := uint64(4*len(raw)) + 16<<20; alloc > limit {
				t.Errorf("%s: allocated %d bytes, want at most %d", name, alloc, limit)
			}
		}
		if h := partHeader(raw, []int{1}); h.Len() != 0 {
			t.Errorf("status %d: the MIME header of part 1 has %d fields, want none", status, h.Len())
		}
	}
}
