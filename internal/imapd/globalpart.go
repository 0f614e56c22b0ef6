package imapd

import (
	"bytes"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// A session that has not enabled IMAP4rev2 is given a message/global
// part (RFC 6533) as a basic part (mimeform.Rev1Structure, rev1Wire):
// RFC 3501's grammar knows "MESSAGE" "RFC822" alone as a message part.
// A message/global part in base64 or quoted-printable (RFC 6532 section
// 3.5) is a basic part to every session, its stored structure one
// (mimeform's encodedGlobal): its message is its body decoded, no byte
// range of the stored message. Their sections are read as that
// structure shows them, as of any basic part: its HEADER, TEXT and
// HEADER.FIELDS are empty (RFC 3501 section 6.4.5 names them of a
// message/rfc822 part only), its part 1 is itself (BODY[n.1] is
// BODY[n], BODY[n.1.MIME] is BODY[n.MIME]), and it has no part 2.
// Dovecot 2.3, an IMAP4rev1 server, answers so (docs/IMAP.md, "Odd
// messages, part by part").

// globalPaths are the paths of a message's message/global parts a
// session is given as basic parts: for a session that has not enabled
// IMAP4rev2, the outermost ones, as one within a message/global part is
// no part of its structure; for one that has, those in base64 or
// quoted-printable, within the others too. Nil for a message without
// such a part.
type globalPaths [][]int

// partSections reports whether opts asks for a section that a
// message/global part, read as a basic part, answers otherwise than as a
// message: one within a part, or a part's HEADER or TEXT.
func partSections(opts *imap.FetchOptions) bool {
	for _, b := range opts.BodySection {
		if len(b.Part) > 1 || len(b.Part) == 1 && (b.Specifier == imap.PartSpecifierHeader || b.Specifier == imap.PartSpecifierText) {
			return true
		}
	}
	for _, b := range opts.BinarySection {
		if len(b.Part) > 1 {
			return true
		}
	}
	for _, b := range opts.BinarySectionSize {
		if len(b.Part) > 1 {
			return true
		}
	}
	return false
}

// globalPathsOf returns the paths of m's message/global parts (RFC 3501
// section 6.4.5's part numbers) a session is given as basic parts (all
// of them, the outermost, unless rev2; with rev2, those stored as basic
// parts), read from its stored structure, or nil.
func globalPathsOf(m *mailstore.Message, rev2 bool) (globalPaths, error) {
	if m.BodyStructure == nil || !bytes.Contains(m.BodyStructure, []byte(`"global"`)) || mimeform.Status(m.Parse) != mimeform.Parsed {
		return nil, nil
	}
	bs, err := mimeform.DecodeStructure(m.BodyStructure)
	if err != nil {
		return nil, err
	}
	var out globalPaths
	var walk func(bs imap.BodyStructure, path []int)
	walk = func(bs imap.BodyStructure, path []int) {
		switch x := bs.(type) {
		case *imap.BodyStructureMultiPart:
			for i, c := range x.Children {
				walk(c, append(slices.Clip(path), i+1))
			}
		case *imap.BodyStructureSinglePart:
			if strings.EqualFold(x.Type, "message") && strings.EqualFold(x.Subtype, "global") && (!rev2 || x.MessageRFC822 == nil) {
				out = append(out, path)
				return
			}
			if msg := x.MessageRFC822; msg != nil {
				if _, multi := msg.BodyStructure.(*imap.BodyStructureMultiPart); multi {
					walk(msg.BodyStructure, path)
				} else {
					walk(msg.BodyStructure, append(slices.Clip(path), 1))
				}
			}
		}
	}
	if _, multi := bs.(*imap.BodyStructureMultiPart); multi {
		walk(bs, nil)
	} else {
		walk(bs, []int{1})
	}
	return out, nil
}

// part returns the part a section of part p reads, and false where it
// reads none: within a message/global part, its part 1 (and 1.1, ...) is
// the part itself, and any other none.
func (g globalPaths) part(p []int) ([]int, bool) {
	for _, q := range g {
		if len(p) < len(q) || !slices.Equal(p[:len(q)], q) {
			continue
		}
		for _, n := range p[len(q):] {
			if n != 1 {
				return nil, false
			}
		}
		return q, true
	}
	return p, true
}

// section returns the section that answers sec, or nil where the answer
// is empty: HEADER, TEXT and HEADER.FIELDS of a message/global part, and
// a section of no part (part).
func (g globalPaths) section(sec *imap.FetchItemBodySection) *imap.FetchItemBodySection {
	if g == nil || len(sec.Part) == 0 {
		return sec
	}
	p, ok := g.part(sec.Part)
	if !ok {
		return nil
	}
	if len(p) == len(sec.Part) && !slices.ContainsFunc(g, func(q []int) bool { return slices.Equal(q, p) }) {
		return sec // no message/global part on the path
	}
	if sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierText {
		return nil
	}
	q := *sec
	q.Part = p
	return &q
}
