package imapd

import (
	"bufio"
	"bytes"
	"io"

	"github.com/emersion/go-imap/v2"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// The header of a multipart's part that ends without a blank line: RFC
// 2046 section 5.1.1 makes the blank line and the body optional
// (`body-part := MIME-part-headers [CRLF *OCTET]`), and the line break
// before the next delimiter line is the delimiter's, so such a part is
// its fields alone, the last without a line break (`--e`,
// `Content-Type: message/rfc822`, the delimiter's line break, `--e--`).
// The library reads the delimiter's line break for the blank line and
// writes the header again with one: BODY[n.MIME] is served from the
// message's bytes instead, as Dovecot serves it (docs/IMAP.md, "Odd
// messages, part by part").

// enclosingMultipart returns the multipart of bs whose part the last
// number of part names, and the section that serves that multipart's
// body (its preamble, delimiter lines and parts): BODY[TEXT] of the
// message, BODY[q.TEXT] of the message/rfc822 part q whose body it is,
// or BODY[q] of the multipart part q. ok is false when the last number
// names no multipart's part.
func enclosingMultipart(bs imap.BodyStructure, part []int) (mp *imap.BodyStructureMultiPart, body *imap.FetchItemBodySection, ok bool) {
	inner := bs
	message := true // whether inner is the body of a message
	for i, n := range part {
		x, multi := inner.(*imap.BodyStructureMultiPart)
		if !multi {
			if n != 1 || i == len(part)-1 {
				return nil, nil, false
			}
			// The one part of a message whose body is no multipart: a
			// number after it names a part of the message it holds.
			sp, single := inner.(*imap.BodyStructureSinglePart)
			if !single || sp.MessageRFC822 == nil {
				return nil, nil, false
			}
			inner, message = sp.MessageRFC822.BodyStructure, true
			continue
		}
		if n < 1 || n > len(x.Children) {
			return nil, nil, false
		}
		if i == len(part)-1 {
			sec := &imap.FetchItemBodySection{Part: part[:i]}
			if message {
				sec.Specifier = imap.PartSpecifierText
			}
			return x, sec, true
		}
		switch c := x.Children[n-1].(type) {
		case *imap.BodyStructureMultiPart:
			inner, message = c, false
		case *imap.BodyStructureSinglePart:
			inner, message = nil, false
			if c.MessageRFC822 != nil {
				inner, message = c.MessageRFC822.BodyStructure, true
			}
		}
		if inner == nil {
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// bareHeaderSection locates BODY[part.MIME] of a multipart's part in m:
// the multipart's boundary and the section serving its body
// (enclosingMultipart); ok is false when part is no multipart's part.
func bareHeaderSection(m *mailstore.Message, part []int) (boundary string, k int, body *imap.FetchItemBodySection, ok bool) {
	if mimeform.Status(m.Parse) != mimeform.Parsed || m.BodyStructure == nil || len(part) == 0 {
		return "", 0, nil, false
	}
	bs, err := mimeform.DecodeStructure(m.BodyStructure)
	if err != nil {
		return "", 0, nil, false
	}
	mp, body, ok := enclosingMultipart(bs, part)
	if !ok || mp.Extended == nil || mp.Extended.Params["boundary"] == "" {
		return "", 0, nil, false
	}
	return mp.Extended.Params["boundary"], part[len(part)-1], body, true
}

// bareHeader returns the header of part k (from 1) of the multipart of
// boundary whose body r reads, as its bytes hold it, when it ends without
// a blank line: its lines up to the next delimiter line, the line break
// before that line left out (a line break alone before it is the
// delimiter's, not a blank line). ok is false when the header ends with a
// blank line (the library writes it as it is), or has no line, or the
// part or the delimiter after its header is not found within
// mimeform.MaxHeaderBytes.
func bareHeader(r io.Reader, boundary string, k int) (header []byte, ok bool) {
	br := bufio.NewReaderSize(r, 16<<10)
	parts := 0 // delimiter lines that open a part, read so far
	start := true
	for {
		line, err := br.ReadSlice('\n')
		// A whole line: with its line break, or the last one.
		whole := err == nil || (err == io.EOF && len(line) > 0)
		if err == bufio.ErrBufferFull {
			err = nil
		}
		atStart := start
		start = whole
		if atStart && whole {
			open, closing := mimeform.DelimiterLine(line, boundary)
			switch {
			case parts == k && (open || closing):
				if len(header) == 0 {
					return nil, false
				}
				return trimLineBreak(header), true
			case closing:
				return nil, false
			case open:
				parts++
				continue
			case parts == k && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')):
				// A blank line ends it, unless a delimiter line follows:
				// then the line break is that delimiter's, and the
				// header ends with its last field's.
				next, err := br.ReadSlice('\n')
				if open, closing := mimeform.DelimiterLine(next, boundary); (err == nil || err == io.EOF) && (open || closing) && len(header) > 0 {
					return header, true
				}
				return nil, false
			}
		}
		if parts == k {
			if len(header)+len(line) > mimeform.MaxHeaderBytes {
				return nil, false
			}
			header = append(header, line...)
		}
		if err != nil {
			return nil, false
		}
	}
}

// trimLineBreak returns b without the line break it ends with.
func trimLineBreak(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}
