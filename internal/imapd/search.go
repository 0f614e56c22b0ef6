package imapd

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"

	"cspool/internal/mailstore"
)

// maxDecodedText bounds the decoded text SEARCH BODY/TEXT looks at in one
// message.
const maxDecodedText = 16 << 20

// Search implements imapserver.Session with a matcher over the stored
// fields (RFC 9051 section 6.4.4): flags, dates and sizes come with every
// message; the header, the envelope and the body are loaded only when a
// criterion needs them.
func (s *session) Search(kind imapserver.NumKind, c *imap.SearchCriteria, opts *imap.SearchOptions) (*imap.SearchData, error) {
	sel, err := s.current()
	if err != nil {
		return nil, err
	}
	view, max := sel.mb.view(sel.st)
	ctx, cancel := s.ctx()
	defer cancel()
	mt := &matcher{ctx: ctx, max: max, saved: sel.searchRes, recent: s.recentSet()}
	if len(view) > 0 {
		mt.lastUID = view[len(view)-1].uid
	}
	want := needs(c)
	var matched []ref
	err = s.store().Scan(ctx, sel.mb.id, want, func(m *mailstore.Message) error {
		r, ok := findRef(view, m.UID)
		if !ok {
			return nil
		}
		mt.msg, mt.seq, mt.header, mt.body, mt.text = m, r.seq, nil, nil, nil
		ok, err := mt.match(c)
		if ok {
			matched = append(matched, r)
		}
		return err
	})
	if err != nil {
		return nil, s.storeError(err, "")
	}
	data := &imap.SearchData{Count: uint32(len(matched))}
	num := func(r ref) uint32 {
		if kind == imapserver.NumKindUID {
			return uint32(r.uid)
		}
		return r.seq
	}
	if len(matched) > 0 {
		data.Min, data.Max = num(matched[0]), num(matched[len(matched)-1])
	}
	if kind == imapserver.NumKindUID {
		var set imap.UIDSet
		for _, r := range matched {
			if n := len(set); n > 0 && set[n-1].Stop+1 == r.uid {
				set[n-1].Stop = r.uid
			} else {
				set = append(set, imap.UIDRange{Start: r.uid, Stop: r.uid})
			}
		}
		data.All = set
	} else {
		var set imap.SeqSet
		for _, r := range matched {
			if n := len(set); n > 0 && set[n-1].Stop+1 == r.seq {
				set[n-1].Stop = r.seq
			} else {
				set = append(set, imap.SeqRange{Start: r.seq, Stop: r.seq})
			}
		}
		data.All = set
	}
	if opts != nil && opts.ReturnSave {
		sel.searchRes = savedResult(matched, opts)
	}
	return data, nil
}

// savedResult is what SEARCH RETURN (SAVE ...) keeps (RFC 5182 section 2.1):
// only the minimum and/or maximum when just those were asked for.
func savedResult(matched []ref, opts *imap.SearchOptions) []imap.UID {
	var out []imap.UID
	if len(matched) > 0 && !opts.ReturnAll && !opts.ReturnCount && (opts.ReturnMin || opts.ReturnMax) {
		if opts.ReturnMin {
			out = append(out, matched[0].uid)
		}
		if opts.ReturnMax && (!opts.ReturnMin || len(matched) > 1) {
			out = append(out, matched[len(matched)-1].uid)
		}
		return out
	}
	out = make([]imap.UID, len(matched))
	for i, r := range matched {
		out[i] = r.uid
	}
	return out
}

// needs says what the criteria need loaded with every message.
func needs(c *imap.SearchCriteria) mailstore.Want {
	var w mailstore.Want
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		w |= mailstore.WantEnvelope
	}
	if len(c.Header) > 0 || len(c.Text) > 0 {
		w |= mailstore.WantHeader
	}
	for i := range c.Not {
		w |= needs(&c.Not[i])
	}
	for i := range c.Or {
		w |= needs(&c.Or[i][0]) | needs(&c.Or[i][1])
	}
	return w
}

// matcher evaluates criteria on one message at a time, loading and
// decoding its parts at most once.
type matcher struct {
	ctx     context.Context
	max     uint32     // highest client sequence number (*)
	lastUID imap.UID   // highest UID (*)
	saved   []imap.UID // SEARCHRES ($)
	recent  func(imap.UID) bool

	msg    *mailstore.Message
	seq    uint32
	header *textproto.Header // parsed lazily; nil until then
	body   []byte            // raw bytes, loaded lazily
	text   []string          // decoded text parts, lazily
}

