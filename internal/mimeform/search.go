package mimeform

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"iter"
	"strings"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// The texts IMAP SEARCH BODY, TEXT and HEADER test (RFC 9051 section
// 6.4.4), for the scan of package imapd and the index of package
// mailstore alike (docs/MAILSTORE.md, "Search index").

// HeaderFieldTexts returns the texts of a header field's value v: v;
// when v is not UTF-8, v with its 8-bit bytes read as windows-1252, as
// ENVELOPE reads them (eightBitText); and that text with its RFC 2047
// words decoded when they decode and differ. Without the second, an
// 8-bit Latin-1 subject or name (`From: J\xf6rg`) that FETCH ENVELOPE
// shows as "Jörg" was not found by SEARCH FROM "Jörg".
func HeaderFieldTexts(v string) []string {
	out := []string{v}
	t := v
	if !utf8.ValidString(v) {
		t = eightBitText(v)
		out = append(out, t)
	}
	if d, ok := DecodeHeaderValue(t); ok && d != t {
		out = append(out, d)
	}
	return out
}

// FieldTexts returns the texts SEARCH tests in the value v of a header
// field named key: HeaderFieldTexts, and for a field ENVELOPE reads as
// an address list (From, Sender, Reply-To, To, Cc, Bcc) whose value holds
// a quoted string, its addresses as ENVELOPE shows them (addressText).
// RFC 9051 section 6.4.4 has FROM, TO, CC and BCC test the envelope's
// field; without the last text a name written with quoted-pairs,
// `"Smith \"Bob\" Jones" <bob@example.org>`, which ENVELOPE shows as
// `Smith "Bob" Jones`, was not found by FROM "Smith \"Bob\" Jones" nor
// FROM "\"Bob\"", and `"Bob" Smith <b@example.org>` not by FROM "Bob
// Smith".
func FieldTexts(key, v string) []string {
	out := HeaderFieldTexts(v)
	if envelopeAddressField(key) {
		if t, ok := addressText(v); ok {
			out = append(out, t)
		}
	}
	return out
}

// envelopeAddressField reports whether ENVELOPE reads a field named key
// as an address list (RFC 9051 section 7.5.2).
func envelopeAddressField(key string) bool {
	switch strings.ToLower(key) {
	case "from", "sender", "reply-to", "to", "cc", "bcc":
		return true
	}
	return false
}

// addressText returns the addresses of an address-list field's value v
// that have a display name, as ENVELOPE shows them, `name <mailbox@host>`
// (the host left out when the field gave none), joined with ", ", when v
// holds a quoted string and such an address: the texts of v hold the
// names as written otherwise (quotes aside, a name without them is the
// words as written). Each address is parsed as ENVELOPE parses it, up to
// as many; its text is at most its name and address as written, read as
// windows-1252 when they are not UTF-8, and 5 bytes.
func addressText(v string) (string, bool) {
	if !strings.Contains(v, `"`) {
		return "", false
	}
	var b strings.Builder
	for _, a := range parseAddressList(unfold(beforeBareCR(v)), maxEnvelopeAddresses) {
		if a.Name == "" || a.Host == "" {
			continue // no name, or a group's marker
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.Name)
		b.WriteString(" <")
		b.WriteString(a.Mailbox)
		if a.Host != missingDomain {
			b.WriteString("@")
			b.WriteString(a.Host)
		}
		b.WriteString(">")
	}
	return b.String(), b.Len() > 0
}

// ParseHeader parses a raw header as SEARCH does: its lines that are no
// field left out (Lenient), and of one beyond MaxHeaderFields,
// MaxHeaderBytes or MaxFieldSemicolons the fields within them (BoundedHeader); a header that
// still does not parse has no fields.
func ParseHeader(raw []byte) textproto.Header {
	raw, _ = BoundedHeader(Lenient(raw, false))
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return textproto.Header{}
	}
	return h
}

