package imapd

import (
	"fmt"
	"regexp"

	"github.com/emersion/go-imap/v2"
)

// emptyHeaderList is HEADER.FIELDS or HEADER.FIELDS.NOT followed by an
// empty list.
var emptyHeaderList = regexp.MustCompile(`(?i)HEADER\.FIELDS(\.NOT)? *\( *\)`)

// checkSections refuses, with BAD (RFC 9051 section 7.1.3), the FETCH
// items go-imap's parser takes although RFC 3501's grammar (section 9) does
// not, and would answer as though they were valid:
//
//   - a section part 0 (section-part is nz-number): go-imap answered
//     BODY[0] {0}, as for a part that does not exist;
//   - HEADER.FIELDS () or HEADER.FIELDS.NOT () (header-list has at least
//     one name): go-imap takes the empty list for no list, so the answer
//     was the whole header under the label BODY[HEADER]; the framer's text
//     of the command tells the two apart.
func checkSections(opts *imap.FetchOptions, fc *frameConn) error {
	bad := func(format string, a ...any) error {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: fmt.Sprintf(format, a...)}
	}
	zeroPart := func(part []int) bool {
		for _, n := range part {
			if n == 0 {
				return true
			}
		}
		return false
	}
	const partZero = "section part 0: parts are numbered from 1 (RFC 3501 section 9, section-part)"
	headerOnly := false
	for _, sec := range opts.BodySection {
		if zeroPart(sec.Part) {
			return bad(partZero)
		}
		if sec.Specifier == imap.PartSpecifierHeader && len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
			headerOnly = true
		}
	}
	for _, sec := range opts.BinarySection {
		if zeroPart(sec.Part) {
			return bad(partZero)
		}
	}
	for _, sec := range opts.BinarySectionSize {
		if zeroPart(sec.Part) {
			return bad(partZero)
		}
	}
	if headerOnly && fc != nil {
		if m := fc.find(emptyHeaderList); m != "" {
			return bad("%s: the list of header field names is empty (RFC 3501 section 9, header-list)", m)
		}
	}
	return nil
}
