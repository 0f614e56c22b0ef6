package imapd

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message/textproto"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// partHeader returns the MIME header of a body part (its BODY[part.MIME]),
// parsed; an empty header when the part does not exist, or when the
// message's header is beyond mimeform's bounds (the library would parse it
// whole).
func partHeader(raw []byte, part []int) *textproto.Header {
	read := mimeform.Lenient(raw, true)
	if _, ok := mimeform.BoundedHeader(read); !ok {
		return &textproto.Header{}
	}
	sec := &imap.FetchItemBodySection{Part: part, Specifier: imap.PartSpecifierMIME}
	b := imapserver.ExtractBodySection(bytes.NewReader(read), sec)
	if b == nil && len(part) > 0 {
		b = sectionAgain(read, func(m []byte) []byte { return imapserver.ExtractBodySection(bytes.NewReader(m), sec) })
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(b, "\r\n"...))))
	if err != nil {
		return &textproto.Header{}
	}
	return &h
}

// decodable reports whether BINARY can undo a Content-Transfer-Encoding
// (RFC 3516 section 4.1; RFC 2045 section 6.1).
func decodable(cte string) bool {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary", "base64", "quoted-printable":
		return true
	}
	return false
}

// binaryParts lists the parts the BINARY and BINARY.SIZE items of opts
// name.
func binaryParts(opts *imap.FetchOptions) [][]int {
	var parts [][]int
	for _, sec := range opts.BinarySection {
		parts = append(parts, sec.Part)
	}
	for _, sec := range opts.BinarySectionSize {
		parts = append(parts, sec.Part)
	}
	return parts
}

// checkBinary refuses BINARY and BINARY.SIZE of a part whose transfer
// encoding the server cannot decode: NO [UNKNOWN-CTE] (RFC 3516 section
// 4.3), before any of the message's FETCH response is written; a part
// within a message/global part is read as gp has it (globalPaths.part).
func checkBinary(m *mailstore.Message, opts *imap.FetchOptions, gp globalPaths) error {
	if mimeform.Status(m.Parse) != mimeform.Parsed {
		return nil // served as one text part, as it is
	}
	for _, p := range binaryParts(opts) {
		p, ok := gp.part(p)
		if len(p) == 0 || !ok {
			continue
		}
		if err := unknownCTE(m, p, partHeader(raw(m), p)); err != nil {
			return err
		}
	}
	return nil
}

// unknownCTE is the NO [UNKNOWN-CTE] for part p of m, whose MIME header
// is h, when BINARY cannot undo its transfer encoding, or nil.
func unknownCTE(m *mailstore.Message, p []int, h *textproto.Header) error {
	if cte := mimeform.TransferEncoding(h.Get("Content-Transfer-Encoding")); !decodable(cte) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnknownCTE,
			Text: fmt.Sprintf("part %s of message UID %d is in the %q transfer encoding, which the server cannot decode; fetch it with BODY", partName(p), m.UID, cleanText(cte))}
	}
	return nil
}

// isMessagePart reports whether part is a message/rfc822 (or
// message/global) part: only those have a HEADER and a TEXT (RFC 9051
// section 6.4.5).
func isMessagePart(raw []byte, part []int) bool {
	h := partHeader(raw, part)
	if !h.Has("Content-Type") {
		// A part of a multipart/digest is a message without one (RFC
		// 2046 section 5.1.5).
		var parent textproto.Header
		if len(part) == 1 {
			parent = mimeform.ParseHeader(raw)
		} else {
			parent = *partHeader(raw, part[:len(part)-1])
		}
		pt, _ := mimeform.ContentType(parent)
		return pt == "multipart/digest"
	}
	mt, _ := mimeform.ContentType(*h)
	return mt == "message/rfc822" || mt == "message/global"
}

func partName(p []int) string {
	s := make([]string, len(p))
	for i, n := range p {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ".")
}
