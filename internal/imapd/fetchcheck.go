package imapd

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

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
//   - a section part beyond 2^32-1 or with a leading zero (nz-number is
//     32 bits and starts with digit-nz, RFC 9051 section 9): go-imap's
//     parser drops a first part it cannot read as 32 bits, so
//     BODY[4294967296] was answered with the whole message as BODY[],
//     and reads 01 as 1, so BODY[01] was answered as BODY[1], labels the
//     client did not ask for (badSectionPart finds both in the command's
//     text);
//   - HEADER.FIELDS () or HEADER.FIELDS.NOT () (header-list has at least
//     one name): go-imap takes the empty list for no list, so the answer
//     was the whole header under the label BODY[HEADER]; the framer's text
//     of the command tells the two apart;
//   - a partial's origin or length beyond 2^32-1 in a session that has
//     not enabled IMAP4rev2 (number is 32 bits in RFC 3501): go-imap
//     writes the origin back in 32 bits, and <4294967296.10> was answered
//     <0>. RFC 9051's partial is number64 (section 9), so once IMAP4rev2
//     is enabled (rev2) both are taken, up to 2^63-1 (beyond it go-imap's
//     parser answers BAD), and writeWide writes such an origin back whole.
func checkSections(opts *imap.FetchOptions, fc *frameConn, rev2 bool) error {
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
	if fc != nil {
		if p := fc.badSectionPart(); p != "" {
			return bad("section part %s: parts are numbered from 1 to %d, without leading zeros (RFC 3501 section 9, section-part)",
				p, uint32(math.MaxUint32))
		}
	}
	headerOnly := false
	for _, sec := range opts.BodySection {
		if zeroPart(sec.Part) {
			return bad(partZero)
		}
		if err := checkPartial(sec.Partial, rev2); err != nil {
			return err
		}
		if sec.Specifier == imap.PartSpecifierHeader && len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0 {
			headerOnly = true
		}
	}
	for _, sec := range opts.BinarySection {
		if zeroPart(sec.Part) {
			return bad(partZero)
		}
		if err := checkPartial(sec.Partial, rev2); err != nil {
			return err
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

// checkPartial refuses a partial whose origin or length is beyond 32 bits
// (RFC 3501 section 9, number) unless the session enabled IMAP4rev2, whose
// partial is number64 (RFC 9051 section 9).
func checkPartial(p *imap.SectionPartial, rev2 bool) error {
	if p == nil || rev2 || (p.Offset <= math.MaxUint32 && p.Size <= math.MaxUint32) {
		return nil
	}
	return &imap.Error{
		Type: imap.StatusResponseTypeBad,
		Code: imap.ResponseCodeClientBug,
		Text: fmt.Sprintf("partial <%d.%d>: origin and length are at most %d (RFC 3501 section 9, number), "+
			"or 64-bit after ENABLE IMAP4rev2 (RFC 9051 section 9, number64)", p.Offset, p.Size, uint32(math.MaxUint32)),
	}
}

// sectionStart is a FETCH item with a section (RFC 9051 section 9,
// fetch-att) and the part numbers that start it.
var sectionStart = regexp.MustCompile(`(?i)^(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[([0-9.]+)`)

// badSectionPart returns the first part number of a section in the
// command's text that is not an nz-number of 32 bits (a leading zero, or
// beyond 2^32-1), or "". Words in quoted strings and literals are not
// looked at: a header field name may look like a section.
func (fc *frameConn) badSectionPart() string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, a := range atoms(fc.text) {
		m := sectionStart.FindStringSubmatch(a)
		if m == nil {
			continue
		}
		for _, n := range strings.Split(m[2], ".") {
			if n == "" {
				continue
			}
			if _, err := strconv.ParseUint(n, 10, 32); err != nil || (len(n) > 1 && n[0] == '0') {
				return n
			}
		}
	}
	return ""
}