func (mt *matcher) match(c *imap.SearchCriteria) (bool, error) {
	m := mt.msg
	for _, set := range c.SeqNum {
		if !mt.inSeqSet(set) {
			return false, nil
		}
	}
	for _, set := range c.UID {
		if !mt.inUIDSet(set) {
			return false, nil
		}
	}
	if !c.Since.IsZero() && dateOf(m.InternalDate.UTC()).Before(dateOf(c.Since)) {
		return false, nil
	}
	if !c.Before.IsZero() && !dateOf(m.InternalDate.UTC()).Before(dateOf(c.Before)) {
		return false, nil
	}
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
		if m.Envelope == nil || m.Envelope.Date.IsZero() {
			return false, nil
		}
		sent := dateOf(m.Envelope.Date)
		if !c.SentSince.IsZero() && sent.Before(dateOf(c.SentSince)) {
			return false, nil
		}
		if !c.SentBefore.IsZero() && !sent.Before(dateOf(c.SentBefore)) {
			return false, nil
		}
	}
	for _, f := range c.Flag {
		if !mt.hasFlag(f) {
			return false, nil
		}
	}
	for _, f := range c.NotFlag {
		if mt.hasFlag(f) {
			return false, nil
		}
	}
	if c.Larger > 0 && m.Size <= c.Larger {
		return false, nil
	}
	if c.Smaller > 0 && m.Size >= c.Smaller {
		return false, nil
	}
	for _, h := range c.Header {
		if !mt.headerHas(h.Key, h.Value) {
			return false, nil
		}
	}
	for _, s := range c.Body {
		ok, err := mt.bodyHas(s)
		if err != nil || !ok {
			return false, err
		}
	}
	for _, s := range c.Text {
		if containsFold(string(m.Header), s) || mt.headerDecodedHas(s) {
			continue
		}
		ok, err := mt.bodyHas(s)
		if err != nil || !ok {
			return false, err
		}
	}
	for i := range c.Not {
		ok, err := mt.match(&c.Not[i])
		if err != nil || ok {
			return false, err
		}
	}
	for i := range c.Or {
		ok, err := mt.match(&c.Or[i][0])
		if err != nil {
			return false, err
		}
		if !ok {
			if ok, err = mt.match(&c.Or[i][1]); err != nil || !ok {
				return false, err
			}
		}
	}
	return true, nil
}

func (mt *matcher) inSeqSet(set imap.SeqSet) bool {
	if imap.IsSearchRes(set) {
		return mt.inSaved()
	}
	return seqIn(set, mt.seq, mt.max)
}

func (mt *matcher) inUIDSet(set imap.UIDSet) bool {
	if imap.IsSearchRes(set) {
		return mt.inSaved()
	}
	uid := mt.msg.UID
	for _, r := range set {
		lo, hi := r.Start, r.Stop
		if lo == 0 {
			lo = mt.lastUID
		}
		if hi == 0 {
			hi = mt.lastUID
		}
		if lo > hi {
			lo, hi = hi, lo
		}
		if uid >= lo && uid <= hi {
			return true
		}
	}
	return false
}

func (mt *matcher) inSaved() bool {
	for _, u := range mt.saved {
		if u == mt.msg.UID {
			return true
		}
	}
	return false
}

func dateOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// hasFlag is msgHasFlag with \Recent, which is the session's (RFC 3501
// section 2.3.2; SEARCH RECENT, NEW and OLD).
func (mt *matcher) hasFlag(f imap.Flag) bool {
	if strings.EqualFold(string(f), `\Recent`) {
		return mt.recent(mt.msg.UID)
	}
	return msgHasFlag(mt.msg.Flags, f)
}

// msgHasFlag matches system flags exactly (they are canonical on both
// sides) and keywords case-insensitively; \Recent is never set.
func msgHasFlag(flags []string, f imap.Flag) bool {
	for _, x := range flags {
		if strings.EqualFold(x, string(f)) {
			return true
		}
	}
	return false
}

func (mt *matcher) parsedHeader() *textproto.Header {
	if mt.header == nil {
		h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(mt.msg.Header)))
		if err != nil {
			h = textproto.Header{}
		}
		mt.header = &h
	}
	return mt.header
}

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// headerHas matches HEADER key value: a field named key whose value,
// raw or with RFC 2047 words decoded, contains value (any, if empty).
func (mt *matcher) headerHas(key, value string) bool {
	h := mt.parsedHeader()
	for f := h.FieldsByKey(key); f.Next(); {
		if value == "" {
			return true
		}
		v := f.Value()
		if containsFold(v, value) {
			return true
		}
		if d, err := wordDecoder.DecodeHeader(v); err == nil && containsFold(d, value) {
			return true
		}
	}
	return false
}

func (mt *matcher) headerDecodedHas(s string) bool {
	h := mt.parsedHeader()
	for f := h.Fields(); f.Next(); {
		if d, err := wordDecoder.DecodeHeader(f.Value()); err == nil && containsFold(d, s) {
			return true
		}
	}
	return false
}

// bodyHas matches BODY s: in the raw text, or in a decoded text part
// (transfer encoding and charset undone).
func (mt *matcher) bodyHas(s string) (bool, error) {
	if mt.body == nil {
		b, err := mt.msg.LoadRaw(mt.ctx)
		if err != nil {
			return false, err
		}
		mt.body = b
	}
	hl := min(int(mt.msg.HeaderLen), len(mt.body))
	if containsFold(string(mt.body[hl:]), s) {
		return true, nil
	}
	if mt.text == nil {
		mt.text = decodedText(mt.body)
	}
	for _, t := range mt.text {
		if containsFold(t, s) {
			return true, nil
		}
	}
	return false, nil
}

// decodedText returns the decoded text/* parts of a message.
func decodedText(raw []byte) []string {
	out := []string{}
	e, err := gomessage.Read(bytes.NewReader(raw))
	if e == nil || (err != nil && !gomessage.IsUnknownCharset(err) && !gomessage.IsUnknownEncoding(err)) {
		return out
	}
	budget := int64(maxDecodedText)
	_ = e.Walk(func(_ []int, part *gomessage.Entity, err error) error {
		if err != nil || part == nil || budget <= 0 {
			return nil
		}
		t, _, _ := part.Header.ContentType()
		if t != "" && !strings.HasPrefix(t, "text/") {
			return nil
		}
		if strings.HasPrefix(t, "multipart/") {
			return nil
		}
		b, _ := io.ReadAll(io.LimitReader(part.Body, budget))
		budget -= int64(len(b))
		out = append(out, string(b))
		return nil
	})
	return out
}

func containsFold(hay, needle string) bool {
	if needle == "" {
		return true
	}
	return strings.Contains(strings.ToLower(hay), strings.ToLower(needle))
}