// DecodeHeaderValue undoes RFC 2047 encoded words in a field value.
func DecodeHeaderValue(v string) (string, bool) {
	d, err := wordDecoder.DecodeHeader(v)
	return d, err == nil
}

// maxDecodedText bounds the decoded text of one message that SEARCH looks
// at and the index holds.
const maxDecodedText = 16 << 20

// BodyTexts returns the texts SEARCH BODY tests in a message: its decoded
// text/* and message/* parts, or, when the message is not MIME-parseable,
// the raw bytes after the header (headerLen bytes); when its MIME tree
// breaks part of the way (a multipart without a boundary, or cut short)
// or goes beyond MaxPartDepth or MaxParts, the parts decoded before that
// and the raw bytes after the header, so that no text of the message is
// out of SEARCH's reach, at a cost linear in the message's size.
//
// A message with a header beyond MaxHeaderFields, MaxHeaderBytes or
// MaxFieldSemicolons (its own or a part's) is not parsed as MIME: its
// text is the raw bytes after its header, as for one that does not parse.
//
// A message/rfc822 or message/global part (a message forwarded as an
// attachment) gives its header, as it is and with its fields' encoded
// words decoded, and its own texts found the same way: its text parts
// decoded, not its raw bytes, where a quoted-printable or base64 part,
// and an encoded subject, were out of SEARCH's reach. The nested
// messages' parts count against MaxPartDepth with their depth, and
// beyond MaxNestedMessages levels a nested message's text is its raw
// bytes, as before.
func BodyTexts(raw []byte, headerLen int64) []string {
	budget := int64(maxDecodedText)
	return bodyTexts(raw, headerLen, 0, 0, &budget)
}

// bodyTexts is BodyTexts of a message nested depth levels deep, the
// nested-th message/rfc822 level, in the message being searched, its
// texts taken from budget.
func bodyTexts(raw []byte, headerLen int64, depth, nested int, budget *int64) []string {
	hl := min(int(headerLen), len(raw))
	read := Lenient(raw, true) // the header as Parse reads it
	if !headersWithinBounds(read) {
		return []string{string(raw[hl:])}
	}
	if CommentedTransferEncoding(read) {
		// A part's encoding with a comment: go-message does not know
		// it, and would give the part's text undecoded, or none.
		read = Mended(raw)
	}
	e, err := gomessage.Read(bytes.NewReader(read))
	if e == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
		return []string{string(raw[hl:])}
	}
	out := []string{}
	// Each part is read into buf, one buffer for the message with room
	// for its bytes after the header (a part's decoded text is rarely
	// more), and then copied into its string. io.ReadAll, growing a
	// slice from 512 bytes, made about 2.6 times a text's size in
	// garbage before the copy, for every message a SEARCH BODY reads
	// while the index lacks it and every body the indexer takes: with
	// the copy, most of what such a SEARCH allocated (docs/BENCHMARKS.md,
	// "The first sync's peak and a SEARCH's garbage").
	//
	// The buffer is made at the first text part, and holds at most
	// firstTextBuffer: a message of a short text and an attachment of
	// 16 MB, which BodyTexts does not read, made a buffer of 16 MB for
	// that text; a longer text grows it.
	var buf []byte
	parts := 0
	walkErr := e.Walk(func(path []int, part *gomessage.Entity, err error) error {
		// Parse's bounds: beyond them the walk stops, and the raw bytes
		// after the header stand for the rest, as for a tree that
		// breaks. go-message's Walk goes down every level, each reading
		// through the readers of all the levels above it: a message
		// nested 20,000 deep cost minutes and hundreds of megabytes.
		if len(path) > 0 {
			parts++ // as Parse counts them: the message itself not
		}
		if depth+len(path) > MaxPartDepth || parts > MaxParts {
			return errBeyondBounds
		}
		// A part in a charset or transfer encoding the library does not
		// know comes with an error, its text as it is (transfer-decoded
		// when only the charset is unknown): searched so, as a message
		// of one such part is. It was left out, so that no word of a
		// multipart's part in, say, charset=unknown-8bit was found.
		if err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err) || part == nil || *budget <= 0 {
			return nil
		}
		t, _, _ := part.Header.ContentType()
		if strings.HasPrefix(t, "multipart/") {
			return nil
		}
		if t != "" && !strings.HasPrefix(t, "text/") && !strings.HasPrefix(t, "message/") {
			return nil
		}
		if (t == "message/rfc822" || t == "message/global") && nested < MaxNestedMessages {
			inner := appendAll(nil, io.LimitReader(part.Body, *budget))
			*budget -= int64(len(inner))
			ih := headerLength(inner)
			out = append(out, string(inner[:ih]))
			if decoded := decodedFields(inner[:ih]); decoded != "" {
				out = append(out, decoded)
			}
			out = append(out, bodyTexts(inner, ih, depth+len(path), nested+1, budget)...)
			return nil
		}
		if buf == nil {
			buf = make([]byte, 0, min(max(len(raw)-hl, 0), maxDecodedText, firstTextBuffer)+512)
		}
		buf = appendAll(buf[:0], io.LimitReader(part.Body, *budget))
		*budget -= int64(len(buf))
		out = append(out, string(buf))
		return nil
	})
	if walkErr != nil {
		out = append(out, string(raw[hl:min(len(raw), hl+maxDecodedText)]))
	}
	return out
}

