package imapd

import (
	"bytes"
	"slices"
	"strconv"
	"strings"
)

// The stored IMAP forms of ENVELOPE and BODYSTRUCTURE (mimeform's
// envelope and structure encoders) hold what go-imap's types cannot:
// the envelope's date as the Date field's text (RFC 9051 section 7.5.2,
// env-date, an nstring; NIL only when there is no Date field), which
// imap.Envelope holds as a time.Time that the library writes again in
// RFC 5322's form, or NIL when it did not parse; and a single part's
// Content-MD5 (body-fld-md5, section 9), for which
// imap.BodyStructureSinglePartExt has no field, so that the library
// writes NIL. FETCH writes the stored forms when it writes the response
// itself; where the library writes them (a FETCH of other items too, a
// form that needs a literal), the framer puts the stored values in place
// of the library's in what it writes, found by the response's grammar
// (formSwap).

// storedValues are the values of a FETCH response's ENVELOPE, BODY and
// BODYSTRUCTURE the library cannot write (swapForms): env, ENVELOPE's
// date; nested, the dates of the envelopes of the message/rfc822 parts in
// BODY and BODYSTRUCTURE, in their order; md5s, the body-fld-md5 of the
// single parts in BODYSTRUCTURE, in their order (a message/rfc822 part
// before the parts it nests). A nil one, or a nil list, is written as
// the library writes it: mimeform.DecodeEnvelopeDate and
// DecodeStructureForms.
type storedValues struct {
	env    []byte
	nested [][]byte
	md5s   [][]byte
}

// none reports whether v has nothing to put in place.
func (v storedValues) none() bool { return v.env == nil && v.nested == nil && v.md5s == nil }

// swapForms has the FETCH response the library writes next carry v's
// values in place of the library's. What the library writes is held
// until the items that hold them are whole, which come before any
// section of the response, or maxFormSwapHold bytes, and goes on then;
// endFormSwap, once the response is written, writes what is still held.
// Only the goroutine handling the command may call it, around one
// response.
func (fc *frameConn) swapForms(v storedValues) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.formSwap = &formSwap{storedValues: v}
}

// endFormSwap ends swapForms and writes what it still held.
func (fc *frameConn) endFormSwap() error {
	fc.mu.Lock()
	s := fc.formSwap
	fc.formSwap = nil
	fc.mu.Unlock()
	if s == nil || s.done || len(s.held) == 0 {
		return nil
	}
	_, err := fc.Write(s.held)
	return err
}

// maxFormSwapHold bounds what a formSwap holds of a response: the items
// before its first section, a few hundred bytes but for a large
// structure. Past it the response goes as the library wrote it.
const maxFormSwapHold = 1 << 20

// formSwap is a swapForms under way.
type formSwap struct {
	storedValues
	held []byte
	done bool
}

// feed takes p, output of the library, and returns what goes on: nothing
// (whole false) while the items are not whole yet, then the output held
// and p with the stored values in place.
func (s *formSwap) feed(p []byte) (out []byte, whole bool) {
	s.held = append(s.held, p...)
	spans, ok := s.scan()
	if !ok && len(s.held) < maxFormSwapHold {
		return nil, false
	}
	s.done = true
	held := s.held
	s.held = nil
	if !ok || len(spans) == 0 {
		return held, true
	}
	slices.SortFunc(spans, func(a, b swapSpan) int { return a.start - b.start })
	n := len(held)
	for _, sp := range spans {
		n += len(sp.form) - (sp.end - sp.start)
	}
	out = make([]byte, 0, n)
	at := 0
	for _, sp := range spans {
		out = append(out, held[at:sp.start]...)
		out = append(out, sp.form...)
		at = sp.end
	}
	return append(out, held[at:]...), true
}

// swapSpan is a value the library wrote, held[start:end], and the
// stored form to put in its place.
type swapSpan struct {
	start, end int
	form       []byte
}

