package mimeform

import (
	"bytes"
	"errors"
	"io"
)

// Bounds on one header: a message's, a body part's, a nested message's.
// The MIME library keeps a header it parses whole in memory, at a few
// hundred bytes a field beyond the field's own bytes: a delivered message
// of 26 MB that was all header fields ("X-H1: v" and so on, 1.8 million
// of them) took a device daemon to 910 MB while it applied the message,
// and again whenever it indexed it or a client fetched some of its
// fields, and a 50 MB one, what the spool takes by default, to about
// twice that. Anyone may send such a message to a user, and every device
// of the user applies it. A header beyond a bound is not parsed whole:
// the message keeps its bytes, served as they came, and is given the
// fields within the bound (the top header's, for its envelope and
// SEARCH) and the fallback structure (Simplified), as for a MIME tree
// beyond MaxParts. Ordinary mail has a few dozen fields; Postfix keeps
// no more than 100 KB of a header (header_size_limit) by default.
const (
	// MaxHeaderFields is the most fields one header may have.
	MaxHeaderFields = 5000
	// MaxHeaderBytes is the most bytes one header may have: a To field
	// of 20,000 recipients, one a line, is about 1 MB.
	MaxHeaderBytes = 4 << 20
	// MaxFieldSemicolons is the most semicolons one field may hold: a
	// Content-Type or Content-Disposition's parameters (RFC 2045 section
	// 5.1), RFC 2231 continuations included, are as many. The library
	// reads each parameter of such a field into a map, and a header of
	// 150,000 continuations ("name*0=...; name*1=...", 3.5 MB, within
	// MaxHeaderBytes) cost the daemon 1.5 s of CPU at each read of it:
	// a 32 MB message of nine such parts took 12 s to parse and, in the
	// search indexer's write transaction, 10 s more, while a STORE on
	// another message waited 19 s. Real fields hold a few dozen: a
	// filename continued in pieces of 60 bytes, a Received field, a
	// DKIM-Signature.
	MaxFieldSemicolons = 1000
)

// errHeaderTooLarge: a header went beyond MaxHeaderFields, MaxHeaderBytes
// or MaxFieldSemicolons.
var errHeaderTooLarge = errors.New("mimeform: a header beyond the bounds on its fields, bytes or parameters")

// BoundedHeader returns the header at the start of b (up to its blank
// line, or all of b without one) when it is within MaxHeaderFields,
// MaxHeaderBytes and MaxFieldSemicolons, and true; else its first whole
// fields within those bounds followed by a blank line, and false. The
// result is b's own bytes when within.
func BoundedHeader(b []byte) ([]byte, bool) {
	fields, fieldEnd, semicolons := 0, 0, 0
	for i := 0; i < len(b); {
		end := lineEnd(b, i)
		line := b[i:end]
		if blankLine(line) {
			return b[:end], true
		}
		if line[0] != ' ' && line[0] != '\t' {
			fieldEnd = i // a field starts here: the ones before it are whole
			fields++
			semicolons = 0
		}
		semicolons += bytes.Count(line, []byte(";"))
		if fields > MaxHeaderFields || end > MaxHeaderBytes || semicolons > MaxFieldSemicolons {
			cut := make([]byte, 0, fieldEnd+2)
			cut = append(cut, b[:fieldEnd]...)
			return append(cut, "\r\n"...), false
		}
		i = end
	}
	return b, true
}

// headerGuard reads r and stops, with errHeaderTooLarge, at the first
// header in it that goes beyond MaxHeaderFields, MaxHeaderBytes or
// MaxFieldSemicolons, so that
// the MIME library never reads such a header whole. Which lines are a
// header: with no delimiter, the lines at the start up to the first blank
// line (a nested message's); with one ("--" and a multipart's boundary),
// the lines after each delimiter line, up to the next blank line (its
// parts'). A delimiter line is the delimiter followed by nothing but
// spaces, tabs and the line's end, as the library reads one (RFC 2046
// section 5.1.1), give or take where a CR stands: a line the library
// would not take counts more lines as a header's, never fewer. A line that
// starts with a space or a tab continues the field before it.
type headerGuard struct {
	r       io.Reader
	delim   []byte
	tripped bool // a header went beyond the bounds

	maxFields, maxBytes, maxSemicolons int // MaxHeaderFields, MaxHeaderBytes, MaxFieldSemicolons

	inHeader   bool
	fields     int // the current header's, so far
	size       int
	semicolons int  // the current field's, so far
	curLen     int  // bytes of the current line so far
	first      byte // the current line's first byte
	// Outside a header: how many of the delimiter's bytes the current
	// line starts with (-1: it does not), and whether all after them is
	// white space so far.
	matched int
	clean   bool
}

