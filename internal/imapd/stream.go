package imapd

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"cspool/internal/mailstore"
	"cspool/internal/mimeform"
)

// Sections of a large message, streamed.
//
// A FETCH of a section of a message the store reads in pieces
// (mailstore.Message.RawAt) does not read the message into memory: the
// section is found and measured in a first pass over the message's bytes
// and written in a second, a piece at a time, into the literal go-imap's
// writer takes piece by piece. BODY[], BODY[TEXT], BODY[HEADER] and their
// partials are ranges of the stored bytes; a partial reads only its own.
// A part (BODY[1], BODY[1.MIME], BINARY[2], ...) is read from the message
// as the library's ExtractBodySection reads it (openSection: the same
// go-message reader over the same bytes, mimeform.Lenient's header
// first), writing what it would copy into its buffer; BINARY undoes the
// transfer encoding as the reader goes, as decodeTransfer does whole.
//
// Where that reading gives up (the library's nil: a part not found, an
// empty one, a content that does not decode) the section is left to the
// path that holds the message whole (bodySection, binarySection), which
// looks again the ways it knows (mimeform.Mended, RFC 2045's base64): the
// answer is the same byte for byte, whichever way it is reached.

// streamHold is what the FETCH memory budget is charged for a message
// whose sections are streamed: the pieces in flight (the store's piece,
// the readers' and the copy's buffers, the header), not the message.
const streamHold = 2 << 20

// streamPiece is the most bytes a streamed section reads from the store
// or writes into its literal at once.
const streamPiece = 256 << 10

// maxStreamedHeader bounds the header a streamed message keeps in memory;
// a message with a longer one (or none: its header is all of it) is read
// whole.
const maxStreamedHeader = mimeform.MaxHeaderBytes + 64<<10

// stored is a message's bytes as its sections are streamed: size bytes
// read through at, the header (its first bytes, blank line included) in
// memory.
type stored struct {
	m    *mailstore.Message
	at   io.ReaderAt
	size int64
	head []byte
}

// openStored reads m's header from at and returns the message to stream
// its sections from; ok is false when its header is too long for that.
func openStored(m *mailstore.Message, at io.ReaderAt) (s *stored, ok bool, err error) {
	hl := m.HeaderLen
	if hl < 0 || hl > m.Size || hl > maxStreamedHeader {
		return nil, false, nil
	}
	head := make([]byte, hl)
	if n, err := at.ReadAt(head, 0); n < len(head) {
		return nil, false, fmt.Errorf("reading the header of message uid %d: %w", m.UID, err)
	}
	return &stored{m: m, at: at, size: m.Size, head: head}, true, nil
}

// piece is a section's bytes as its literal takes them: prefix, then what
// open reads (nothing when open is nil), n bytes in all.
type piece struct {
	prefix []byte
	open   func() io.Reader
	n      int64
}

func bytesPiece(b []byte) piece { return piece{prefix: b, n: int64(len(b))} }

// span is the stored bytes from off, n of them.
func (s *stored) span(off, n int64) piece {
	return piece{n: n, open: func() io.Reader { return io.NewSectionReader(s.at, off, n) }}
}

// window is the range of a section of n bytes partial p asks for, as
// partial cuts it.
func window(n int64, p *imap.SectionPartial) (off, k int64) {
	if p == nil {
		return 0, n
	}
	if p.Offset >= n {
		return 0, 0
	}
	end := n
	if p.Size >= 0 && p.Size < end-p.Offset {
		end = p.Offset + p.Size
	}
	return p.Offset, end - p.Offset
}

// writeTo writes k bytes of the piece from off into w, streamPiece at a
// time.
func (p piece) writeTo(w io.Writer, off, k int64) error {
	if off < int64(len(p.prefix)) {
		b := p.prefix[off:min(int64(len(p.prefix)), off+k)]
		if _, err := w.Write(b); err != nil {
			return err
		}
		k -= int64(len(b))
		off = 0
	} else {
		off -= int64(len(p.prefix))
	}
	if k == 0 {
		return nil
	}
	if p.open == nil {
		return errors.New("writing a section: shorter than measured")
	}
	r := p.open()
	if sk, ok := r.(io.Seeker); ok {
		if _, err := sk.Seek(off, io.SeekCurrent); err != nil {
			return err
		}
	} else if _, err := io.CopyN(io.Discard, r, off); err != nil {
		return fmt.Errorf("writing a section: %w", err)
	}
	buf := make([]byte, min(k, streamPiece))
	n, err := io.CopyBuffer(w, io.LimitReader(r, k), buf)
	if err != nil {
		return err
	}
	if n < k {
		return fmt.Errorf("writing a section: %d bytes, measured %d", n, k)
	}
	return nil
}

