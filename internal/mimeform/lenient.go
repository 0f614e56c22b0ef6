package mimeform

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"mime"
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
)

// Mail as it comes: what the MIME library refuses and a reader of the
// message would still understand (docs/MAILSTORE.md, "Parsing"). The
// library gives up on a whole header for one line it cannot read, and on
// a Content-Type's parameters, subtype included, for one it cannot; both
// are common in mail from old or hand-written software, and Dovecot reads
// past them.

// Lenient returns b with the lines of its header that are no header field
// left out: a line without a colon (an mbox "From " line, a stray word),
// a field name with a space or a byte outside printable US-ASCII, and the
// continuation lines of those, or of nothing (a header starting with one).
// A Content-Type or Content-Disposition field whose parameters do not
// parse is written again in the form its parameters are read in
// (ContentType) when types is set, and a Content-Type of "multipart/"
// and no subtype as application/octet-stream (noSubtype). It returns b itself when nothing is
// left out or written again, or when no line of the header is a field (no
// header at all: the whole of b is text), and a copy of the header followed by b's own
// body otherwise; the body starts len(result)-(len(b)-headerLength(b))
// bytes into the result.
func Lenient(b []byte, types bool) []byte {
	var out []byte // nil until a line is left out or changed
	keep := false  // whether the field being read is kept
	fields := 0    // fields kept
	for i := 0; i < len(b); {
		end := lineEnd(b, i)
		line := b[i:end]
		if blankLine(line) {
			if out == nil || fields == 0 {
				return b
			}
			return append(out, b[i:]...)
		}
		var repl []byte
		switch {
		case line[0] == ' ' || line[0] == '\t':
			// A continuation: of the field it continues.
		default:
			keep = validFieldLine(line)
			if keep {
				fields++
			}
			if keep && types {
				repl = rewrittenType(b[i:])
			}
		}
		switch {
		case repl != nil:
			if out == nil {
				out = append(make([]byte, 0, len(b)+len(repl)), b[:i]...)
			}
			out = append(out, repl...)
			// Skip the field's continuation lines: repl is the whole field.
			end = fieldEnd(b, end)
		case !keep:
			if out == nil {
				out = append(make([]byte, 0, len(b)), b[:i]...)
			}
		case out != nil:
			out = append(out, line...)
		}
		i = end
	}
	if out == nil || fields == 0 {
		return b
	}
	return out
}

// hasField reports whether a line of h, a header, starts a field
// (validFieldLine).
func hasField(h []byte) bool {
	for i := 0; i < len(h); {
		end := lineEnd(h, i)
		line := h[i:end]
		if blankLine(line) {
			return false
		}
		if line[0] != ' ' && line[0] != '\t' && validFieldLine(line) {
			return true
		}
		i = end
	}
	return false
}

// validFieldLine reports whether line starts a header field the MIME
// library reads: a name of printable US-ASCII other than the colon,
// spaces and tabs around it aside, then a colon.
func validFieldLine(line []byte) bool {
	c := bytes.IndexByte(line, ':')
	if c < 0 {
		return false
	}
	name := bytes.Trim(line[:c], " \t")
	for _, ch := range name {
		if ch < 33 || ch > 126 {
			return false
		}
	}
	return true
}

// fieldEnd returns where the field whose first line ends at end ends:
// after its continuation lines.
func fieldEnd(b []byte, end int) int {
	for end < len(b) && (b[end] == ' ' || b[end] == '\t') {
		end = lineEnd(b, end)
	}
	return end
}

var (
	fieldContentType, fieldContentDisposition = []byte("Content-Type"), []byte("Content-Disposition")
	fieldTransferEncoding                     = []byte("Content-Transfer-Encoding")
)

