package mimeform

import (
	"bufio"
	"bytes"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
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
	p, _, _, _, _, err := parse(b)
	return p, err
}

// ParseForms is Parse and Forms of what it stores, in one: the forms are
// made from what Parse extracted, which is what its stored encodings
// give back (the stored types mirror go-imap's field for field, nil and
// empty kept apart), and so what Forms gives from the stored bytes, as
// long as JSON keeps every string and date as it was; where it may not (a
// string that is not valid UTF-8, which JSON replaces, a date whose zone
// offset has seconds, which RFC 3339 drops, or a year the stored form
// cannot hold, stored as no date) the forms are Forms's of the stored
// bytes. TestParseFormsAsForms holds the two to the same bytes.
func ParseForms(b []byte) (p Message, envelopeForm, structureForm []byte, err error) {
	p, env, bs, md5s, dates, err := parse(b)
	if err != nil {
		return p, nil, nil, err
	}
	if bytes.Contains(p.Envelope, replacedRune) || bytes.Contains(p.Structure, replacedRune) ||
		!dateKept(env) || !structureDatesKept(bs) {
		envelopeForm, structureForm, err = Forms(p.Envelope, p.Structure)
		return p, envelopeForm, structureForm, err
	}
	return p, envelopeWire(env, dates), structureWire(bs, md5s, dates), nil
}

// replacedRune is what encoding/json writes for a byte that is not valid
// UTF-8 (a valid U+FFFD it writes as itself); a backslash then "ufffd" in
// a string encodes as "\\ufffd" and is found too, which costs only the
// decode.
var replacedRune = []byte(`\ufffd`)

// dateKept reports whether e's date is stored as it is: its zone offset
// whole minutes, as RFC 3339 keeps it, and its year one the stored form
// holds (envelopeToJSON).
func dateKept(e *imap.Envelope) bool {
	if e == nil {
		return true
	}
	_, off := e.Date.Zone()
	y := e.Date.Year()
	return off%60 == 0 && y >= 1 && y <= 9999
}

// structureDatesKept is dateKept for every envelope bs nests.
func structureDatesKept(bs imap.BodyStructure) bool {
	switch x := bs.(type) {
	case *imap.BodyStructureMultiPart:
		for _, c := range x.Children {
			if !structureDatesKept(c) {
				return false
			}
		}
	case *imap.BodyStructureSinglePart:
		if m := x.MessageRFC822; m != nil {
			return dateKept(m.Envelope) && structureDatesKept(m.BodyStructure)
		}
	}
	return true
}

// parse is Parse, also returning what it extracted.
func parse(b []byte) (Message, *imap.Envelope, imap.BodyStructure, partMD5s, dateTexts, error) {
	p := Message{Status: Parsed, HeaderLen: headerLength(b)}
	// The header's fields as a reader takes them; its length and the
	// body are b's. The types need no rewrite here: the structure reads
	// them itself (ContentType).
	src, _ := lfDelimiters(Lenient(b, false), nil)
	r := getReader(src)
	defer readers.Put(r)
	var env *imap.Envelope
	var bs imap.BodyStructure
	var md5s partMD5s
	var dates dateTexts
	cut, within := BoundedHeader(src)
	if !within {
		// Its envelope from the fields within the bounds; the rest
		// served as it came.
		r.reset(cut)
	}
	header, err := textproto.ReadHeader(r.br)
	switch {
	case err != nil:
		p.Status, p.HeaderLen = Unparsed, 0
		env = &imap.Envelope{}
	case !within:
		env = extractEnvelope(header, &dates, nil)
		p.Status = Simplified
	default:
		env = extractEnvelope(header, &dates, nil)
		bs, md5s = extractStructure(src, header, r, &dates)
		if bs == nil {
			p.Status = Simplified
		}
	}
	if bs == nil {
		bs = fallbackStructure(b[p.HeaderLen:])
	}
	if p.Envelope, err = encodeEnvelope(env, dates); err != nil {
		return p, nil, nil, nil, nil, err
	}
	if p.Structure, err = encodeStructure(bs, md5s, dates); err != nil {
		return p, nil, nil, nil, nil, err
	}
	return p, env, bs, md5s, dates, nil
}

