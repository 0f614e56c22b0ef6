package mimeform

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// The stored forms of ENVELOPE and BODYSTRUCTURE: JSON of the types below,
// which mirror imap.Envelope and imap.BodyStructure field for field (nil and
// empty maps and slices stay distinct), and what go-imap's types have no
// field for beside them (a part's MD5, an envelope's date text). Format
// version 1; a change of shape needs a schema migration that rewrites the
// stored values. A field added that may be absent, read as it was served
// before it was kept, needs none (md5, date_text).

type envelopeJSON struct {
	Date time.Time `json:"date"`
	// DateText is the Date field's text (dateTexts), which go-imap's
	// type has no field for. Absent where the message has no Date field,
	// and in what was stored before it was kept: Date is served then, as
	// it was (docs/IMAP.md, "Envelope dates").
	DateText  *string       `json:"date_text,omitempty"`
	Subject   string        `json:"subject,omitempty"`
	From      []addressJSON `json:"from"`
	Sender    []addressJSON `json:"sender"`
	ReplyTo   []addressJSON `json:"reply_to"`
	To        []addressJSON `json:"to"`
	Cc        []addressJSON `json:"cc"`
	Bcc       []addressJSON `json:"bcc"`
	InReplyTo []string      `json:"in_reply_to"`
	MessageID string        `json:"message_id,omitempty"`
}

type addressJSON struct {
	Name    string `json:"name,omitempty"`
	Mailbox string `json:"mailbox,omitempty"`
	Host    string `json:"host,omitempty"`
}

type structureJSON struct {
	// Multipart parts have Children and MultiExt; single parts the rest.
	Multi    bool             `json:"multi,omitempty"`
	Children []*structureJSON `json:"children,omitempty"`
	MultiExt *multiExtJSON    `json:"multi_ext,omitempty"`

	Type        string            `json:"type,omitempty"`
	Subtype     string            `json:"subtype,omitempty"`
	Params      map[string]string `json:"params"`
	ID          string            `json:"id,omitempty"`
	Description string            `json:"description,omitempty"`
	Encoding    string            `json:"encoding,omitempty"`
	Size        uint32            `json:"size,omitempty"`
	Message     *messageJSON      `json:"message,omitempty"`
	TextLines   *int64            `json:"text_lines,omitempty"`
	SingleExt   *singleExtJSON    `json:"single_ext,omitempty"`
}

type messageJSON struct {
	Envelope  *envelopeJSON  `json:"envelope"`
	Structure *structureJSON `json:"structure"`
	NumLines  int64          `json:"lines"`
}

type multiExtJSON struct {
	Params      map[string]string `json:"params"`
	Disposition *dispositionJSON  `json:"disposition,omitempty"`
	Language    []string          `json:"language"`
	Location    string            `json:"location,omitempty"`
}

type singleExtJSON struct {
	// MD5 is the part's Content-MD5 (body-fld-md5), which go-imap's types
	// have no field for (partMD5s). Absent in what was stored before it
	// was kept, which reads as NIL, as it was written then: no rewrite.
	MD5         string           `json:"md5,omitempty"`
	Disposition *dispositionJSON `json:"disposition,omitempty"`
	Language    []string         `json:"language"`
	Location    string           `json:"location,omitempty"`
}

// partMD5s holds the Content-MD5 of the single parts of a structure that
// have one, beside the structure: imap.BodyStructureSinglePartExt has no
// field for body-fld-md5 (RFC 9051 section 9), so go-imap writes NIL. Nil
// until a part has one (a lookup in a nil map gives "").
type partMD5s map[*imap.BodyStructureSinglePart]string

// add records v as p's MD5, making the map at the first: most messages
// have none, and a first sync parses every one. A nil m wants none.
func (m *partMD5s) add(p *imap.BodyStructureSinglePart, v string) {
	if m == nil {
		return
	}
	if *m == nil {
		*m = partMD5s{}
	}
	(*m)[p] = v
}

// dateTexts holds the Date field's text of the envelopes that have one,
// beside them: RFC 9051 section 7.5.2 makes an envelope's date the
// field's text (an nstring, NIL only when there is no Date field), and
// imap.Envelope holds a time.Time, which go-imap writes again in RFC
// 5322's form and as NIL when it does not parse. Nil until an envelope
// has one. A list rather than a map: most messages have one envelope, a
// first sync parses every one, and a map of one took ten times the bytes.
type dateTexts []dateOf

type dateOf struct {
	e *imap.Envelope
	v string
}

