// Package smtpdata reads the message after an SMTP or LMTP DATA command
// itself, in place of go-smtp v0.25.1's reader, which misses the end of the
// data after a line that ends in a bare CR ("\r\r\n.\r\n": the session
// then waits for its read timeout) and drops the CR of a line that starts
// with ".\r" followed by anything but LF (docs/DELIVERY.md). Conn hands the
// library one line per read, so the message after DATA is still unread when
// the session is called; the session reads it with a Reader and gives the
// library the bare end marker. The LMTP listener (package deliver) and the
// submission listener (package submit) both use it.
package smtpdata

import (
	"bufio"
	"bytes"
	"io"
)

// Reader decodes the content of a DATA command (RFC 5321 section 4.5.2)
// from a connection: it removes the first "." of every line that starts
// with one, returns io.EOF after the line ".", and leaves the reader just
// past that line's CRLF. Only CRLF ends a line: a bare CR or a bare LF is
// message data, and a "." after one is kept. Every other byte, including
// the CRLF of each line and the one before the final ".", is returned as
// it came.
//
// go-smtp v0.25.1's own DATA reader misses the end of the data after a
// line that ends in a bare CR ("\r\r\n.\r\n"), and drops the CR of a line
// that starts with ".\r" followed by anything but LF; this reader is used
// in its place (see Conn).
type Reader struct {
	br    *bufio.Reader
	state int
	err   error // sticky: io.EOF at the end, or the read error
}

const (
	dotBeginLine = iota // at the start of a line: after CRLF, or at the start of the data
	dotDot              // a "." at the start of a line, dropped
	dotDotCR            // "." CR at the start of a line: the end if LF follows
	dotCR               // after a CR: the end of the line if LF follows
	dotData             // inside a line
)

// NewReader returns a Reader of the data that follows DATA on br.
func NewReader(br *bufio.Reader) *Reader { return &Reader{br: br} }

func (r *Reader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.err == nil {
		if n > 0 && r.br.Buffered() == 0 {
			break // return what there is rather than wait for more
		}
		if r.state == dotData {
			// Fast path: a run of bytes up to the next CR passes unchanged.
			buf, _ := r.br.Peek(min(r.br.Buffered(), len(p)-n))
			if i := bytes.IndexByte(buf, '\r'); i != 0 {
				if i > 0 {
					buf = buf[:i]
				}
				if len(buf) > 0 {
					n += copy(p[n:], buf)
					_, _ = r.br.Discard(len(buf))
					continue
				}
			}
		}
		c, err := r.br.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			r.err = err
			break
		}
		switch r.state {
		case dotBeginLine:
			switch c {
			case '.':
				r.state = dotDot
				continue
			case '\r':
				r.state = dotCR
			default:
				r.state = dotData
			}
		case dotDot:
			if c == '\r' {
				r.state = dotDotCR
				continue
			}
			r.state = dotData
		case dotDotCR:
			if c == '\n' {
				r.err = io.EOF
				continue
			}
			// Not the end: the CR held back is data, and c is read again
			// as the byte after a CR.
			_ = r.br.UnreadByte()
			c = '\r'
			r.state = dotCR
		case dotCR:
			switch c {
			case '\n':
				r.state = dotBeginLine
			case '\r':
				// stays after a CR
			default:
				r.state = dotData
			}
		case dotData:
			if c == '\r' {
				r.state = dotCR
			}
		}
		p[n] = c
		n++
	}
	if n > 0 {
		return n, nil
	}
	return 0, r.err
}