// rewrittenType returns the field starting at b written again, CRLF
// ended, when it is a Content-Type or Content-Disposition whose value
// mime.ParseMediaType refuses (a Content-Type of "multipart/" and no
// subtype as application/octet-stream), or a Content-Transfer-Encoding
// with a comment (TransferEncoding), or nil.
func rewrittenType(b []byte) []byte {
	c := bytes.IndexByte(b, ':')
	rawName := bytes.Trim(b[:c], " \t")
	// Every field of every message passes here: no allocation before
	// the name is known to be one of the three.
	cte := bytes.EqualFold(rawName, fieldTransferEncoding)
	if !cte && !bytes.EqualFold(rawName, fieldContentType) && !bytes.EqualFold(rawName, fieldContentDisposition) {
		return nil
	}
	end := fieldEnd(b, lineEnd(b, 0))
	if cte {
		if bytes.IndexByte(b[c+1:end], '(') < 0 {
			return nil
		}
		return []byte(string(rawName) + ": " + TransferEncoding(unfold(string(b[c+1:end]))) + "\r\n")
	}
	if bytes.Count(b[c+1:end], []byte(";")) > MaxFieldSemicolons {
		// Beyond the bounds (BoundedHeader): left as it is, unread.
		return nil
	}
	name := string(rawName)
	raw := strings.TrimSpace(unfold(string(b[c+1 : end])))
	if _, _, err := mime.ParseMediaType(raw); err == nil {
		return nil
	}
	t, params := parseTyped(raw)
	if t == "" && !cte && bytes.EqualFold(rawName, fieldContentType) && noSubtype(strings.ToLower(raw)) {
		// "multipart/" and no subtype: one part to the structure
		// (noSubtype), and so to the library, which took it for a
		// multipart of no part.
		return []byte(name + ": application/octet-stream\r\n")
	}
	if t == "" {
		return nil
	}
	v := mime.FormatMediaType(t, params)
	if v == "" {
		v = t
	}
	return []byte(name + ": " + v + "\r\n")
}