// add records v as e's date text. A nil d wants none.
func (d *dateTexts) add(e *imap.Envelope, v string) {
	if d == nil {
		return
	}
	for i := range *d {
		if (*d)[i].e == e {
			(*d)[i].v = v
			return
		}
	}
	*d = append(*d, dateOf{e, v})
}

// text returns e's date text and whether it has one.
func (d dateTexts) text(e *imap.Envelope) (string, bool) {
	for _, t := range d {
		if t.e == e {
			return t.v, true
		}
	}
	return "", false
}

type dispositionJSON struct {
	Value  string            `json:"value"`
	Params map[string]string `json:"params"`
}

func addressesToJSON(in []imap.Address) []addressJSON {
	if in == nil {
		return nil
	}
	out := make([]addressJSON, len(in))
	for i, a := range in {
		out[i] = addressJSON(a)
	}
	return out
}

func addressesFromJSON(in []addressJSON) []imap.Address {
	if in == nil {
		return nil
	}
	out := make([]imap.Address, len(in))
	for i, a := range in {
		out[i] = imap.Address(a)
	}
	return out
}

func envelopeToJSON(e *imap.Envelope, dates dateTexts) *envelopeJSON {
	if e == nil {
		return nil
	}
	date := e.Date
	if y := date.Year(); y < 1 || y > 9999 {
		date = time.Time{} // outside what the stored form (RFC 3339) can hold
	}
	var text *string
	if v, ok := dates.text(e); ok {
		text = &v
	}
	return &envelopeJSON{
		Date: date, DateText: text, Subject: e.Subject,
		From: addressesToJSON(e.From), Sender: addressesToJSON(e.Sender),
		ReplyTo: addressesToJSON(e.ReplyTo), To: addressesToJSON(e.To),
		Cc: addressesToJSON(e.Cc), Bcc: addressesToJSON(e.Bcc),
		InReplyTo: e.InReplyTo, MessageID: e.MessageID,
	}
}

// envelopeFromJSON gives back the envelope e holds, and adds its date
// text to dates (none when dates is nil).
func envelopeFromJSON(e *envelopeJSON, dates *dateTexts) *imap.Envelope {
	if e == nil {
		return nil
	}
	out := &imap.Envelope{
		Date: e.Date, Subject: e.Subject,
		From: addressesFromJSON(e.From), Sender: addressesFromJSON(e.Sender),
		ReplyTo: addressesFromJSON(e.ReplyTo), To: addressesFromJSON(e.To),
		Cc: addressesFromJSON(e.Cc), Bcc: addressesFromJSON(e.Bcc),
		InReplyTo: e.InReplyTo, MessageID: e.MessageID,
	}
	if e.DateText != nil {
		dates.add(out, *e.DateText)
	}
	return out
}

func dispositionToJSON(d *imap.BodyStructureDisposition) *dispositionJSON {
	if d == nil {
		return nil
	}
	return &dispositionJSON{Value: d.Value, Params: d.Params}
}

func dispositionFromJSON(d *dispositionJSON) *imap.BodyStructureDisposition {
	if d == nil {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: d.Value, Params: d.Params}
}

func structureToJSON(bs imap.BodyStructure, md5s partMD5s, dates dateTexts) *structureJSON {
	switch bs := bs.(type) {
	case *imap.BodyStructureMultiPart:
		out := &structureJSON{Multi: true, Subtype: bs.Subtype, Children: make([]*structureJSON, len(bs.Children))}
		for i, c := range bs.Children {
			out.Children[i] = structureToJSON(c, md5s, dates)
		}
		if x := bs.Extended; x != nil {
			out.MultiExt = &multiExtJSON{Params: x.Params, Disposition: dispositionToJSON(x.Disposition),
				Language: x.Language, Location: x.Location}
		}
		return out
	case *imap.BodyStructureSinglePart:
		out := &structureJSON{Type: bs.Type, Subtype: bs.Subtype, Params: bs.Params, ID: bs.ID,
			Description: bs.Description, Encoding: bs.Encoding, Size: bs.Size}
		if m := bs.MessageRFC822; m != nil {
			out.Message = &messageJSON{Envelope: envelopeToJSON(m.Envelope, dates),
				Structure: structureToJSON(m.BodyStructure, md5s, dates), NumLines: m.NumLines}
		}
		if bs.Text != nil {
			n := bs.Text.NumLines
			out.TextLines = &n
		}
		if x := bs.Extended; x != nil {
			out.SingleExt = &singleExtJSON{MD5: md5s[bs], Disposition: dispositionToJSON(x.Disposition),
				Language: x.Language, Location: x.Location}
		}
		return out
	}
	return nil
}

