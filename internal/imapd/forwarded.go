package imapd

import (
	"bytes"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// A forwarded message (a message/rfc822 part) whose header holds a line
// that is no field is read as the message's own header is
// (mimeform.Lenient): the structure reads its fields past that line
// (docs/IMAP.md, "Odd messages, part by part"), where the library stops
// at it and takes the fields after it for the message's body. A section
// within such a message is so read from the message's bytes alone
// (throughForwarded), as the message itself would be.

// forwardedOnPath returns the prefixes of part, shorter than it, that
// name message/rfc822 parts in bs, outermost first.
func forwardedOnPath(bs imap.BodyStructure, part []int) [][]int {
	var out [][]int
	inner := bs
	for i, n := range part[:len(part)-1] {
		var child imap.BodyStructure
		if x, multi := inner.(*imap.BodyStructureMultiPart); multi {
			if n < 1 || n > len(x.Children) {
				return out
			}
			child = x.Children[n-1]
		} else {
			// The one part of a message whose body is no multipart.
			if n != 1 {
				return out
			}
			child = inner
		}
		switch c := child.(type) {
		case *imap.BodyStructureMultiPart:
			inner = c
		case *imap.BodyStructureSinglePart:
			if c.MessageRFC822 == nil {
				return out
			}
			out = append(out, part[:i+1])
			inner = c.MessageRFC822.BodyStructure
		default:
			return out
		}
	}
	return out
}

// throughForwarded returns the forwarded message on part's path, by m's
// stored structure, whose header holds a line that is no field, as a
// message of its own (its bytes, as BODY[q] serves them, parsed), and
// the rest of the path within it; ok is false when the path goes through
// no such message.
func throughForwarded(m *mailstore.Message, part []int) (sub *mailstore.Message, rest []int, ok bool) {
	if mimeform.Status(m.Parse) != mimeform.Parsed || m.BodyStructure == nil || len(part) < 2 {
		return nil, nil, false
	}
	bs, err := mimeform.DecodeStructure(m.BodyStructure)
	if err != nil {
		return nil, nil, false
	}
	for _, q := range forwardedOnPath(bs, part) {
		b := bodySection(m, &imap.FetchItemBodySection{Part: q})
		if !mendedHeader(b) {
			continue
		}
		hl, status, env, structure, err := mimeform.Parser{}.Parse(b)
		if err != nil {
			return nil, nil, false
		}
		return &mailstore.Message{UID: m.UID, Size: int64(len(b)), HeaderLen: hl, Parse: status, Envelope: env, BodyStructure: structure, Raw: b}, part[len(q):], true
	}
	return nil, nil, false
}

// mendedHeader reports whether mimeform.Lenient leaves a line out of the
// header of b, a message's bytes.
func mendedHeader(b []byte) bool {
	h := b[:mimeform.HeaderLength(b)]
	return !bytes.Equal(mimeform.Lenient(h, false), h)
}

// throughForwarded reports whether part's path goes through a forwarded
// message whose header holds a line that is no field (throughForwarded
// of a message held whole): such a section is left to bodySection and
// binarySection, which read it from that message's bytes.
func (s *stored) throughForwarded(part []int) bool {
	if mimeform.Status(s.m.Parse) != mimeform.Parsed || s.m.BodyStructure == nil || len(part) < 2 {
		return false
	}
	bs, err := mimeform.DecodeStructure(s.m.BodyStructure)
	if err != nil {
		return false
	}
	for _, q := range forwardedOnPath(bs, part) {
		h, ok := s.bodyPiece(&imap.FetchItemBodySection{Part: q, Specifier: imap.PartSpecifierHeader})
		if !ok || mendedHeader(h.prefix) {
			return true
		}
	}
	return false
}