// TransferEncoding returns the mechanism a Content-Transfer-Encoding
// field's value names, without the comments RFC 2045 section 6.1 allows
// in it (a structured field: RFC 822's comments) and the white space
// around it: "quoted-printable (by hand)" is "quoted-printable". Its case
// is the value's. A value without a comment costs no allocation.
func TransferEncoding(v string) string {
	if strings.IndexByte(v, '(') < 0 {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(stripComments(v))
}

// CommentedTransferEncoding reports whether a header of b, the message's
// own or a part's, may hold a Content-Transfer-Encoding with a comment:
// a line that names the field (in its usual case, in lower case or in
// capitals) and has an opening parenthesis after the name, on that line
// or on the field's continuation lines. A quick look before a
// message's parts are read again with the comments left out (Mended).
//
// It reads b once, from one hyphen to the next (each name has one, after
// its 7th byte), where it looked for each name in turn: the three
// searches for a name beginning with a letter as common as r or R were
// about a seventh of a SEARCH BODY over mail the index lacks.
func CommentedTransferEncoding(b []byte) bool {
	const dash = len("ransfer") // the hyphen's offset in each name
	for k := dash; k < len(b); k++ {
		j := bytes.IndexByte(b[k:], '-')
		if j < 0 {
			break
		}
		k += j
		i := k - dash + len("ransfer-Encoding:")
		if i <= len(b) && transferName(b[k-dash:i]) && bytes.IndexByte(b[i:fieldEnd(b, lineEnd(b, i))], '(') >= 0 {
			return true
		}
	}
	return false
}

// transferName reports whether p is a spelling of the
// Content-Transfer-Encoding field's name CommentedTransferEncoding looks
// for, its first letter left out.
func transferName(p []byte) bool {
	switch string(p) {
	case "ransfer-Encoding:", "ransfer-encoding:", "RANSFER-ENCODING:":
		return true
	}
	return false
}

// ContentType returns the media type of a part's header, lower case, and
// its parameters, RFC 2231 and RFC 2047 forms decoded, as go-message
// reads them; where go-message would give the whole value as the type
// and no parameter (a comment, an empty or repeated parameter, a value
// with spaces or other specials unquoted), the type and every parameter
// that can be read, the first of each name. Without the field, it is
// text/plain with no parameter.
func ContentType(h textproto.Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if v == "" {
		return "text/plain", nil // as go-message has it
	}
	return typedField(v)
}

// ContentDisposition is ContentType of the Content-Disposition field.
func ContentDisposition(h textproto.Header) (string, map[string]string) {
	return typedField(h.Get("Content-Disposition"))
}

func typedField(v string) (string, map[string]string) {
	if v == "" {
		return "", nil
	}
	v = extendedToUTF8(v)
	t, params, err := mime.ParseMediaType(v)
	if err != nil {
		t, params = parseTyped(v)
		if t == "" {
			return v, nil // as the library: the value as the type
		}
	}
	for k, p := range params {
		if !strings.Contains(p, "=?") {
			continue // no encoded word: nothing to decode
		}
		if d, ok := DecodeHeaderValue(p); ok {
			params[k] = d
		}
	}
	return t, params
}

// extendedToUTF8 returns v with each RFC 2231 extended parameter in a
// charset other than UTF-8 and US-ASCII (name*=iso-8859-1'de'Gr%FC%DFe.txt,
// or continued, name*0*=...; name*1=...) written again as one parameter
// in UTF-8 (its charset utf-8, no language, Gr%C3%BC%C3%9Fe.txt), which
// mime.ParseMediaType decodes. It decodes those two charsets only, and
// left out a parameter in any other: a filename in ISO-8859-1 or
// Shift_JIS was not in BODYSTRUCTURE at all, and of one continued only
// the pieces after the first were ("résumé final.pdf" was " final.pdf").
// A parameter whose pieces do not follow on from 0, do not decode or are
// in a charset go-message does not know is left as it is.
func extendedToUTF8(v string) string {
	if !strings.Contains(v, "*") {
		return v
	}
	segs := splitParams(v)
	type piece struct {
		seg     int
		n       int
		encoded bool
		value   string
	}
	pieces := map[string][]piece{}
	for i, seg := range segs[1:] {
		name, value, ok := strings.Cut(strings.TrimSpace(seg), "=")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		base, rest, extended := strings.Cut(name, "*")
		if !extended || base == "" {
			continue
		}
		p := piece{seg: i + 1, value: strings.TrimSpace(value)}
		if rest == "" {
			p.encoded = true // name*=
		} else {
			idx, enc := strings.CutSuffix(rest, "*")
			n, err := strconv.Atoi(idx)
			if err != nil || n < 0 || idx != strconv.Itoa(n) {
				continue
			}
			p.n, p.encoded = n, enc
		}
		pieces[base] = append(pieces[base], p)
	}
	drop := map[int]bool{}
	var added []string
	for _, base := range slices.Sorted(maps.Keys(pieces)) {
		ps := pieces[base]
		slices.SortStableFunc(ps, func(a, b piece) int { return a.n - b.n })
		if !ps[0].encoded || ps[0].n != 0 {
			continue
		}
		cs, rest, ok := strings.Cut(ps[0].value, "'")
		if !ok {
			continue
		}
		_, first, ok := strings.Cut(rest, "'") // the language
		if !ok || cs == "" || strings.EqualFold(cs, "utf-8") || strings.EqualFold(cs, "us-ascii") {
			continue
		}
		var raw []byte
		good := true
		for i, p := range ps {
			if p.n != i {
				good = false
				break
			}
			val := p.value
			if i == 0 {
				val = first
			}
			if !p.encoded {
				raw = append(raw, unquoteParam(val)...)
				continue
			}
			b, err := percentDecode(val)
			if err != nil {
				good = false
				break
			}
			raw = append(raw, b...)
		}
		if !good {
			continue
		}
		r, err := charset.Reader(cs, bytes.NewReader(raw))
		if err != nil {
			continue
		}
		text, err := io.ReadAll(r)
		if err != nil {
			continue
		}
		for _, p := range ps {
			drop[p.seg] = true
		}
		added = append(added, base+"*=utf-8''"+percentEncode(text))
	}
	if len(added) == 0 {
		return v
	}
	out := []string{segs[0]}
	for i, seg := range segs[1:] {
		if !drop[i+1] {
			out = append(out, seg)
		}
	}
	return strings.Join(append(out, added...), ";")
}

// unquoteParam returns a parameter value without its quotes and quoting
// backslashes, or as it is when it is not quoted.
func unquoteParam(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	return unquote(v[1 : len(v)-1])
}

// percentDecode undoes RFC 2231's %XX octets.
func percentDecode(v string) ([]byte, error) {
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			out = append(out, v[i])
			continue
		}
		if i+2 >= len(v) {
			return nil, fmt.Errorf("short escape in %q", v)
		}
		n, err := strconv.ParseUint(v[i+1:i+3], 16, 8)
		if err != nil {
			return nil, err
		}
		out = append(out, byte(n))
		i += 2
	}
	return out, nil
}

