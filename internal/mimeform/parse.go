package mimeform

import (
	"bufio"
	"bytes"
	"io"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode RFC 2047 words in every common charset
	"github.com/emersion/go-message/textproto"
)

// Bounds on MIME parsing. A message beyond them keeps its envelope but gets
// the fallback structure (one text/plain part), so a torture message costs
// time and memory proportional to its size, never more.
const (
	// MaxPartDepth is the deepest nesting of multiparts and messages.
	MaxPartDepth = 16
	// MaxParts is the most body parts in one message, nested ones included.
	MaxParts = 1000
	// MaxNestedMessages bounds message/rfc822 nesting, each level of which
	// the structure extraction copies once.
	MaxNestedMessages = 8
)

// Status says how much of a message's MIME structure was understood.
// The values are stored.
type Status uint8

const (
	// Parsed: the header and the MIME structure were parsed.
	Parsed Status = 0
	// Simplified: the header was parsed, but the structure was beyond the
	// parsing bounds or malformed; BODYSTRUCTURE is one text/plain part
	// covering the body.
	Simplified Status = 1
	// Unparsed: not even the header parses; the whole message is the body,
	// the envelope is empty and BODYSTRUCTURE is one text/plain part.
	Unparsed Status = 2
)

// Message is what Parse makes of a message's bytes.
type Message struct {
	Status Status
	// HeaderLen is the header's length, the blank line that ends it
	// included (0 when Unparsed).
	HeaderLen int64
	// Envelope and Structure are ENVELOPE and the extended BODYSTRUCTURE
	// in their stored encoding (codec.go): DecodeEnvelope and
	// DecodeStructure give them back.
	Envelope, Structure []byte
}

// Parse extracts the header length, ENVELOPE and extended BODYSTRUCTURE
// of b. It never fails on the message's content, only when what it
// extracted does not encode.
func Parse(b []byte) (Message, error) {
	p := Message{Status: Parsed, HeaderLen: headerLength(b)}
	header, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	var env *imap.Envelope
	var bs imap.BodyStructure
	if err != nil {
		p.Status, p.HeaderLen = Unparsed, 0
		env = &imap.Envelope{}
	} else {
		env = extractEnvelope(header)
		bs = extractStructure(b)
		if bs == nil {
			p.Status = Simplified
		}
	}
	if bs == nil {
		bs = fallbackStructure(b[p.HeaderLen:])
	}
	if p.Envelope, err = encodeEnvelope(env); err != nil {
		return p, err
	}
	if p.Structure, err = encodeStructure(bs); err != nil {
		return p, err
	}
	return p, nil
}

// Forms returns the IMAP forms (wire.go) of a stored envelope and body
// structure: those of what DecodeEnvelope and DecodeStructure give, so
// that a form is what FETCH writes from the stored value. Either is nil
// when it has none.
func Forms(envelope, structure []byte) (envelopeForm, structureForm []byte, err error) {
	env, err := DecodeEnvelope(envelope)
	if err != nil {
		return nil, nil, err
	}
	bs, err := DecodeStructure(structure)
	if err != nil {
		return nil, nil, err
	}
	return envelopeWire(env), structureWire(bs), nil
}

// headerLength returns the length of the header including the blank line
// that ends it (CRLF or LF), or len(b) if there is no blank line.
func headerLength(b []byte) int64 {
	for i := 0; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		line := b[i : i+j+1]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return int64(i + j + 1)
		}
		i += j + 1
	}
	return int64(len(b))
}

// extractStructure returns the body structure of b, or nil when b is
// beyond the parsing bounds or its MIME structure is malformed.
func extractStructure(b []byte) (bs imap.BodyStructure) {
	br := bufio.NewReader(bytes.NewReader(b))
	header, err := textproto.ReadHeader(br)
	if err != nil {
		return nil
	}
	parts := 0
	if !withinBounds(header, br, 0, 0, &parts) {
		return nil
	}
	defer func() {
		// The extraction is library code run on hostile input; a panic
		// there must cost this message its structure, not the apply.
		if recover() != nil {
			bs = nil
		}
	}()
	bs = imapserver.ExtractBodyStructure(bytes.NewReader(b))
	if !wellFormed(bs) {
		return nil
	}
	br = bufio.NewReader(bytes.NewReader(b))
	if h, err := textproto.ReadHeader(br); err == nil {
		nestedEnvelopes(bs, h, br)
	}
	return bs
}