// lenient is mimeform.Lenient(raw, types) of the message's header alone:
// followed by the rest of the message, it is Lenient of the whole; ok is
// false when the header holds no blank line (Lenient would read on).
func (s *stored) lenient(types bool) ([]byte, bool) {
	if !mimeform.EndsHeader(s.head) {
		return nil, false
	}
	return mimeform.Lenient(s.head, types), true
}

// reader returns the opening of the message as read (its header as
// lenient gives it) followed by the rest of its bytes, read from the
// store streamPiece at a time.
func (s *stored) reader(read []byte) func() io.Reader {
	hl := int64(len(s.head))
	return func() io.Reader {
		rest := io.NewSectionReader(s.at, hl, s.size-hl)
		return io.MultiReader(bytes.NewReader(read), bufio.NewReaderSize(rest, streamPiece))
	}
}

// bodyPiece is bodySection streamed; ok is false where it is left to
// bodySection.
func (s *stored) bodyPiece(sec *imap.FetchItemBodySection) (piece, bool) {
	if s.throughForwarded(sec.Part) {
		return piece{}, false
	}
	hl := int64(len(s.head))
	plain := len(sec.HeaderFields) == 0 && len(sec.HeaderFieldsNot) == 0
	status := mimeform.Status(s.m.Parse)
	switch {
	case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierNone:
		return s.span(0, s.size), true
	case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierText:
		return s.span(hl, s.size-hl), true
	case len(sec.Part) == 0 && sec.Specifier == imap.PartSpecifierHeader && plain:
		return bytesPiece(s.head), true
	case status != mimeform.Parsed && len(sec.Part) == 1 && sec.Part[0] == 1 && sec.Specifier == imap.PartSpecifierNone:
		return s.span(hl, s.size-hl), true
	case status == mimeform.Unparsed:
		if sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierMIME {
			return bytesPiece([]byte("\r\n")), true
		}
		return bytesPiece(nil), true
	case status == mimeform.Simplified && len(sec.Part) > 0 && (len(sec.Part) > 1 || sec.Part[0] != 1):
		return bytesPiece(nil), true
	case status == mimeform.Simplified && len(sec.Part) > 0 &&
		(sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierText):
		return bytesPiece(nil), true
	case sec.Specifier == imap.PartSpecifierNone && plain && status == mimeform.Parsed && len(sec.Part) > 1:
		if q, ok := forwardedBody(s.m, sec); ok {
			return s.bodyPiece(q)
		}
	case len(sec.Part) > 0 && (sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierText):
		msg, ok := s.isMessagePart(sec.Part)
		if !ok {
			return piece{}, false
		}
		if !msg {
			return bytesPiece(nil), true
		}
		if plain {
			return s.messageHeaderPiece(sec)
		}
		if sec.Specifier == imap.PartSpecifierHeader {
			h, ok := s.messageHeaderPiece(&imap.FetchItemBodySection{Part: sec.Part, Specifier: imap.PartSpecifierHeader})
			if !ok {
				return piece{}, false
			}
			return bytesPiece(headerFields(h.prefix, sec)), true
		}
	case len(sec.Part) > 0 && sec.Specifier == imap.PartSpecifierMIME && plain:
		if boundary, k, body, ok := bareHeaderSection(s.m, sec.Part); ok {
			// As headerSection: the header of a multipart's part that
			// ends without a blank line as the message holds it.
			p, ok := s.bodyPiece(body)
			if !ok {
				return piece{}, false
			}
			if h, ok := bareHeader(p.reader(), boundary, k); ok {
				return bytesPiece(h), true
			}
			break
		}
		if status != mimeform.Parsed || !messageBody(s.m, sec.Part) {
			break
		}
		if len(sec.Part) == 1 {
			return bytesPiece(s.head), true
		}
		return s.bodyPiece(&imap.FetchItemBodySection{Part: sec.Part[:len(sec.Part)-1], Specifier: imap.PartSpecifierHeader})
	}
	read, ok := s.lenient(len(sec.Part) > 0)
	if !ok {
		return piece{}, false
	}
	whole := *sec
	whole.Partial = nil
	top, within := mimeform.BoundedHeader(read)
	if !within && len(sec.Part) > 0 {
		return bytesPiece(nil), true
	}
	if len(sec.Part) == 0 {
		// The header's fields alone: from the header.
		return bytesPiece(extractTop(top, &whole)), true
	}
	return measure(s.reader(read), &whole, nil)
}