// reader reads a message's bytes through a buffer kept between parses:
// a first sync parses every message, and four buffers of 4 KB for each
// were most of what the parse allocated.
type reader struct {
	rd bytes.Reader
	br *bufio.Reader
}

var readers = sync.Pool{New: func() any { return &reader{br: bufio.NewReader(nil)} }}

// getReader returns a pooled reader of b, to go back to readers when
// done with.
func getReader(b []byte) *reader {
	r := readers.Get().(*reader)
	r.reset(b)
	return r
}

func (r *reader) reset(b []byte) {
	r.rd.Reset(b)
	r.br.Reset(&r.rd)
}

// offset is how many bytes of the message r.br has given out.
func (r *reader) offset(b []byte) int {
	return len(b) - r.rd.Len() - r.br.Buffered()
}

// counts is a buffer for counting a part's bytes and lines.
var counts = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// Forms returns the IMAP forms (wire.go) of a stored envelope and body
// structure: those of what DecodeEnvelope and DecodeStructure give, so
// that a form is what FETCH writes from the stored value. Either is nil
// when it has none.
func Forms(envelope, structure []byte) (envelopeForm, structureForm []byte, err error) {
	var dates dateTexts
	env, err := decodeEnvelope(envelope, &dates)
	if err != nil {
		return nil, nil, err
	}
	var md5s partMD5s
	bs, err := decodeStructure(structure, &md5s, &dates)
	if err != nil {
		return nil, nil, err
	}
	return envelopeWire(env, dates), structureWire(bs, md5s, dates), nil
}

// HeaderLength returns the length of the header of b, a message's bytes
// (a message/rfc822 part's included), including the blank line that ends
// it (CRLF or LF), or len(b) if there is no blank line: the bytes
// BODY[HEADER] serves, every line of them, a field or not.
func HeaderLength(b []byte) int { return int(headerLength(b)) }

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

// extractStructure returns the body structure of b, whose header r has
// just read as header, and the Content-MD5 of its parts, or nil when b is
// beyond the parsing bounds or its MIME structure is malformed; the date
// texts of the envelopes it nests go into dates. It reuses r.
func extractStructure(b []byte, header textproto.Header, r *reader, dates *dateTexts) (bs imap.BodyStructure, md5s partMD5s) {
	body := r.offset(b)
	w := &walk{bounds: structureBounds}
	if !w.within(header, r.br) || w.tripped {
		return nil, nil
	}
	defer func() {
		// The extraction is library code run on hostile input; a panic
		// there must cost this message its structure, not the apply.
		if recover() != nil {
			bs, md5s = nil, nil
		}
	}()
	src := b[body:]
	if len(w.cut) > 0 {
		// Cut short: read with the closing delimiters, so that the last
		// part keeps its last line break (the library drops it at the
		// end of the data), and no message/rfc822 part counts them. A
		// part's header cut short takes no delimiter: read as it came.
		st := &structState{md5s: &md5s, dates: dates, addresses: maxNestedAddresses, languages: maxLanguages, params: maxParams}
		tail, added := closingTail(src, w.cut)
		st.added = added
		r.reset(append(append(make([]byte, 0, len(src)+len(tail)), src...), tail...))
		if bs = bodyStructure(header, r.br, false, st); wellFormed(bs) {
			defaultCharsets(bs)
			return bs, md5s
		}
		md5s = nil
	}
	r.reset(src)
	bs = bodyStructure(header, r.br, false, &structState{md5s: &md5s, dates: dates, addresses: maxNestedAddresses, languages: maxLanguages, params: maxParams})
	if !wellFormed(bs) {
		return nil, nil
	}
	defaultCharsets(bs)
	return bs, md5s
}