// guardHeaders returns r guarded (headerGuard). delim nil: r starts with
// a header.
func guardHeaders(r io.Reader, delim []byte) *headerGuard {
	return &headerGuard{r: r, delim: delim, inHeader: delim == nil, clean: true,
		maxFields: MaxHeaderFields, maxBytes: MaxHeaderBytes, maxSemicolons: MaxFieldSemicolons}
}

func (g *headerGuard) Read(p []byte) (int, error) {
	if g.tripped {
		return 0, errHeaderTooLarge
	}
	n, err := g.r.Read(p)
	if !g.scan(p[:n]) {
		g.tripped = true
		return 0, errHeaderTooLarge
	}
	return n, err
}

// scan follows c's lines; false when a header went beyond the bounds.
func (g *headerGuard) scan(c []byte) bool {
	for len(c) > 0 {
		seg := c
		complete := false
		if j := bytes.IndexByte(c, '\n'); j >= 0 {
			seg, complete = c[:j+1], true
		}
		c = c[len(seg):]
		if g.curLen == 0 {
			g.first = seg[0]
		}
		g.curLen += len(seg)
		if g.inHeader {
			g.size += len(seg)
			if g.size > g.maxBytes {
				return false
			}
			if g.curLen == len(seg) && g.first != ' ' && g.first != '\t' {
				g.semicolons = 0 // a field starts on this line
			}
			if g.semicolons += bytes.Count(seg, []byte(";")); g.semicolons > g.maxSemicolons {
				return false
			}
			if complete {
				switch {
				case g.curLen == 1 || g.curLen == 2 && g.first == '\r':
					g.inHeader = false // its blank line
				case g.first != ' ' && g.first != '\t':
					if g.fields++; g.fields > g.maxFields {
						return false
					}
				}
				g.curLen = 0
			}
			continue
		}
		if g.delim == nil {
			return true // past the one header: nothing more to follow
		}
		rest := seg
		if g.matched >= 0 && g.matched < len(g.delim) {
			n := min(len(g.delim)-g.matched, len(rest))
			if bytes.Equal(rest[:n], g.delim[g.matched:g.matched+n]) {
				g.matched += n
				rest = rest[n:]
			} else {
				g.matched = -1
			}
		}
		if g.matched == len(g.delim) && g.clean {
			for _, c := range rest {
				if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
					g.clean = false // more after the boundary: "--" of the close delimiter, or text
					break
				}
			}
		}
		if complete {
			if g.matched == len(g.delim) && g.clean {
				g.inHeader, g.fields, g.size = true, 0, 0
			}
			g.matched, g.clean, g.curLen = 0, true, 0
		}
	}
	return true
}

// lineEnd returns where the line of b starting at i ends: after its LF,
// or at the end of b.
func lineEnd(b []byte, i int) int {
	if j := bytes.IndexByte(b[i:], '\n'); j >= 0 {
		return i + j + 1
	}
	return len(b)
}

// blankLine reports whether line (with its ending) is the blank line that
// ends a header: LF or CRLF alone.
func blankLine(line []byte) bool {
	return len(line) == 1 && line[0] == '\n' || len(line) == 2 && line[0] == '\r' && line[1] == '\n'
}

// EndsHeader reports whether b holds the blank line that ends a header,
// as Lenient, BoundedHeader and ParseHeader find it. Given a message's
// first bytes that hold it, those read no further: Lenient of the message
// is Lenient of them followed by the rest of the message, byte for byte.
func EndsHeader(b []byte) bool {
	for i := 0; i < len(b); {
		end := lineEnd(b, i)
		if blankLine(b[i:end]) {
			return true
		}
		i = end
	}
	return false
}