// scan reads the held output as a FETCH response (RFC 9051 section
// 7.5.2) up to its first section or its end, and returns the spans of the
// values to put in place; ok is false while the items it reads
// are not whole. Output that is no FETCH response, or not as expected,
// gives no span: it goes as the library wrote it.
func (s *formSwap) scan() (spans []swapSpan, ok bool) {
	b := s.held
	i := 0
	if !bytes.HasPrefix(b, []byte("* ")) {
		return nil, len(b) >= 2
	}
	i = 2
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	const fetch = " FETCH ("
	if len(b) < i+len(fetch) {
		return nil, false
	}
	if string(b[i:i+len(fetch)]) != fetch {
		return nil, true
	}
	i += len(fetch)
	for {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		if i >= len(b) {
			return nil, false
		}
		if b[i] == ')' {
			return spans, true
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '[' && b[j] != '(' && b[j] != ')' {
			j++
		}
		if j >= len(b) {
			return nil, false
		}
		if b[j] != ' ' {
			return spans, true // a section: the rest is no envelope
		}
		name := string(b[i:j])
		v, end, whole := parseValue(b, j+1, 0)
		if !whole {
			return nil, false
		}
		if end < 0 {
			return nil, true // not as the grammar has it
		}
		switch name {
		case "ENVELOPE":
			if s.env != nil && v.isList && len(v.list) > 0 && !v.list[0].isList {
				spans = append(spans, swapSpan{v.list[0].start, v.list[0].end, s.env})
			}
		case "BODY", "BODYSTRUCTURE":
			if name == "BODYSTRUCTURE" && s.md5s != nil {
				var found []value
				if partMD5s(b, v, &found) && len(found) == len(s.md5s) {
					for k, f := range found {
						if s.md5s[k] != nil {
							spans = append(spans, swapSpan{f.start, f.end, s.md5s[k]})
						}
					}
				}
			}
			if s.nested != nil {
				var found []value
				nestedDates(v, &found)
				if len(found) == len(s.nested) {
					for k, d := range found {
						if s.nested[k] != nil {
							spans = append(spans, swapSpan{d.start, d.end, s.nested[k]})
						}
					}
				}
			}
		}
		i = end
	}
}

// nestedDates appends the date values of the envelopes of the
// message/rfc822 parts of a body structure, in order: a single part whose
// eighth and ninth fields are lists (its envelope and its body; RFC 9051
// section 9, body-type-msg, where other parts have numbers and strings).
func nestedDates(bs value, out *[]value) {
	if !bs.isList || len(bs.list) == 0 {
		return
	}
	if bs.list[0].isList { // a multipart: its parts, then its subtype
		for _, c := range bs.list {
			if !c.isList {
				break
			}
			nestedDates(c, out)
		}
		return
	}
	if len(bs.list) > 9 && bs.list[7].isList && bs.list[8].isList && len(bs.list[7].list) > 0 && !bs.list[7].list[0].isList {
		*out = append(*out, bs.list[7].list[0])
		nestedDates(bs.list[8], out)
	}
}

// partMD5s appends the body-fld-md5 values of the single parts of an
// extended body structure, in order (a message/rfc822 part before the
// parts it nests), and reports whether each is where RFC 9051 section 9
// has it: after body-fields, seven values (body-type-basic), or after
// body-fld-lines (body-type-text, whose eighth value is a number where
// an nstring would be the MD5), or after the envelope, the body and
// body-fld-lines (body-type-msg, its eighth and ninth values lists).
// go-imap writes NIL there; a part without extension data, or another
// value there, is not as expected. b is the output bs was read from.
func partMD5s(b []byte, bs value, out *[]value) bool {
	if !bs.isList || len(bs.list) == 0 {
		return false
	}
	if bs.list[0].isList { // a multipart: its parts, then its subtype
		for _, c := range bs.list {
			if !c.isList {
				break
			}
			if !partMD5s(b, c, out) {
				return false
			}
		}
		return true
	}
	l := bs.list
	at := 7
	var nested *value
	switch {
	case len(l) > 9 && l[7].isList && l[8].isList:
		at, nested = 10, &l[8]
	case len(l) > 7 && !l[7].isList && l[7].end > l[7].start && isDigit(b[l[7].start]):
		at = 8
	}
	if len(l) <= at || l[at].isList || string(b[l[at].start:l[at].end]) != "NIL" {
		return false
	}
	*out = append(*out, l[at])
	if nested != nil {
		return partMD5s(b, *nested, out)
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// value is an IMAP value the library wrote: a list, or a string, atom or
// number at b[start:end].
type value struct {
	start, end int
	isList     bool
	list       []value
}

// maxValueDepth bounds how deep parseValue reads lists: a body structure
// is as deep as mimeform's parsing bounds let it be, far less.
const maxValueDepth = 200

// parseValue reads one value at b[i:] and returns it and where it ends;
// whole is false when b ends inside it, end is -1 when it is not a value
// the grammar allows.
func parseValue(b []byte, i, depth int) (v value, end int, whole bool) {
	if i >= len(b) {
		return value{}, 0, false
	}
	switch c := b[i]; {
	case c == '(':
		if depth > maxValueDepth {
			return value{}, -1, true
		}
		v = value{start: i, isList: true}
		i++
		for {
			for i < len(b) && b[i] == ' ' {
				i++
			}
			if i >= len(b) {
				return value{}, 0, false
			}
			if b[i] == ')' {
				v.end = i + 1
				return v, i + 1, true
			}
			e, next, whole := parseValue(b, i, depth+1)
			if !whole || next < 0 {
				return value{}, next, whole
			}
			v.list = append(v.list, e)
			i = next
		}
	case c == '"':
		for j := i + 1; j < len(b); j++ {
			switch b[j] {
			case '\\':
				j++
			case '"':
				return value{start: i, end: j + 1}, j + 1, true
			case '\r', '\n':
				return value{}, -1, true
			}
		}
		return value{}, 0, false
	case c == '{' || c == '~':
		k := bytes.Index(b[i:], []byte("}\r\n"))
		if k < 0 {
			if len(b)-i > 24 {
				return value{}, -1, true
			}
			return value{}, 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimLeft(string(b[i:i+k]), "~{"), "+"), 10, 64)
		if err != nil || n < 0 {
			return value{}, -1, true
		}
		start := i + k + 3
		if int64(len(b)-start) < n {
			return value{}, 0, false
		}
		end := start + int(n)
		return value{start: i, end: end}, end, true
	case c == ')' || c == ' ':
		return value{}, -1, true
	default:
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '(' && b[j] != ')' && b[j] != '\r' {
			j++
		}
		if j >= len(b) {
			return value{}, 0, false
		}
		if j == i { // a line end where a value should be
			return value{}, -1, true
		}
		return value{start: i, end: j}, j, true
	}
}

// rev1Wire returns b, a stored BODYSTRUCTURE form (mimeform's structure
// encoder: quoted strings, no literal), as a session that has not enabled
// IMAP4rev2 is given it: each message/global part a basic part, its
// envelope, body and lines after its size left out, as
// mimeform.Rev1Structure makes the structure the library writes. Its
// body-fld-md5 and the fields after it stay. b is given back when it is
// not as expected.
func rev1Wire(b []byte) []byte {
	v, end, whole := parseValue(b, 0, 0)
	if !whole || end != len(b) {
		return b
	}
	var cuts []swapSpan
	globalParts(b, v, &cuts)
	if len(cuts) == 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	at := 0
	for _, c := range cuts {
		out = append(out, b[at:c.start]...)
		at = c.end
	}
	return append(out, b[at:]...)
}

// globalParts appends the spans of the envelope, body and lines of the
// message/global parts of the body structure bs (RFC 9051 section 9,
// body-type-msg), in order.
func globalParts(b []byte, bs value, out *[]swapSpan) {
	if !bs.isList || len(bs.list) == 0 {
		return
	}
	if bs.list[0].isList {
		for _, c := range bs.list {
			if !c.isList {
				break
			}
			globalParts(b, c, out)
		}
		return
	}
	l := bs.list
	if len(l) <= 9 || !l[7].isList || !l[8].isList || l[0].isList || l[1].isList {
		return
	}
	if strings.EqualFold(string(b[l[0].start:l[0].end]), `"message"`) && strings.EqualFold(string(b[l[1].start:l[1].end]), `"global"`) {
		*out = append(*out, swapSpan{start: l[6].end, end: l[9].end})
		return
	}
	globalParts(b, l[8], out)
}