// structureFromJSON gives back the structure s holds, and adds the MD5s
// of its parts to md5s and the date texts of its envelopes to dates (none
// when nil).
func structureFromJSON(s *structureJSON, md5s *partMD5s, dates *dateTexts) imap.BodyStructure {
	if s == nil {
		return nil
	}
	if s.Multi {
		out := &imap.BodyStructureMultiPart{Subtype: s.Subtype, Children: make([]imap.BodyStructure, len(s.Children))}
		for i, c := range s.Children {
			out.Children[i] = structureFromJSON(c, md5s, dates)
		}
		if x := s.MultiExt; x != nil {
			out.Extended = &imap.BodyStructureMultiPartExt{Params: x.Params,
				Disposition: dispositionFromJSON(x.Disposition), Language: x.Language, Location: x.Location}
		}
		return out
	}
	out := &imap.BodyStructureSinglePart{Type: s.Type, Subtype: s.Subtype, Params: s.Params, ID: s.ID,
		Description: s.Description, Encoding: s.Encoding, Size: s.Size}
	if m := s.Message; m != nil {
		out.MessageRFC822 = &imap.BodyStructureMessageRFC822{Envelope: envelopeFromJSON(m.Envelope, dates),
			BodyStructure: structureFromJSON(m.Structure, md5s, dates), NumLines: m.NumLines}
	}
	if s.TextLines != nil {
		out.Text = &imap.BodyStructureText{NumLines: *s.TextLines}
	}
	if x := s.SingleExt; x != nil {
		out.Extended = &imap.BodyStructureSinglePartExt{Disposition: dispositionFromJSON(x.Disposition),
			Language: x.Language, Location: x.Location}
		if x.MD5 != "" {
			md5s.add(out, x.MD5)
		}
	}
	return out
}

func encodeEnvelope(e *imap.Envelope, dates dateTexts) ([]byte, error) {
	b, err := json.Marshal(envelopeToJSON(e, dates))
	if err != nil {
		return nil, fmt.Errorf("encoding envelope: %w", err)
	}
	return b, nil
}

// DecodeEnvelope gives back the envelope Parse stored as b, but for its
// date's text, which go-imap's type cannot hold (DecodeEnvelopeDate).
func DecodeEnvelope(b []byte) (*imap.Envelope, error) {
	return decodeEnvelope(b, nil)
}

// DecodeEnvelopeDate is DecodeEnvelope, also giving the envelope's date
// as ENVELOPE writes it (DateForm), nil where go-imap writes the same
// from the envelope (imapserver's writeEnvelope: the date written again
// in RFC 5322's form, NIL for none), and where the envelope was stored
// before its date's text was kept: go-imap's form is served for it then,
// as it was.
func DecodeEnvelopeDate(b []byte) (*imap.Envelope, []byte, error) {
	var dates dateTexts
	e, err := decodeEnvelope(b, &dates)
	if err != nil || e == nil {
		return e, nil, err
	}
	return e, dates.form(e), nil
}

// DecodeStructureDates is DecodeStructure, also giving the dates of the
// envelopes of its message/rfc822 parts, in the order BODYSTRUCTURE
// writes them (a part's envelope before the parts it nests), each as
// DecodeEnvelopeDate gives it; nil when every one is nil.
func DecodeStructureDates(b []byte) (imap.BodyStructure, [][]byte, error) {
	bs, dates, _, err := DecodeStructureForms(b, false)
	return bs, dates, err
}

