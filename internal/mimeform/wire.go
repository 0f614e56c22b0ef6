package mimeform

import (
	"maps"
	"mime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap/v2"
)

// The envelope's and the body structure's IMAP forms (RFC 9051 section 7.5.2, envelope), kept with
// the body at apply time so that a FETCH of ENVELOPE writes stored bytes
// instead of decoding the stored envelope and encoding it again per
// message. It is written exactly as go-imap's server writes the envelope it
// is handed (sender and reply-to default to from, the subject and the
// names Q-encoded, Message-ID and In-Reply-To in angle brackets), and it is
// made only when every string in it can be written as a quoted string on
// any connection: printable US-ASCII, at most 4096 bytes. Another envelope
// (8-bit addresses, a very long field) has none, and FETCH hands the
// decoded envelope to the library, which picks a quoted string or a
// literal by what the connection enabled.

const envelopeDateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// envelopeWire returns e's IMAP form, its date the text in dates where it
// has one, or nil when it has none (above).
func envelopeWire(e *imap.Envelope, dates dateTexts) []byte {
	w := newWireWriter()
	w.dates = dates
	w.envelope(e)
	return w.form()
}

// wireBufs are the buffers forms are written into, kept between them: a
// first sync writes two forms of every message, and each grew its own
// buffer by doubling and was copied out of it again at its size
// (mailstore keeps a form at its size).
var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledWire is the largest buffer wireBufs keeps.
const maxPooledWire = 64 << 10

// newWireWriter returns a writer into a buffer of wireBufs, which form
// gives back.
func newWireWriter() wireWriter {
	return wireWriter{b: (*wireBufs.Get().(*[]byte))[:0]}
}

// form returns what w wrote, in a slice of its own of that size, or nil
// when it is bad, and gives w's buffer back to wireBufs: w is not used
// after.
func (w *wireWriter) form() []byte {
	var out []byte
	if !w.bad {
		out = make([]byte, len(w.b))
		copy(out, w.b)
	}
	if cap(w.b) <= maxPooledWire {
		b := w.b[:0]
		wireBufs.Put(&b)
	}
	w.b = nil
	return out
}

// structureWire returns the IMAP form of bs as BODYSTRUCTURE (extended
// data included, RFC 9051 section 7.5.2, body) exactly as go-imap writes
// it but for a single part's body-fld-md5, its Content-MD5 in md5s (as
// Dovecot writes it; go-imap's types cannot hold it, and it wrote NIL),
// or nil when it has none: a string that is not a quoted string on
// every connection (as for envelopes), or a structure the library would
// not write (no extension data, a multipart without parts).
func structureWire(bs imap.BodyStructure, md5s partMD5s, dates dateTexts) []byte {
	w := newWireWriter()
	w.md5s, w.dates = md5s, dates
	w.structure(bs)
	return w.form()
}

func (w *wireWriter) structure(bs imap.BodyStructure) {
	w.b = append(w.b, '(')
	switch bs := bs.(type) {
	case *imap.BodyStructureSinglePart:
		w.str(bs.Type)
		w.b = append(w.b, ' ')
		w.str(bs.Subtype)
		w.b = append(w.b, ' ')
		w.params(bs.Params)
		w.b = append(w.b, ' ')
		w.nstr(bs.ID)
		w.b = append(w.b, ' ')
		w.nstr(bs.Description)
		w.b = append(w.b, ' ')
		if bs.Encoding == "" {
			w.str("7bit")
		} else {
			w.str(strings.ToLower(bs.Encoding))
		}
		w.b = append(w.b, ' ')
		w.b = strconv.AppendUint(w.b, uint64(bs.Size), 10)
		if msg := bs.MessageRFC822; msg != nil {
			w.b = append(w.b, ' ')
			w.envelope(msg.Envelope)
			w.b = append(w.b, ' ')
			w.structure(msg.BodyStructure)
			w.b = append(w.b, ' ')
			w.b = strconv.AppendInt(w.b, msg.NumLines, 10)
		} else if text := bs.Text; text != nil {
			w.b = append(w.b, ' ')
			w.b = strconv.AppendInt(w.b, text.NumLines, 10)
		}
		ext := bs.Extended
		if ext == nil {
			w.bad = true
			return
		}
		w.b = append(w.b, ' ')
		w.nstr(w.md5s[bs])
		w.b = append(w.b, ' ')
		w.location(ext.Disposition, ext.Language, ext.Location)
	case *imap.BodyStructureMultiPart:
		if len(bs.Children) == 0 || bs.Extended == nil {
			w.bad = true
			return
		}
		for _, c := range bs.Children {
			w.structure(c)
		}
		w.b = append(w.b, ' ')
		w.str(bs.Subtype)
		ext := bs.Extended
		w.b = append(w.b, ' ')
		w.params(ext.Params)
		w.b = append(w.b, ' ')
		w.location(ext.Disposition, ext.Language, ext.Location)
	default:
		w.bad = true
		return
	}
	w.b = append(w.b, ')')
}

// location writes the extension fields a single part and a multipart both
// end with: disposition, language and location.
func (w *wireWriter) location(d *imap.BodyStructureDisposition, lang []string, loc string) {
	w.disposition(d)
	w.b = append(w.b, ' ')
	w.languages(lang)
	w.b = append(w.b, ' ')
	w.nstr(loc)
}

