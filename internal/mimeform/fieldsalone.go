package mimeform

import (
	"bufio"
	"bytes"
	"io"
)

// A part of fields alone: RFC 2046 section 5.1.1 makes a body part's
// blank line and body optional (`body-part := MIME-part-headers [CRLF
// *OCTET]`), and the line break before a delimiter line is the
// delimiter's, so `--b1`, `Content-Type: text/plain`, `--b1--` is a
// part of one field and no body. The library's multipart reader reads a
// part's header up to a blank line and gave up at the delimiter line,
// a line that is no field: the part was left out of the structure, with
// every part after it (Dovecot shows it, empty). The library is given a
// line break before such a delimiter line (the header's end, as it reads
// it), and the part is read as one of no body; the line break is no
// part's byte (Mending.Own). A part whose header has a line that is no
// field, or no line at all, is left as it is.

// delimiterOf reports whether line, with its line break, is a delimiter
// line that opens a part or the closing one, of boundary (when not "")
// or of one of boundaries: "--", the boundary, "--" for the closing one,
// then white space, and the line break or the end of the data (RFC 2046
// section 5.1.1; the library's reading). It returns the boundary.
func delimiterOf(line []byte, boundary string, boundaries map[string]bool) (bd string, open, closing bool) {
	if len(line) < 3 || line[0] != '-' || line[1] != '-' {
		return "", false, false
	}
	token := bytes.TrimRight(line[2:], " \t\r\n")
	if rest := line[2+len(token):]; !validLineRest(rest) {
		return "", false, false
	}
	is := func(b []byte) bool {
		if boundary != "" {
			return string(b) == boundary
		}
		return boundaries[string(b)]
	}
	if is(token) {
		return string(token), true, false
	}
	if t, ok := bytes.CutSuffix(token, []byte("--")); ok && is(t) {
		return string(t), false, true
	}
	return "", false, false
}

// DelimiterLine reports whether line, with its line break, is a delimiter
// line of boundary that opens a part, or the closing one, as the parse
// and the library read them (delimiterOf). A part's data ends before the
// line break of the delimiter after it, so a line with none, at the end of
// the data, is one too.
func DelimiterLine(line []byte, boundary string) (open, closing bool) {
	if boundary == "" {
		return false, false
	}
	_, open, closing = delimiterOf(line, boundary, nil)
	return open, closing
}

// validLineRest reports whether rest, what follows a delimiter's
// boundary, is white space and then a line break or nothing.
func validLineRest(rest []byte) bool {
	rest = bytes.TrimLeft(rest, " \t")
	return len(rest) == 0 || string(rest) == "\r\n" || string(rest) == "\n"
}

// fieldsAlone follows the headers of a multipart's parts, line by line,
// and tells where a line break goes before a delimiter line that ends a
// header of fields alone.
type fieldsAlone struct {
	opener   string // the boundary whose delimiter opened the header
	inHeader bool
	fields   int  // the header's fields so far
	bad      bool // a line of the header is no field
	crlf     bool // the last line ended in CRLF
}

// line takes the next whole line (bd, open and closing are delimiterOf
// it) and returns the line break to write before it, or nil.
func (s *fieldsAlone) line(line []byte, bd string, open, closing bool) []byte {
	var eol []byte
	switch {
	case open || closing:
		if s.inHeader && s.opener == bd && s.fields > 0 && !s.bad {
			eol = []byte("\n")
			if s.crlf {
				eol = []byte("\r\n")
			}
		}
		s.opener, s.inHeader, s.fields, s.bad = bd, open, 0, false
	case !s.inHeader:
	case blankLine(line):
		s.inHeader = false
	case line[0] == ' ' || line[0] == '\t':
		s.bad = s.bad || s.fields == 0
	case validFieldLine(line):
		s.fields++
	default:
		s.bad = true
	}
	s.crlf = bytes.HasSuffix(line, []byte("\r\n"))
	return eol
}

// fieldsAloneReader is r, the body of a multipart of boundary, with a
// line break before each delimiter line that ends a header of fields
// alone: what the library's multipart reader is given.
type fieldsAloneReader struct {
	br       *bufio.Reader
	boundary string
	s        fieldsAlone
	out      []byte // given out next
	buf      []byte
	midLine  bool // the last read ended within a line
	err      error
	mended   *bool // set when a line break is added, when not nil
}

func newFieldsAloneReader(r io.Reader, boundary string, mended *bool) *fieldsAloneReader {
	return &fieldsAloneReader{br: bufio.NewReader(r), boundary: boundary, mended: mended}
}

func (f *fieldsAloneReader) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		line, err := f.br.ReadSlice('\n')
		full := err == bufio.ErrBufferFull
		if !full {
			f.err = err
		}
		atStart := !f.midLine
		f.midLine = full
		f.out = line
		if !atStart || len(line) == 0 {
			continue
		}
		if full {
			// A line longer than the buffer: no delimiter line, a
			// field or not by its start.
			f.s.line(line, "", false, false)
			continue
		}
		bd, open, closing := delimiterOf(line, f.boundary, nil)
		if eol := f.s.line(line, bd, open, closing); eol != nil {
			f.buf = append(append(f.buf[:0], eol...), line...)
			f.out = f.buf
			if f.mended != nil {
				*f.mended = true
			}
		}
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// addBlankLines returns l, a whole message, with a line break before
// each delimiter line of one of boundaries that ends a header of fields
// alone (as fieldsAloneReader writes it at each level), and the offset
// and length of each line break added; l itself when it adds none.
func addBlankLines(l []byte, boundaries map[string]bool) ([]byte, [][2]int) {
	var out []byte
	var added [][2]int
	var s fieldsAlone
	for i := int(headerLength(l)); i < len(l); {
		end := lineEnd(l, i)
		line := l[i:end]
		bd, open, closing := delimiterOf(line, "", boundaries)
		if eol := s.line(line, bd, open, closing); eol != nil {
			if out == nil {
				out = append(make([]byte, 0, len(l)+64), l[:i]...)
			}
			added = append(added, [2]int{len(out), len(eol)})
			out = append(out, eol...)
		}
		if out != nil {
			out = append(out, line...)
		}
		i = end
	}
	if out == nil {
		return l, nil
	}
	return out, added
}