// nestedEnvelopes gives every message/rfc822 part of bs the envelope
// extractEnvelope makes of its header, in place of the library's (which
// drops groups), walking the MIME tree of the part whose header is h and
// whose body r reads, as ExtractBodyStructure did.
func nestedEnvelopes(bs imap.BodyStructure, h textproto.Header, r io.Reader) {
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		mh := gomessage.Header{Header: h}
		_, params, _ := mh.ContentType()
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for _, child := range bs.Children {
			p, err := mr.NextPart()
			if err != nil {
				return
			}
			nestedEnvelopes(child, p.Header, p)
		}
	case *imap.BodyStructureSinglePart:
		if bs.MessageRFC822 == nil {
			return
		}
		br := bufio.NewReader(r)
		ch, err := textproto.ReadHeader(br)
		if err != nil {
			return
		}
		bs.MessageRFC822.Envelope = extractEnvelope(ch)
		nestedEnvelopes(bs.MessageRFC822.BodyStructure, ch, br)
	}
}

// withinBounds walks the MIME tree without keeping it, and reports whether
// it stays within MaxPartDepth, MaxParts and MaxNestedMessages.
func withinBounds(h textproto.Header, r io.Reader, depth, nested int, parts *int) bool {
	mh := gomessage.Header{Header: h}
	mediaType, params, _ := mh.ContentType()
	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		if depth >= MaxPartDepth {
			return false
		}
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for *parts <= MaxParts {
			p, err := mr.NextPart()
			if err != nil {
				return true // end, or broken: wellFormed judges the result
			}
			*parts++
			if !withinBounds(p.Header, p, depth+1, nested, parts) {
				return false
			}
		}
		return false
	case mediaType == "message/rfc822" || mediaType == "message/global":
		if depth >= MaxPartDepth || nested >= MaxNestedMessages {
			return false
		}
		br := bufio.NewReader(r)
		ch, _ := textproto.ReadHeader(br)
		*parts++
		return *parts <= MaxParts && withinBounds(ch, br, depth+1, nested+1, parts)
	}
	return true
}

// wellFormed reports whether bs can be written as an IMAP BODYSTRUCTURE:
// every multipart has at least one part (RFC 9051 section 9, body-type-mpart).
func wellFormed(bs imap.BodyStructure) bool {
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		if len(bs.Children) == 0 {
			return false
		}
		for _, c := range bs.Children {
			if !wellFormed(c) {
				return false
			}
		}
		return true
	case *imap.BodyStructureSinglePart:
		if bs.MessageRFC822 != nil {
			return wellFormed(bs.MessageRFC822.BodyStructure)
		}
		return true
	}
	return false
}

// fallbackStructure describes body as a single text/plain part.
func fallbackStructure(body []byte) imap.BodyStructure {
	return &imap.BodyStructureSinglePart{
		Type:     "text",
		Subtype:  "plain",
		Params:   map[string]string{},
		Encoding: transferEncoding(body),
		Size:     uint32(min(int64(len(body)), int64(^uint32(0)))),
		Text:     &imap.BodyStructureText{NumLines: int64(bytes.Count(body, []byte("\n")))},
		Extended: &imap.BodyStructureSinglePartExt{},
	}
}

// transferEncoding names the encoding raw bytes are in (RFC 2045 section 2.7
// to 2.9): binary with NUL bytes, 8bit with other non-ASCII bytes, else 7bit.
func transferEncoding(b []byte) string {
	if bytes.IndexByte(b, 0) >= 0 {
		return "binary"
	}
	for _, c := range b {
		if c >= 0x80 {
			return "8bit"
		}
	}
	return "7bit"
}