// defaultCharsets gives every text part of bs that names no charset the
// parameter charset=us-ascii, its default (RFC 2045 section 5.2, RFC 2046
// section 4.1.2), as RFC 3501's BODYSTRUCTURE example and Dovecot write
// it: go-imap wrote NIL, which leaves a client to guess.
func defaultCharsets(bs imap.BodyStructure) {
	switch x := bs.(type) {
	case *imap.BodyStructureMultiPart:
		for _, c := range x.Children {
			defaultCharsets(c)
		}
	case *imap.BodyStructureSinglePart:
		if m := x.MessageRFC822; m != nil {
			defaultCharsets(m.BodyStructure)
		}
		if !strings.EqualFold(x.Type, "text") {
			return
		}
		if _, ok := x.Params["charset"]; ok {
			return
		}
		if x.Params == nil {
			x.Params = map[string]string{}
		}
		x.Params["charset"] = "us-ascii"
	}
}

// structState is what bodyStructure keeps through a message's walk: the
// parts' Content-MD5 values, the date texts of their envelopes, and the closing tail's bytes a part that
// ends with a multipart cut short would end with (Unmend).
type structState struct {
	md5s  *partMD5s
	dates *dateTexts // the nested envelopes' date texts
	added []string
	// addresses is what is left of the addresses the nested envelopes
	// may hold together (maxNestedAddresses), languages of the language
	// tags the parts may (maxLanguages), params of the parameters their
	// Content-Type and Content-Disposition fields may (maxParams).
	addresses, languages, params int
}

// bodyStructure is go-imap's imapserver.ExtractBodyStructure of the part
// whose header is rawHeader and whose body r reads, with two changes: a
// single part's body is counted, not read into memory, and a
// message/rfc822 part gets the envelope extractEnvelope makes of its
// header, in place of the library's (which drops groups).
// TestBodyStructureAsLibrary holds it to the library's output. Where the
// library gives up, it reads on: a Content-Type or Content-Disposition
// whose parameters do not all parse (ContentType), and a part of a
// multipart/digest without a Content-Type, which is a message/rfc822
// (RFC 2046 section 5.1.5) where the library takes it for text. A single
// part's Content-MD5, which the library leaves out (its types have no
// field for it), goes into st's md5s. A message cut short is read closed
// (extractStructure), where the library drops the last part's last line
// break; a message/rfc822 part counts its own bytes, not the closing
// tail (st.added).
func bodyStructure(rawHeader textproto.Header, r io.Reader, inDigest bool, st *structState) imap.BodyStructure {
	md5s := st.md5s
	header := gomessage.Header{Header: rawHeader}
	mediaType, typeParams := partType(rawHeader, inDigest)
	primaryType, subType, _ := strings.Cut(mediaType, "/")
	if noSubtype(mediaType) {
		primaryType, subType, typeParams = "", "", nil
		if mediaType == "multipart" && !strings.Contains(rawHeader.Get("Content-Type"), ";") {
			primaryType, subType = "application", "octet-stream"
		}
	}
	if primaryType == "multipart" {
		bs := &imap.BodyStructureMultiPart{Subtype: subType}
		// Before its parts': the boundary is read, the parameters
		// shown bounded.
		boundary := typeParams["boundary"]
		typeParams = boundParams(typeParams, &st.params)
		disp := contentDisposition(header, &st.params)
		lang := contentLanguage(header, &st.languages)
		mr := textproto.NewMultipartReader(newFieldsAloneReader(r, boundary, nil), boundary)
		for {
			part, _ := mr.NextPart()
			if part == nil {
				break
			}
			bs.Children = append(bs.Children, bodyStructure(part.Header, part, mediaType == "multipart/digest", st))
		}
		bs.Extended = &imap.BodyStructureMultiPartExt{
			Params:      typeParams,
			Disposition: disp,
			Language:    lang,
			Location:    header.Get("Content-Location"),
		}
		return bs
	}
	bs := &imap.BodyStructureSinglePart{
		Type:        primaryType,
		Subtype:     subType,
		Params:      boundParams(typeParams, &st.params),
		ID:          header.Get("Content-Id"),
		Description: header.Get("Content-Description"),
		Encoding:    TransferEncoding(header.Get("Content-Transfer-Encoding")),
	}
	disp := contentDisposition(header, &st.params) // before a nested message's
	if mediaType == "message/rfc822" || mediaType == "message/global" && !encodedGlobal(rawHeader) {
		body, _ := io.ReadAll(r)
		// Its own bytes without a closing tail; the tail is read on, to
		// close the multipart cut short inside it.
		own := Unmend(body, st.added)
		bs.Size = uint32(len(own))
		childHeader, br, _ := readLenientHeader(bufio.NewReader(bytes.NewReader(body)))
		bs.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      extractEnvelope(childHeader, st.dates, &st.addresses),
			BodyStructure: bodyStructure(childHeader, br, false, st),
			NumLines:      int64(bytes.Count(own, []byte("\n"))),
		}
	} else {
		size, lines := countBody(r)
		bs.Size = uint32(size)
		if primaryType == "text" {
			bs.Text = &imap.BodyStructureText{NumLines: lines}
		}
	}
	bs.Extended = &imap.BodyStructureSinglePartExt{
		Disposition: disp,
		Language:    contentLanguage(header, &st.languages),
		Location:    header.Get("Content-Location"),
	}
	if v := strings.TrimSpace(unfold(header.Get("Content-MD5"))); v != "" {
		md5s.add(bs, v)
	}
	return bs
}