// DecodeStructureForms is DecodeStructureDates, also giving the
// body-fld-md5 of its single parts as BODYSTRUCTURE writes it (RFC 9051
// section 9, body-ext-1part; go-imap's types have no field for it and it
// writes NIL), in the order of the parts (a message/rfc822 part before
// the parts it nests): the Content-MD5 as a quoted string, or a literal
// where it cannot be one, nil for a part without it; md5s is nil when
// every one is nil, as for every structure stored before it was kept.
//
// With rev1 (a session that has not enabled IMAP4rev2), bs is
// IMAP4rev1's (Rev1Structure) and the lists are its own: a message/global
// part's nested envelope and parts are not in them.
func DecodeStructureForms(b []byte, rev1 bool) (bs imap.BodyStructure, dates, md5s [][]byte, err error) {
	var texts dateTexts
	var sums partMD5s
	bs, err = decodeStructure(b, &sums, &texts)
	if err != nil {
		return nil, nil, nil, err
	}
	if rev1 {
		// The lists are read from the structure decoded, whose parts
		// sums and texts know.
		defer func() { bs = Rev1Structure(bs) }()
	}
	if len(texts) == 0 && len(sums) == 0 {
		return bs, nil, nil, nil
	}
	someDate, someMD5 := false, false
	var walk func(bs imap.BodyStructure)
	walk = func(bs imap.BodyStructure) {
		switch x := bs.(type) {
		case *imap.BodyStructureMultiPart:
			for _, c := range x.Children {
				walk(c)
			}
		case *imap.BodyStructureSinglePart:
			var sum []byte
			if v := sums[x]; v != "" {
				sum, someMD5 = DateForm(v), true
			}
			md5s = append(md5s, sum)
			if m := x.MessageRFC822; m != nil && !(rev1 && isGlobal(x)) {
				f := texts.form(m.Envelope)
				someDate = someDate || f != nil
				dates = append(dates, f)
				walk(m.BodyStructure)
			}
		}
	}
	walk(bs)
	if !someDate {
		dates = nil
	}
	if !someMD5 {
		md5s = nil
	}
	return bs, dates, md5s, nil
}

// form is e's date as ENVELOPE writes it, nil where go-imap writes the
// same from e (DecodeEnvelopeDate).
func (d dateTexts) form(e *imap.Envelope) []byte {
	v, ok := d.text(e)
	if !ok {
		return nil
	}
	if e != nil && !e.Date.IsZero() && len(v) == len(envelopeDateLayout) && e.Date.Format(envelopeDateLayout) == v {
		return nil
	}
	return DateForm(v)
}

func decodeEnvelope(b []byte, dates *dateTexts) (*imap.Envelope, error) {
	var e *envelopeJSON
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decoding stored envelope: %w", err)
	}
	return envelopeFromJSON(e, dates), nil
}

func encodeStructure(bs imap.BodyStructure, md5s partMD5s, dates dateTexts) ([]byte, error) {
	b, err := json.Marshal(structureToJSON(bs, md5s, dates))
	if err != nil {
		return nil, fmt.Errorf("encoding body structure: %w", err)
	}
	return b, nil
}

// Rev1Structure returns bs as an IMAP4rev1 session reads it: each
// message/global part (RFC 6533) a basic part, without the envelope,
// the structure and the line count that follow its size in RFC 9051's
// body-type-msg. RFC 3501's grammar (section 9, media-message) names
// "MESSAGE" "RFC822" alone, so that its client reads "MESSAGE" "GLOBAL"
// as body-type-basic and the envelope where body-fld-md5 should be; this
// is the part as Dovecot 2.3, an IMAP4rev1 server, writes it. The parts
// changed are copies: bs itself is not changed, and is returned when it
// holds no message/global part.
func Rev1Structure(bs imap.BodyStructure) imap.BodyStructure {
	switch x := bs.(type) {
	case *imap.BodyStructureMultiPart:
		var children []imap.BodyStructure
		for i, c := range x.Children {
			r := Rev1Structure(c)
			if r != c && children == nil {
				children = slices.Clone(x.Children)
			}
			if children != nil {
				children[i] = r
			}
		}
		if children == nil {
			return bs
		}
		y := *x
		y.Children = children
		return &y
	case *imap.BodyStructureSinglePart:
		m := x.MessageRFC822
		if m == nil {
			return bs
		}
		if isGlobal(x) {
			y := *x
			y.MessageRFC822 = nil
			return &y
		}
		inner := Rev1Structure(m.BodyStructure)
		if inner == m.BodyStructure {
			return bs
		}
		y, n := *x, *m
		n.BodyStructure = inner
		y.MessageRFC822 = &n
		return &y
	}
	return bs
}

// isGlobal reports whether p is a message/global part.
func isGlobal(p *imap.BodyStructureSinglePart) bool {
	return strings.EqualFold(p.Type, "message") && strings.EqualFold(p.Subtype, "global")
}

// DecodeStructure gives back the body structure Parse stored as b, but
// for its parts' Content-MD5, which go-imap's types cannot hold.
func DecodeStructure(b []byte) (imap.BodyStructure, error) {
	return decodeStructure(b, nil, nil)
}

// decodeStructure is DecodeStructure, adding the parts' MD5s to md5s and
// the date texts of its envelopes to dates (none when nil).
func decodeStructure(b []byte, md5s *partMD5s, dates *dateTexts) (imap.BodyStructure, error) {
	var s *structureJSON
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding stored body structure: %w", err)
	}
	return structureFromJSON(s, md5s, dates), nil
}
