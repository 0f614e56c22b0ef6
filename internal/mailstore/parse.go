package mailstore

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
	// maxPartDepth is the deepest nesting of multiparts and messages.
	maxPartDepth = 16
	// maxParts is the most body parts in one message, nested ones included.
	maxParts = 1000
	// maxNestedMessages bounds message/rfc822 nesting, each level of which
	// the structure extraction copies once.
	maxNestedMessages = 8
)

// ParseStatus says how much of a message's MIME structure was understood.
type ParseStatus uint8

const (
	// Parsed: the header and the MIME structure were parsed.
	Parsed ParseStatus = 0
	// Simplified: the header was parsed, but the structure was beyond the
	// parsing bounds or malformed; BODYSTRUCTURE is one text/plain part
	// covering the body.
	Simplified ParseStatus = 1
	// Unparsed: not even the header parses; the whole message is the body,
	// the envelope is empty and BODYSTRUCTURE is one text/plain part.
	Unparsed ParseStatus = 2
)

// parsedMessage is what apply stores about a message's bytes.
type parsedMessage struct {
	status    ParseStatus
	headerLen int64
	envelope  []byte // JSON, see codec.go
	structure []byte // JSON, see codec.go
	// envelopeWire is the envelope's IMAP form (envelope_wire.go), made
	// from the envelope as stored, so that it is what FETCH wrote from the
	// JSON; nil when it has none.
	envelopeWire []byte
	// structureWire is the body structure's IMAP form, the same way.
	structureWire []byte
}

// parseMessage extracts the header length, ENVELOPE and extended
// BODYSTRUCTURE of b. It never fails on the message's content.
func parseMessage(b []byte) (parsedMessage, error) {
	p := parsedMessage{status: Parsed, headerLen: headerLength(b)}
	header, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	var env *imap.Envelope
	var bs imap.BodyStructure
	if err != nil {
		p.status, p.headerLen = Unparsed, 0
		env = &imap.Envelope{}
	} else {
		env = extractEnvelope(header)
		bs = extractStructure(b)
		if bs == nil {
			p.status = Simplified
		}
	}
	if bs == nil {
		bs = fallbackStructure(b[p.headerLen:])
	}
	if p.envelope, err = encodeEnvelope(env); err != nil {
		return p, err
	}
	stored, err := decodeEnvelope(p.envelope)
	if err != nil {
		return p, err
	}
	p.envelopeWire = envelopeWire(stored)
	if p.structure, err = encodeStructure(bs); err != nil {
		return p, err
	}
	storedBS, err := decodeStructure(p.structure)
	if err != nil {
		return p, err
	}
	p.structureWire = structureWire(storedBS)
	return p, nil
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
// it stays within maxPartDepth, maxParts and maxNestedMessages.
func withinBounds(h textproto.Header, r io.Reader, depth, nested int, parts *int) bool {
	mh := gomessage.Header{Header: h}
	mediaType, params, _ := mh.ContentType()
	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		if depth >= maxPartDepth {
			return false
		}
		mr := textproto.NewMultipartReader(r, params["boundary"])
		for *parts <= maxParts {
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
		if depth >= maxPartDepth || nested >= maxNestedMessages {
			return false
		}
		br := bufio.NewReader(r)
		ch, _ := textproto.ReadHeader(br)
		*parts++
		return *parts <= maxParts && withinBounds(ch, br, depth+1, nested+1, parts)
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