// countBody reads r to its end or first error, as io.ReadAll does, and
// returns how many bytes and line feeds it read.
func countBody(r io.Reader) (size int, lines int64) {
	bp := counts.Get().(*[]byte)
	defer counts.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		size += n
		lines += int64(bytes.Count(buf[:n], []byte("\n")))
		if err != nil {
			return size, lines
		}
	}
}

// contentDisposition is go-imap's: the part's Content-Disposition, nil
// without one; its parameters read as ContentType reads them, bounded by
// what is left of the message's maxParams (boundParams).
func contentDisposition(header gomessage.Header, left *int) *imap.BodyStructureDisposition {
	disp, dispParams := ContentDisposition(header.Header)
	if disp == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: disp, Params: boundParams(dispParams, left)}
}

// maxParams is the most parameters the Content-Type and
// Content-Disposition fields of a message's parts give its BODYSTRUCTURE
// together, in the order of the parts' headers (a multipart's before its
// parts', a part's Content-Type before its Content-Disposition), beyond
// those a client reads a part by (keptParams). MaxParts and
// MaxFieldSemicolons alone let 990 parts of 990 parameters in each field
// through (16 MB, as anyone may mail): a BODYSTRUCTURE of 26 MB, and the
// daemon at 325 MiB while it applied the message. A part has a few.
const maxParams = 10000

// keptParams are the parameters a part keeps past maxParams: the
// boundary the sections of a multipart are found by, the charset a text
// is read in, the names an attachment is saved under.
var keptParams = []string{"boundary", "charset", "filename", "name"}