func (w *wireWriter) params(p map[string]string) {
	if len(p) == 0 {
		w.nil()
		return
	}
	var one [1]string
	keys := one[:]
	if len(p) == 1 {
		// Most parts have one parameter (charset): nothing to sort.
		for k := range p {
			one[0] = k
		}
	} else {
		keys = slices.Sorted(maps.Keys(p))
	}
	w.b = append(w.b, '(')
	for i, k := range keys {
		if i > 0 {
			w.b = append(w.b, ' ')
		}
		w.str(k)
		w.b = append(w.b, ' ')
		w.str(p[k])
	}
	w.b = append(w.b, ')')
}

func (w *wireWriter) disposition(d *imap.BodyStructureDisposition) {
	if d == nil {
		w.nil()
		return
	}
	w.b = append(w.b, '(')
	w.str(d.Value)
	w.b = append(w.b, ' ')
	w.params(d.Params)
	w.b = append(w.b, ')')
}

func (w *wireWriter) languages(l []string) {
	if len(l) == 0 {
		w.nil()
		return
	}
	w.b = append(w.b, '(')
	for i, s := range l {
		if i > 0 {
			w.b = append(w.b, ' ')
		}
		w.str(s)
	}
	w.b = append(w.b, ')')
}

func (w *wireWriter) envelope(e *imap.Envelope) {
	if e == nil {
		e = &imap.Envelope{}
	}
	sender, replyTo := e.Sender, e.ReplyTo
	if sender == nil {
		sender = e.From
	}
	if replyTo == nil {
		replyTo = e.From
	}
	w.b = append(w.b, '(')
	if v, ok := w.dates.text(e); ok {
		w.str(v)
	} else if e.Date.IsZero() {
		w.nil()
	} else {
		w.str(e.Date.Format(envelopeDateLayout))
	}
	w.b = append(w.b, ' ')
	w.nstr(mime.QEncoding.Encode("utf-8", e.Subject))
	for _, l := range [][]imap.Address{e.From, sender, replyTo, e.To, e.Cc, e.Bcc} {
		w.b = append(w.b, ' ')
		w.addresses(l)
	}
	w.b = append(w.b, ' ')
	if len(e.InReplyTo) > 0 {
		w.str("<" + strings.Join(e.InReplyTo, "> <") + ">")
	} else {
		w.nil()
	}
	w.b = append(w.b, ' ')
	if e.MessageID != "" {
		w.quoted("<", e.MessageID, ">")
	} else {
		w.nil()
	}
	w.b = append(w.b, ')')
}

type wireWriter struct {
	b     []byte
	bad   bool      // a string needs a literal, or may be written otherwise on some connection
	md5s  partMD5s  // the single parts' body-fld-md5
	dates dateTexts // the envelopes' Date field texts
}

// DateForm returns an envelope's date as ENVELOPE writes it, the Date
// field's text v as an IMAP string (RFC 9051 section 9, env-date): quoted
// when it is printable US-ASCII, a quote or a backslash escaped, else a
// literal, which holds any bytes on any connection, as Dovecot writes it.
func DateForm(v string) []byte {
	if quotableText(v) {
		w := wireWriter{b: make([]byte, 0, len(v)+8)}
		w.str(v)
		return w.b
	}
	b := make([]byte, 0, len(v)+16)
	b = append(b, '{')
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, "}\r\n"...)
	return append(b, v...)
}

// quotableText reports whether wireWriter.str writes s as a quoted string.
func quotableText(s string) bool {
	if len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' || c > 0x7f {
			return false
		}
	}
	return true
}

func (w *wireWriter) nil() { w.b = append(w.b, "NIL"...) }

func (w *wireWriter) nstr(s string) {
	if s == "" {
		w.nil()
		return
	}
	w.str(s)
}

// str writes s as a quoted string, or marks the form bad when go-imap
// would write a literal on some connection.
func (w *wireWriter) str(s string) { w.quoted("", s, "") }

// quoted is str of pre+s+post, written without joining them first.
func (w *wireWriter) quoted(pre, s, post string) {
	if len(pre)+len(s)+len(post) > 4096 {
		w.bad = true
		return
	}
	w.b = append(w.b, '"')
	for _, part := range [...]string{pre, s, post} {
		for i := 0; i < len(part); i++ {
			c := part[i]
			switch {
			case c == 0 || c == '\r' || c == '\n' || c > 0x7f:
				w.bad = true
				return
			case c == '"' || c == '\\':
				w.b = append(w.b, '\\')
			}
			w.b = append(w.b, c)
		}
	}
	w.b = append(w.b, '"')
}

func (w *wireWriter) addresses(l []imap.Address) {
	if len(l) == 0 {
		w.nil()
		return
	}
	w.b = append(w.b, '(')
	for i, a := range l {
		if i > 0 {
			w.b = append(w.b, ' ')
		}
		w.b = append(w.b, '(')
		w.nstr(mime.QEncoding.Encode("utf-8", a.Name))
		w.b = append(w.b, " NIL "...)
		w.nstr(a.Mailbox)
		w.b = append(w.b, ' ')
		w.nstr(a.Host)
		w.b = append(w.b, ')')
	}
	w.b = append(w.b, ')')
}
