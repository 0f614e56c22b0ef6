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
// not, and that it would answer under another label:
//
//   - HEADER.FIELDS () or HEADER.FIELDS.NOT () (header-list has at least
//     one name): go-imap takes the empty list for no list, so the answer
//     was the whole header under the label BODY[HEADER]; the framer's text
//     of the command tells the two apart.
func checkSections(opts *imap.FetchOptions, fc *frameConn) error {
	bad := func(format string, a ...any) error {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: fmt.Sprintf(format, a...)}
	}
	headerOnly := false
	for _, sec := range opts.BodySection {
		if sec.Specifier == imap.PartSpecifierHeader && len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
			headerOnly = true
		}
	}
	if headerOnly && fc != nil {
		if m := fc.find(emptyHeaderList); m != "" {
			return bad("%s: the list of header field names is empty (RFC 3501 section 9, header-list)", m)
		}
	}
	return nil
}