// boundParams returns params, when they are no more than left, and takes
// them from it; otherwise those of keptParams it holds, and the others
// in the order of their names up to what is left, none of them taken
// from left beyond it.
func boundParams(params map[string]string, left *int) map[string]string {
	if len(params) <= *left {
		*left -= len(params)
		return params
	}
	out := make(map[string]string, len(keptParams)+*left)
	for _, k := range keptParams {
		if v, ok := params[k]; ok {
			out[k] = v
		}
	}
	var rest []string
	for k := range params {
		if !slices.Contains(keptParams, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	for _, k := range rest[:min(len(rest), max(*left-len(out), 0))] {
		out[k] = params[k]
	}
	*left = max(*left-len(out), 0)
	return out
}

// maxLanguages is the most language tags the Content-Language fields of
// a message's parts give its BODYSTRUCTURE together, in the order of the
// parts' headers (a multipart's before its parts'); a part whose tags
// come after them has none (NIL). Twenty parts
// naming a million tags each ("e,e,e,...", 2 MB a field, within
// MaxHeaderBytes; 41 MB, as anyone may mail) made a BODYSTRUCTURE of
// 82 MB, and the daemon grew to 792 MB while it applied the message.
// A part names one or two.
const maxLanguages = 1000

// contentLanguage is go-imap's: the part's Content-Language, split at
// commas, up to what is left of the message's maxLanguages tags, which
// it takes them from.
func contentLanguage(header gomessage.Header, left *int) []string {
	v := header.Get("Content-Language")
	if v == "" || *left <= 0 {
		return nil
	}
	var l []string
	for rest, more := v, true; more && len(l) < *left; {
		var lang string
		lang, rest, more = strings.Cut(rest, ",")
		l = append(l, strings.TrimSpace(lang))
	}
	*left -= len(l)
	return l
}

// bounds are the limits of a walk of a MIME tree (withinBounds).
type bounds struct {
	depth, parts, nested int
}

// structureBounds are the parse's: MaxPartDepth, MaxParts and
// MaxNestedMessages.
var structureBounds = bounds{MaxPartDepth, MaxParts, MaxNestedMessages}

// walk is a walk of a MIME tree (withinBounds) so far.
type walk struct {
	bounds
	depth, nested, parts int
	tripped              bool // a header beyond MaxHeaderFields, MaxHeaderBytes or MaxFieldSemicolons
	// cut are the boundaries of the multiparts whose data ended before
	// their closing delimiter, innermost first.
	cut []string
	// boundaries, when not nil, collects every multipart's boundary
	// (Mended).
	boundaries map[string]bool
	// mended: a part was read otherwise than the library reads it: a
	// forwarded message's header with a line that is no field left out
	// (readLenientHeader), a line break added after a part's header of
	// fields alone (fieldsAloneReader).
	mended bool
	// untyped: a part's Content-Type is "multipart" without a subtype,
	// one part (noSubtype), where the library's structure takes it for
	// a multipart.
	untyped bool
	// encoded: a message/global part in base64 or quoted-printable, one
	// part (encodedGlobal), where the library's structure takes it for
	// a message.
	encoded bool
}

// noSubtype reports whether mediaType, as ContentType gives it, is
// "multipart" without a subtype, or "multipart/" followed by no subtype
// ContentType reads (it gives the whole value then). Such a Content-Type
// ("multipart; boundary=b1", "multipart/; boundary=b1") names no
// multipart: RFC 2045 section 5.1 requires the
// subtype, and section 5.2 takes a Content-Type that does not parse for
// no type at all. The part is one part of its bytes, typed as Dovecot
// types it, "application/octet-stream" when the field is the word alone
// and "" "" otherwise, its parameters left out (a single
// part named "multipart" is one a client may take for a multipart and
// look for parts in), as the MIME library's sections read it: BODY[1] is its body, BODY[1.MIME] its header, and no BODY[2]
// exists. The structure took it for a multipart by its primary type
// (as go-imap's ExtractBodyStructure does), and listed parts whose
// sections were served empty (docs/IMAP.md, "Odd messages, part by
// part"; FormsVersion 5).
func noSubtype(mediaType string) bool {
	sub, ok := strings.CutPrefix(mediaType, "multipart/")
	return mediaType == "multipart" || ok && (sub == "" || strings.ContainsAny(sub, "; \t"))
}

// withinBounds walks the MIME tree whose header is h and whose body r
// reads, without keeping it, and reports whether it stays within b and
// every part's header within MaxHeaderFields, MaxHeaderBytes and
// MaxFieldSemicolons (the walk reads no header beyond them: headerGuard).
func withinBounds(h textproto.Header, r io.Reader, b bounds) bool {
	w := &walk{bounds: b}
	return w.within(h, r) && !w.tripped
}

func (w *walk) within(h textproto.Header, r io.Reader) bool {
	return w.withinPart(h, r, false)
}

func (w *walk) withinPart(h textproto.Header, r io.Reader, inDigest bool) bool {
	mediaType, params := partType(h, inDigest)
	switch {
	case strings.HasPrefix(mediaType, "multipart/") && !noSubtype(mediaType):
		if w.depth >= w.bounds.depth {
			return false
		}
		boundary := params["boundary"]
		if w.boundaries != nil && boundary != "" {
			w.boundaries[boundary] = true
		}
		g := guardHeaders(r, []byte("--"+boundary))
		mr := textproto.NewMultipartReader(newFieldsAloneReader(g, boundary, &w.mended), boundary)
		for w.parts <= w.bounds.parts {
			p, err := mr.NextPart()
			if err != nil {
				// The end, or broken (wellFormed judges the result), or
				// a part's header beyond the bounds.
				w.tripped = w.tripped || g.tripped
				if err != io.EOF && !w.tripped {
					w.cut = append(w.cut, boundary)
				}
				return !w.tripped
			}
			w.parts++
			w.depth++
			ok := w.withinPart(p.Header, p, mediaType == "multipart/digest")
			w.depth--
			if !ok {
				return false
			}
		}
		return false
	case noSubtype(mediaType):
		w.untyped = true
	case mediaType == "message/global" && encodedGlobal(h):
		// One part of its bytes, as the structure shows it, where the
		// library's takes it for a message.
		w.encoded = true
	case mediaType == "message/rfc822" || mediaType == "message/global":
		if w.depth >= w.bounds.depth || w.nested >= w.bounds.nested {
			return false
		}
		g := guardHeaders(r, nil)
		ch, br, mended := readLenientHeader(bufio.NewReader(g))
		w.mended = w.mended || mended
		if g.tripped {
			w.tripped = true
			return false
		}
		w.parts++
		w.depth++
		w.nested++
		ok := w.parts <= w.bounds.parts && w.within(ch, br)
		w.depth--
		w.nested--
		return ok
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

// encodedGlobal reports whether a message/global part whose header is h
// has a Content-Transfer-Encoding of base64 or quoted-printable, which
// RFC 6532 section 3.5 allows it (message/rfc822 has none but 7bit, 8bit
// and binary, RFC 2046 section 5.2.1). Its message is its body decoded,
// and no byte range of the stored message: the part is one part of its
// bytes, a basic part, as Dovecot 2.3 shows every message/global part,
// without the envelope, structure and lines of a message. Its sections
// read it so (imapd's globalPaths): its HEADER and TEXT are empty, its
// part 1 is itself, and BINARY of it is the message decoded. Its bytes
// were read as a message as they stand: the lines of base64 one header
// of no field, the envelope all NIL, and quoted-printable's "=C3=B6"
// served as the envelope's and HEADER's text (FormsVersion 9).
func encodedGlobal(h textproto.Header) bool {
	switch strings.ToLower(TransferEncoding(h.Get("Content-Transfer-Encoding"))) {
	case "base64", "quoted-printable":
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

// partType is the media type and parameters of a part (ContentType): a
// part of a multipart/digest without a Content-Type is a message/rfc822
// (RFC 2046 section 5.1.5).
func partType(h textproto.Header, inDigest bool) (string, map[string]string) {
	if inDigest && !h.Has("Content-Type") {
		return "message/rfc822", map[string]string{}
	}
	return ContentType(h)
}

// Mended returns the message as the MIME library must be given it to
// find the parts the structure shows (bodyStructure reads past both):
// Lenient(b, true), with the Content-Type and Content-Disposition fields of
// its parts' headers (found after a delimiter of one of its multiparts)
// that mime.ParseMediaType refuses written again as ContentType reads them
// (a nested "multipart/alternative; boundary=I (x)" was no multipart to
// the library, and the parts under it were not found), and, when a
// multipart is cut short (its data ends before its closing delimiter: a
// message truncated on the way), the missing closing delimiters after it,
// innermost first (the library gave up on the last part whole), and a
// line break before each delimiter line that ends a part's header of
// fields alone (fieldsalone.go; the library gave up on that part and the
// ones after it). It returns Lenient(b, true) itself when none is needed.
// The bytes of every part's body are b's (a CRLF before a delimiter is
// the delimiter's); a part's header so written is not, nor a multipart or
// message/rfc822 part holding a line break added (Mending.Own takes them
// off).
func Mended(b []byte) []byte {
	m, _ := MendedCut(b)
	return m
}

// MendedCut is Mended, and, when a multipart was cut short, the bytes
// of the closing tail it added that a part served from it may end with
// (Unmend takes them off): a multipart part, or a message/rfc822 part,
// whose own data ends with the data of a multipart cut short. added is
// nil when none was; a part of the innermost multipart cut short ends
// where the data does, and keeps its last line break: the tail begins
// with one of its own, the delimiter's.
func MendedCut(b []byte) (m []byte, added []string) {
	mm := Mend(b)
	return mm.Bytes, mm.added
}

// A Mending is a message as Mended mends it, and what the mending added
// to the bytes of the parts the structure shows.
type Mending struct {
	// Bytes are Mended's.
	Bytes []byte
	added []string // the closing tail (MendedCut)
	// blanks are the offset and length of each line break added before
	// a delimiter line that ends a part's header of fields alone
	// (fieldsalone.go).
	blanks [][2]int
}

// Cut reports whether a multipart of the message was cut short, and
// Bytes end with the closing delimiters it lacks.
func (m Mending) Cut() bool { return m.added != nil }

// Own returns section, read from m.Bytes, without the bytes the mending
// added to it: the closing tail it ends with (Unmend), and each line
// break added before a delimiter line within it. A section that holds
// no added line break, or is not found in Bytes as it is (a decoded
// one), is returned as it is; one found at more than one offset is taken
// at the first.
func (m Mending) Own(section []byte) []byte {
	section = Unmend(section, m.added)
	if len(m.blanks) == 0 || len(section) == 0 {
		return section
	}
	off := bytes.Index(m.Bytes, section)
	if off < 0 {
		return section
	}
	var out []byte
	from := 0 // of section, copied up to here
	for _, bl := range m.blanks {
		at := bl[0] - off
		if at <= 0 || at+bl[1] >= len(section) {
			// At its start or end: the line break is the next
			// delimiter's, outside the section.
			continue
		}
		out = append(out, section[from:at]...)
		from = at + bl[1]
	}
	if out == nil {
		return section
	}
	return append(out, section[from:]...)
}

// Mend is Mended, and what it added.
func Mend(b []byte) Mending {
	l := Lenient(b, true)
	if _, ok := BoundedHeader(l); !ok {
		return Mending{Bytes: l}
	}
	r := getReader(l)
	defer readers.Put(r)
	h, err := textproto.ReadHeader(r.br)
	if err != nil {
		return Mending{Bytes: l}
	}
	w := &walk{bounds: structureBounds, boundaries: map[string]bool{}}
	if !w.within(h, r.br) || w.tripped || len(w.boundaries) == 0 {
		return Mending{Bytes: l}
	}
	if lf, changed := lfDelimiters(l, w.boundaries); changed {
		// Walked again: the parts behind the delimiters now seen.
		l = lf
		r.reset(l)
		if h, err = textproto.ReadHeader(r.br); err != nil {
			return Mending{Bytes: l}
		}
		w = &walk{bounds: structureBounds, boundaries: map[string]bool{}}
		if !w.within(h, r.br) || w.tripped {
			return Mending{Bytes: l}
		}
	}
	out, blanks := addBlankLines(rewritePartTypes(l, w.boundaries), w.boundaries)
	if len(w.cut) == 0 {
		return Mending{Bytes: out, blanks: blanks}
	}
	tail, added := closingTail(out, w.cut)
	if &out[0] == &l[0] {
		out = append(make([]byte, 0, len(l)+len(tail)), l...) // never b's array
	}
	return Mending{Bytes: append(out, tail...), added: added, blanks: blanks}
}

// closingTail returns the closing delimiters of the multiparts cut short
// (boundaries cut, innermost first) to append to data, each after a line
// break that is the delimiter's (RFC 2046 section 5.1.1), so the last
// part keeps its own; and the bytes of the tail a part whose data ends
// with a cut multipart's reads to (Unmend). The line break is LF after
// data whose last line break is a bare LF, CRLF otherwise.
func closingTail(data []byte, cut []string) (tail []byte, added []string) {
	eol := "\r\n"
	if n := bytes.LastIndexByte(data, '\n'); n >= 0 && (n == 0 || data[n-1] != '\r') {
		eol = "\n"
	}
	for _, bd := range cut {
		tail = append(tail, eol...)
		tail = append(tail, "--"+bd+"--"...)
		added = append(added, string(tail))
	}
	return append(tail, eol...), added
}

// Unmend returns b, a section read from a message MendedCut mended, without
// the closing tail's bytes it ends with, when it ends with them: the
// longest of added that it ends with, for data a part of the message
// owns ends before the tail.
func Unmend(b []byte, added []string) []byte {
	for i := len(added) - 1; i >= 0; i-- {
		if bytes.HasSuffix(b, []byte(added[i])) {
			return b[:len(b)-len(added[i])]
		}
	}
	return b
}

// lfDelimiters returns b with the CR of each delimiter line that ends in
// CRLF ("--B<CR><LF>", "--B--<CR><LF>") written as a space, for each
// boundary B whose first delimiter line in b ends in a bare LF; b itself
// when there is none, and whether it wrote any. The MIME library reads a multipart's delimiter
// lines with the line end of its first one, and took a later one in CRLF
// for a line of no part: the parts after it were lost (Dovecot shows
// them). White space before the line end is allowed (RFC 2046 section
// 5.1.1), and the length is the same, so every part keeps its bytes and
// offsets. With boundaries nil, every line that starts with "--" names a
// boundary; otherwise only those in boundaries do.
func lfDelimiters(b []byte, boundaries map[string]bool) ([]byte, bool) {
	// Whether each boundary's first delimiter line ends in a bare LF,
	// by boundary: a list looked through at each delimiter line cost
	// the square of their number, and a message nested 30,000
	// multiparts deep (2 MB, anyone may mail it) took 2.7 s to parse,
	// 60,000 deep 13 s, one of 50 MB hours.
	firstLF := map[string]bool{}
	out, changed := b, false
	for i := 0; i < len(b); {
		end := lineEnd(b, i)
		line := b[i:end]
		if len(line) > 3 && line[0] == '-' && line[1] == '-' && line[len(line)-1] == '\n' {
			crlf := line[len(line)-2] == '\r'
			token := strings.TrimRight(string(line[2:]), " \t\r\n")
			token = strings.TrimSuffix(token, "--")
			if token != "" && (boundaries == nil || boundaries[token]) {
				lf, seen := firstLF[token]
				switch {
				case !seen:
					firstLF[token] = !crlf
				case lf && crlf:
					if !changed {
						out, changed = append([]byte(nil), b...), true // never b's array
					}
					out[end-2] = ' '
				}
			}
		}
		i = end
	}
	return out, changed
}

// rewritePartTypes returns l with the type fields of its parts' headers
// that mime.ParseMediaType refuses written again (rewrittenType), or l
// itself when there is none; a part's header starts after a delimiter of
// one of boundaries and ends at its blank line.
func rewritePartTypes(l []byte, boundaries map[string]bool) []byte {
	var out []byte
	inHeader := false
	for i := int(headerLength(l)); i < len(l); {
		end := lineEnd(l, i)
		line := l[i:end]
		switch {
		case inHeader && blankLine(line):
			inHeader = false
		case inHeader && line[0] != ' ' && line[0] != '\t' && validFieldLine(line):
			if repl := rewrittenType(l[i:]); repl != nil {
				if out == nil {
					out = append(make([]byte, 0, len(l)+64), l[:i]...)
				}
				out = append(out, repl...)
				i = fieldEnd(l, end)
				continue
			}
		case !inHeader:
			inHeader = opensPart(line, boundaries)
		}
		if out != nil {
			out = append(out, line...)
		}
		i = end
	}
	if out == nil {
		return l
	}
	return out
}

// opensPart reports whether line is a delimiter that opens a part (RFC
// 2046 section 5.1.1): "--" and one of boundaries, then only white space.
func opensPart(line []byte, boundaries map[string]bool) bool {
	if !bytes.HasPrefix(line, []byte("--")) {
		return false
	}
	rest := bytes.TrimRight(line[2:], " \t\r\n")
	return boundaries[string(rest)]
}