// messageHeaderPiece is BODY[n.HEADER] or BODY[n.TEXT] of a
// message/rfc822 part n, streamed, as headerSection serves them: the
// part's bytes up to the blank line that ends its header (included), and
// after it.
func (s *stored) messageHeaderPiece(sec *imap.FetchItemBodySection) (piece, bool) {
	whole, ok := s.bodyPiece(&imap.FetchItemBodySection{Part: sec.Part})
	if !ok {
		return piece{}, false
	}
	var head []byte
	br := bufio.NewReader(whole.reader())
	for cont := false; ; {
		line, err := br.ReadSlice('\n')
		head = append(head, line...)
		if err == bufio.ErrBufferFull {
			cont = true
			continue
		}
		if err != nil || (!cont && (len(line) == 1 || (len(line) == 2 && line[0] == '\r'))) {
			break
		}
		cont = false
	}
	if sec.Specifier == imap.PartSpecifierHeader {
		return bytesPiece(head), true
	}
	h := int64(len(head))
	return piece{n: whole.n - h, open: func() io.Reader {
		r := whole.reader()
		if _, err := io.CopyN(io.Discard, r, h); err != nil {
			return errReader{err}
		}
		return r
	}}, true
}

// reader reads the piece's bytes from the start.
func (p piece) reader() io.Reader {
	if p.open == nil {
		return bytes.NewReader(p.prefix)
	}
	return io.MultiReader(bytes.NewReader(p.prefix), p.open())
}

// binaryPiece is binarySection streamed; ok is false where it is left to
// binarySection.
func (s *stored) binaryPiece(part []int) (piece, bool) {
	if s.throughForwarded(part) {
		return piece{}, false
	}
	hl := int64(len(s.head))
	if mimeform.Status(s.m.Parse) != mimeform.Parsed {
		switch {
		case len(part) == 0:
			return s.span(0, s.size), true
		case len(part) == 1 && part[0] == 1:
			return s.span(hl, s.size-hl), true
		}
		return bytesPiece(nil), true
	}
	read, ok := s.lenient(true)
	if !ok {
		return piece{}, false
	}
	open := s.reader(read)
	// extractBinary, streamed.
	var header textproto.Header
	var prefix []byte
	sec := &imap.FetchItemBodySection{Part: part}
	if len(part) == 0 {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(read)))
		if err != nil {
			return piece{}, false
		}
		header = h
		prefix = imapserver.ExtractBodySection(bytes.NewReader(read), &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader})
		if prefix == nil {
			return piece{}, false
		}
		sec.Specifier = imap.PartSpecifierText
	} else {
		mh, _, ok := openSection(open(), &imap.FetchItemBodySection{Part: part, Specifier: imap.PartSpecifierMIME})
		if !ok {
			return piece{}, false
		}
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(mh, "\r\n"...))))
		if err != nil {
			return piece{}, false
		}
		header = h
		if _, body := forwardedBody(s.m, &imap.FetchItemBodySection{Part: part}); body && identityTransfer(header) {
			// As binarySection: the part's bytes, as BODY[part] serves
			// them (the message's text, forwardedBody).
			return s.bodyPiece(&imap.FetchItemBodySection{Part: part})
		}
	}
	decode, ok := transferDecoder(header)
	if !ok {
		return piece{}, false
	}
	p, ok := measure(open, sec, decode)
	if !ok {
		return piece{}, false
	}
	p.prefix = append(prefix, p.prefix...)
	p.n += int64(len(prefix))
	return p, true
}