// percentEncode writes b as an RFC 2231 extended value: attribute-chars
// as they are, every other octet as %XX.
func percentEncode(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c > ' ' && c < 0x7f && !strings.ContainsRune("*'%()<>@,;:\\\"/[]?=", rune(c)) {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, "%%%02X", c)
		}
	}
	return s.String()
}

// parseTyped reads a Content-Type or Content-Disposition value that
// mime.ParseMediaType refuses: comments (RFC 5322 section 3.2.2) left
// out, each parameter read alone, the first of a name kept, one that
// cannot be read (no name, no value) left out, an unquoted value with
// specials taken as it stands. It returns "" when not even the type reads.
func parseTyped(v string) (string, map[string]string) {
	v = stripComments(v)
	segs := splitParams(v)
	t, _, err := mime.ParseMediaType(strings.TrimSpace(segs[0]))
	if err != nil {
		return "", nil
	}
	var kept []string
	seen := map[string]bool{}
	for _, seg := range segs[1:] {
		seg = strings.TrimSpace(seg)
		name, val, ok := strings.Cut(seg, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		val = strings.TrimSpace(val)
		if !ok || name == "" || val == "" || val == `""` {
			continue
		}
		base, _, _ := strings.Cut(name, "*")
		if seen[name] || (base != name && seen[base]) {
			continue
		}
		if _, _, err := mime.ParseMediaType("x/x; " + name + "=" + val); err != nil {
			// Unquoted specials: quoted, as the sender meant it.
			val = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(strings.Trim(val, `"`)) + `"`
			if _, _, err := mime.ParseMediaType("x/x; " + name + "=" + val); err != nil {
				continue
			}
		}
		seen[name] = true
		kept = append(kept, name+"="+val)
	}
	_, params, err := mime.ParseMediaType(t + "; " + strings.Join(kept, "; "))
	if err != nil || len(kept) == 0 {
		params = map[string]string{}
	}
	return t, params
}

// splitParams splits a value at the semicolons outside quoted strings.
func splitParams(v string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == ';' && !quoted:
			out = append(out, v[start:i])
			start = i + 1
		}
	}
	return append(out, v[start:])
}

// DecodeBase64 decodes a base64 body as RFC 2045 section 6.8 reads it:
// characters outside the alphabet (line breaks, a stray character) are
// ignored, the data ends at the first "=", and missing padding is no
// error; a last character that makes no byte is dropped. The MIME library
// gives up on such a body whole.
func DecodeBase64(b []byte) []byte {
	clean := make([]byte, 0, len(b))
scan:
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		case c == '=':
			break scan
		}
	}
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1]
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, _ := base64.RawStdEncoding.Decode(out, clean)
	return out[:n]
}

// readLenientHeader reads the header of a forwarded message (a
// message/rfc822 part) from br as Lenient reads a message's own: a line
// that is no field is left out, where textproto.ReadHeader stops at it
// and the fields after it were read as the message's body (the
// structure showed a text part where the message holds a multipart).
// It returns the header, the reader of the body after it, and whether a
// line was left out. A header none of whose lines is a field is a header
// of no field still, up to the blank line that ends it or the end of the
// part, as BODY[n.HEADER] serves it and Dovecot reads it: the library
// stopped at its first line, and took the lines after it for the body
// (a part holding "text\r\nmore text\r\n" had a body "more text" of a
// line, where BODY[n.HEADER] is the whole part and BODY[n.TEXT] empty).
// A header Lenient leaves as it is is read by textproto.ReadHeader from
// the same bytes, as before. The header is read into memory whole: br is guarded
// (headerGuard) or reads bytes in memory already.
func readLenientHeader(br *bufio.Reader) (textproto.Header, *bufio.Reader, bool) {
	var raw []byte
	for start := true; ; {
		line, err := br.ReadSlice('\n')
		raw = append(raw, line...)
		if err == bufio.ErrBufferFull {
			start = false
			continue
		}
		if err != nil || (start && blankLine(line)) {
			break
		}
		start = true
	}
	if l := Lenient(raw, false); len(l) != len(raw) || !bytes.Equal(l, raw) {
		h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(l)))
		return h, br, true
	}
	if !blankLine(raw) && !hasField(raw) {
		return textproto.Header{}, br, true
	}
	again := bufio.NewReader(io.MultiReader(bytes.NewReader(raw), br))
	h, _ := textproto.ReadHeader(again)
	return h, again, false
}