// decodedFields returns the fields of a raw header whose values hold RFC
// 2047 encoded words that decode, one "Name: decoded value" line each; ""
// if none.
func decodedFields(header []byte) string {
	var b strings.Builder
	h := ParseHeader(header)
	for f := h.Fields(); f.Next(); {
		if texts := HeaderFieldTexts(f.Value()); len(texts) > 1 {
			b.WriteString(f.Key() + ": " + texts[1] + "\n")
		}
	}
	return b.String()
}

// firstTextBuffer bounds the buffer BodyTexts reads a message's first text
// part into; it grows beyond for a longer text.
const firstTextBuffer = 1 << 20

// errBeyondBounds stops BodyTexts' walk at Parse's bounds.
var errBeyondBounds = errors.New("beyond the MIME parsing bounds")

// appendAll appends to b what r reads until it fails (io.EOF or another
// error), as io.ReadAll does into a new slice, and returns b.
func appendAll(b []byte, r io.Reader) []byte {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			return b
		}
	}
}

// HeaderTexts returns each field of a raw header, in order, with the
// texts SEARCH HEADER tests in its value (FieldTexts).
func HeaderTexts(header []byte) iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		h := ParseHeader(header)
		for f := h.Fields(); f.Next(); {
			if !yield(f.Key(), FieldTexts(f.Key(), f.Value())) {
				return
			}
		}
	}
}

// walkBounds are those of the walk that BodyTexts makes with the MIME
// library: it stops past MaxPartDepth and MaxParts, having parsed the
// header of the part beyond them.
var walkBounds = bounds{MaxPartDepth + 1, MaxParts + 1, MaxPartDepth + 1}

// headersWithinBounds reports whether every header the MIME library
// parses in a walk of raw (BodyTexts) is within MaxHeaderFields,
// MaxHeaderBytes and MaxFieldSemicolons. A message of no more bytes,
// lines and semicolons than one header may have is, at once; another is
// walked with its headers guarded (headerGuard), which reads it once more
// without keeping it.
func headersWithinBounds(raw []byte) bool {
	if len(raw) <= MaxHeaderBytes && bytes.Count(raw, []byte("\n")) < MaxHeaderFields &&
		bytes.Count(raw, []byte(";")) <= MaxFieldSemicolons {
		// No more lines than fields may be, nor bytes, nor semicolons.
		return true
	}
	top, ok := BoundedHeader(raw)
	if !ok {
		return false
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(top)))
	if err != nil {
		return true // not MIME: BodyTexts parses no further
	}
	w := &walk{bounds: walkBounds}
	w.within(h, bytes.NewReader(raw[len(top):]))
	return !w.tripped
}