// measure reads the section sec of the message open gives as
// openSection does, its body through decode unless that is nil, and
// returns it to be written; ok is false where the library would give
// nil, and for an empty section (the library's nil or not: the path
// holding the message tells). The whole section is read, whatever
// partial is asked for: an error past the partial (a multipart cut short,
// quoted-printable that does not decode) changes the library's answer.
func measure(open func() io.Reader, sec *imap.FetchItemBodySection, decode func(io.Reader) io.Reader) (piece, bool) {
	hdr, body, ok := openSection(open(), sec)
	if !ok {
		return piece{}, false
	}
	if decode == nil {
		decode = func(r io.Reader) io.Reader { return r }
	}
	p := piece{prefix: hdr, n: int64(len(hdr))}
	if body != nil {
		n, err := io.Copy(io.Discard, decode(body))
		if err != nil {
			return piece{}, false
		}
		p.n += n
		p.open = func() io.Reader {
			_, body, ok := openSection(open(), sec)
			if !ok || body == nil {
				return errReader{errors.New("reading a section: not found again")}
			}
			return decode(body)
		}
	}
	if p.n == 0 {
		return piece{}, false
	}
	return p, true
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// openSection reads r, a message as mimeform.Lenient gives it, as
// imapserver.ExtractBodySection reads it for sec (without its partial),
// and returns the header that writes (nil when it writes none) and the
// reader of what it copies after it (nil when it copies nothing); ok is
// false where the library gives up before copying. The library's reading,
// so that the bytes are its own: its findMessagePart and openMessagePart
// are not exported.
func openSection(r io.Reader, sec *imap.FetchItemBodySection) (hdr []byte, body io.Reader, ok bool) {
	br := bufio.NewReader(r)
	header, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, nil, false
	}
	parent, header, body := findPart(header, br, sec.Part)
	if body == nil {
		return nil, nil, false
	}
	if len(sec.Part) > 0 && (sec.Specifier == imap.PartSpecifierHeader || sec.Specifier == imap.PartSpecifierText) {
		header, body = openMessage(header, body, parent)
	}
	if len(sec.HeaderFields) > 0 {
		keep := make(map[string]bool)
		for _, k := range sec.HeaderFields {
			keep[strings.ToLower(k)] = true
		}
		for f := header.Fields(); f.Next(); {
			if !keep[strings.ToLower(f.Key())] {
				f.Del()
			}
		}
	}
	for _, k := range sec.HeaderFieldsNot {
		header.Del(k)
	}
	writeHeader := true
	switch sec.Specifier {
	case imap.PartSpecifierNone:
		writeHeader = len(sec.Part) == 0
	case imap.PartSpecifierText:
		writeHeader = false
	}
	if writeHeader {
		var buf bytes.Buffer
		if err := textproto.WriteHeader(&buf, header); err != nil {
			return nil, nil, false
		}
		hdr = buf.Bytes()
	}
	switch sec.Specifier {
	case imap.PartSpecifierNone, imap.PartSpecifierText:
		return hdr, body, true
	}
	return hdr, nil, true
}

// findPart walks path in the message whose header was read and whose body
// follows, as the library's findMessagePart does: the first part of a
// message that is not multipart is the message itself.
func findPart(header textproto.Header, body io.Reader, path []int) (string, textproto.Header, io.Reader) {
	if mt := libraryType(header); !strings.HasPrefix(mt, "multipart/") && len(path) > 0 && path[0] == 1 {
		path = path[1:]
	}
	var parent string
	for _, n := range path {
		header, body = openMessage(header, body, parent)
		mt, params, _ := mimeHeader(header).ContentType()
		if !strings.HasPrefix(mt, "multipart/") {
			if n != 1 {
				return "", textproto.Header{}, nil
			}
			continue
		}
		mr := textproto.NewMultipartReader(body, params["boundary"])
		var found bool
		for j := 1; j <= n; j++ {
			p, err := mr.NextPart()
			if err != nil {
				return "", textproto.Header{}, nil
			}
			if j == n {
				parent, header, body, found = mt, p.Header, p, true
			}
		}
		if !found {
			return "", textproto.Header{}, nil
		}
	}
	return parent, header, body
}

// mimeHeader is h as the library reads its Content-Type.
func mimeHeader(h textproto.Header) *gomessage.Header { return &gomessage.Header{Header: h} }

// libraryType is the media type the library reads in h.
func libraryType(h textproto.Header) string {
	mt, _, _ := mimeHeader(h).ContentType()
	return mt
}

// openMessage reads the header of a message/rfc822 or message/global part
// (or of a part of a multipart/digest without a Content-Type), as the
// library's openMessagePart does.
func openMessage(header textproto.Header, body io.Reader, parent string) (textproto.Header, io.Reader) {
	mt := libraryType(header)
	if !header.Has("Content-Type") && parent == "multipart/digest" {
		mt = "message/rfc822"
	}
	if mt == "message/rfc822" || mt == "message/global" {
		br := bufio.NewReader(body)
		header, _ = textproto.ReadHeader(br)
		return header, br
	}
	return header, body
}

// transferDecoder is decodeTransfer as a reader: ok is false for an
// encoding it does not know.
func transferDecoder(header textproto.Header) (func(io.Reader) io.Reader, bool) {
	if mt, _ := mimeform.ContentType(header); strings.HasPrefix(mt, "multipart/") {
		return nil, true
	}
	switch strings.ToLower(mimeform.TransferEncoding(header.Get("Content-Transfer-Encoding"))) {
	case "quoted-printable":
		return func(r io.Reader) io.Reader { return quotedprintable.NewReader(r) }, true
	case "base64":
		return func(r io.Reader) io.Reader { return &base64Reader{r: r, in: make([]byte, 32<<10)} }, true
	case "7bit", "8bit", "binary", "":
		return nil, true
	}
	return nil, false
}

// base64Reader decodes what r gives as mimeform.DecodeBase64 decodes it
// whole (RFC 2045 section 6.8): characters outside the alphabet are
// ignored, the data ends at the first "=", missing padding is no error,
// and a last character that makes no byte is dropped.
type base64Reader struct {
	r    io.Reader
	in   []byte
	pend []byte // alphabet characters read, not yet decoded
	out  []byte // decoded, not yet returned
	buf  []byte // out's room
	done bool
	err  error
}

func (d *base64Reader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.done {
			if d.err != nil {
				return 0, d.err
			}
			return 0, io.EOF
		}
		n, err := d.r.Read(d.in)
	scan:
		for _, c := range d.in[:n] {
			switch {
			case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
				d.pend = append(d.pend, c)
			case c == '=':
				d.done = true
				break scan
			}
		}
		if err != nil {
			d.done = true
			if err != io.EOF {
				d.err = err
			}
		}
		use := len(d.pend) / 4 * 4
		if d.done {
			use = len(d.pend)
			if use%4 == 1 {
				use--
			}
		}
		if n := base64.RawStdEncoding.DecodedLen(use); cap(d.buf) < n {
			d.buf = make([]byte, n)
		}
		k, _ := base64.RawStdEncoding.Decode(d.buf[:cap(d.buf)], d.pend[:use])
		d.out = d.buf[:k]
		d.pend = append(d.pend[:0], d.pend[use:]...)
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// isMessagePart is isMessagePart streamed; ok is false where it needs the
// message whole.
func (s *stored) isMessagePart(part []int) (msg, ok bool) {
	h, ok := s.partHeader(part)
	if !ok {
		return false, false
	}
	if !h.Has("Content-Type") {
		var parent textproto.Header
		if len(part) == 1 {
			parent = mimeform.ParseHeader(s.head)
		} else {
			p, ok := s.partHeader(part[:len(part)-1])
			if !ok {
				return false, false
			}
			parent = *p
		}
		pt, _ := mimeform.ContentType(parent)
		return pt == "multipart/digest", true
	}
	mt, _ := mimeform.ContentType(*h)
	return mt == "message/rfc822" || mt == "message/global", true
}

// partHeader is partHeader streamed; ok is false where it needs the
// message whole.
func (s *stored) partHeader(part []int) (*textproto.Header, bool) {
	read, ok := s.lenient(true)
	if !ok {
		return nil, false
	}
	if _, within := mimeform.BoundedHeader(read); !within {
		return &textproto.Header{}, true
	}
	b, _, found := openSection(s.reader(read)(), &imap.FetchItemBodySection{Part: part, Specifier: imap.PartSpecifierMIME})
	if !found && len(part) > 0 {
		return nil, false // looked for again in the message mended
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(append(b, "\r\n"...))))
	if err != nil {
		return &textproto.Header{}, true
	}
	return &h, true
}

// streamPlan is a message's sections as writeMessage writes them
// streamed: one piece for each of opts' BodySection, BinarySection and
// BinarySectionSize, in their order.
type streamPlan struct {
	body, binary, binarySize []piece
}

// planStream measures the sections opts asks for of m, whose bytes at
// reads (mailstore.Message.RawAt), to be written streamed; ok is false
// when one of them is left to the path holding the message whole. A part
// whose transfer encoding BINARY cannot undo is refused as checkBinary
// refuses it.
func planStream(m *mailstore.Message, at io.ReaderAt, opts *imap.FetchOptions) (plan *streamPlan, ok bool, err error) {
	s, ok, err := openStored(m, at)
	if !ok || err != nil {
		return nil, false, err
	}
	if mimeform.Status(m.Parse) == mimeform.Parsed {
		for _, p := range binaryParts(opts) {
			if len(p) == 0 {
				continue
			}
			h, ok := s.partHeader(p)
			if !ok {
				return nil, false, nil
			}
			if err := unknownCTE(m, p, h); err != nil {
				return nil, false, err
			}
		}
	}
	plan = &streamPlan{}
	for _, sec := range opts.BodySection {
		p, ok := s.bodyPiece(sec)
		if !ok {
			return nil, false, nil
		}
		plan.body = append(plan.body, p)
	}
	for _, sec := range opts.BinarySection {
		p, ok := s.binaryPiece(sec.Part)
		if !ok {
			return nil, false, nil
		}
		plan.binary = append(plan.binary, p)
	}
	for _, sec := range opts.BinarySectionSize {
		p, ok := s.binaryPiece(sec.Part)
		if !ok {
			return nil, false, nil
		}
		plan.binarySize = append(plan.binarySize, p)
	}
	return plan, true, nil
}
