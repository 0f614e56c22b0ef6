package mimeform

import (
	"bytes"
	"io"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/encoding/charmap"
)

// missingDomain is the host given to an address with no "@" (a local name
// such as "root"): a NIL host would make it an RFC 3501 group marker. It
// is the value other IMAP servers use.
const missingDomain = "MISSING_DOMAIN"

// extractEnvelope builds ENVELOPE (RFC 9051 section 7.5.2, RFC 3501
// section 7.4.2) from a header, as imapserver.ExtractEnvelope does (the
// subject and display names are stored decoded; go-imap encodes them again
// as RFC 2047 words when it writes them), except that it keeps addresses
// without a domain and writes RFC 5322 groups ("Team: a@example.org,
// b@example.org;", "undisclosed-recipients:;") as the RFC 3501 group start
// and end markers, (NIL NIL "Team" NIL) before the members and (NIL NIL NIL
// NIL) after them, where go-imap drops them. The Date field's text goes
// into dates (dateText). nested, when not nil, is what is left of the
// addresses the envelopes of a message's nested messages may hold
// together (maxNestedAddresses), which this one's take from.
func extractEnvelope(h textproto.Header, dates *dateTexts, nested *int) *imap.Envelope {
	mh := mail.Header{Header: gomessage.Header{Header: h}}
	date := envelopeDate(mh)
	// The subject decoded by wordDecoder, as a display name is: go-message's
	// mh.Subject() does not know a word's language tag.
	subject := eightBitText(mh.Get("Subject"))
	if d, ok := DecodeHeaderValue(subject); ok {
		subject = d
	}
	inReplyTo, err := mh.MsgIDList("In-Reply-To")
	if err != nil {
		inReplyTo = looseMsgIDs(mh.Get("In-Reply-To"))
	}
	messageID, err := mh.MessageID()
	if err != nil {
		if ids := looseMsgIDs(mh.Get("Message-Id")); len(ids) > 0 {
			messageID = ids[0]
		}
	}
	env := &imap.Envelope{
		Date:      date,
		Subject:   subject,
		From:      addressList(h, "From", nested),
		Sender:    addressList(h, "Sender", nested),
		ReplyTo:   addressList(h, "Reply-To", nested),
		To:        addressList(h, "To", nested),
		Cc:        addressList(h, "Cc", nested),
		Bcc:       addressList(h, "Bcc", nested),
		InReplyTo: inReplyTo,
		MessageID: messageID,
	}
	if v, ok := dateText(h); ok {
		dates.add(env, v)
	}
	return env
}

// dateText returns the text of h's first Date field, as Dovecot serves it
// in ENVELOPE: the white space after the colon left out, the line breaks
// of its folding too (RFC 5322 section 2.2.3; the white space after them
// stays, and at the end), and bytes that are not UTF-8 read as
// windows-1252 (eightBitText, as the subject's). An empty field's text
// is empty; ok is false when h has no Date field. Where RFC 5322 allows
// one Date field, a header with more is read by its first, as the
// envelope's date and Subject are.
func dateText(h textproto.Header) (v string, ok bool) {
	f := h.FieldsByKey("Date")
	if !f.Next() {
		return "", false
	}
	raw, err := f.Raw()
	if err != nil {
		return f.Value(), true
	}
	_, after, found := bytes.Cut(raw, []byte(":"))
	if !found {
		return f.Value(), true
	}
	after = bytes.TrimLeft(after, " \t\r\n")
	var b []byte
	if bytes.ContainsAny(after, "\r\n") {
		b = make([]byte, 0, len(after))
		for _, c := range after {
			if c != '\r' && c != '\n' {
				b = append(b, c)
			}
		}
	} else {
		b = after
	}
	return eightBitText(string(b)), true
}

// envelopeDate is mh.Date(), its error dropped. A date in the one form
// RFC 5322 section 3.3 recommends ("Mon, 02 Jan 2006 15:04:05 -0700",
// nothing around it) is parsed in that layout alone: net/mail tries a
// list of layouts in turn, and the failures before the one that fits were
// a quarter of what a first sync's parse allocated. Any layout that fits
// such a date gives the same time (TestEnvelopeDateAsNetMail).
func envelopeDate(mh mail.Header) time.Time {
	v := mh.Get("Date")
	if len(v) == len(time.RFC1123Z) && v[3] == ',' {
		if t, err := time.Parse(time.RFC1123Z, v); err == nil {
			return t
		}
	}
	if numeric := numericZone(v); numeric != v {
		var nh mail.Header
		nh.Set("Date", numeric)
		if t, err := nh.Date(); err == nil {
			return t
		}
	}
	date, _ := mh.Date()
	return date
}

// obsoleteZones are the zone names of RFC 5322 section 4.3 other than
// GMT, and their offsets. net/mail parses a date in one with
// time.Parse, which gives a zone name the machine's own zone does not
// know the offset 0: "Thu, 5 Mar 2020 08:00:00 EST" was 08:00 UTC in
// ENVELOPE, five hours off, on a device outside that zone.
var obsoleteZones = map[string]string{
	"EST": "-0500", "EDT": "-0400",
	"CST": "-0600", "CDT": "-0500",
	"MST": "-0700", "MDT": "-0600",
	"PST": "-0800", "PDT": "-0700",
	"UT": "+0000",
}

// numericZone returns the date v with an obsolete zone name at its end
// written as its offset, or v as it is.
func numericZone(v string) string {
	t := strings.TrimRight(v, " \t")
	i := strings.LastIndexAny(t, " \t")
	if i < 0 {
		return v
	}
	zone := strings.ToUpper(t[i+1:])
	if z, ok := obsoleteZones[zone]; ok {
		return t[:i+1] + z
	}
	// A military zone, one letter but J (RFC 5322 section 4.3: their
	// meaning was never agreed, so they are -0000, an unknown offset).
	// net/mail refused them, and the date was NIL.
	if len(zone) == 1 && zone[0] >= 'A' && zone[0] <= 'Z' && zone[0] != 'J' {
		return t[:i+1] + "-0000"
	}
	return v
}

// looseMsgIDs returns the message identifiers of an In-Reply-To or
// Message-ID field that does not parse as RFC 5322 section 3.6.4 has it:
// each one in angle brackets, and what is around them left out
// ("Your message of Mon, 2 Dec 2024 <x@example.org>"), or, with no
// brackets, the field's one word with an "@" ("m1@example.org"). The
// envelope had NIL, and a client threading by it lost the thread. White
// space inside the brackets makes no identifier: no reply would name it
// so.
func looseMsgIDs(v string) []string {
	var ids []string
	for rest := v; ; {
		i := strings.IndexByte(rest, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '>')
		if j < 0 {
			break
		}
		if id := strings.TrimSpace(unfold(rest[i+1 : i+j])); id != "" && !strings.ContainsAny(id, " \t") {
			ids = append(ids, id)
		}
		rest = rest[i+j+1:]
	}
	if len(ids) > 0 {
		return ids
	}
	if w := strings.Fields(stripComments(unfold(v))); len(w) == 1 && strings.Contains(w[0], "@") {
		return w
	}
	return nil
}

// eightBitText returns s with each byte that is not part of valid UTF-8
// read as windows-1252, the superset of Latin-1 that mail in 8-bit
// headers from before UTF-8 is written in ("Subject: Gr\xfc\xdfe").
// Those bytes were stored as U+FFFD, and a client showed "Gr??e" where
// Dovecot hands it the bytes to guess at; a NUL is U+FFFD too, which no
// client takes for the end of the text.
func eightBitText(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case s[i] == 0:
			b.WriteRune(utf8.RuneError)
		case r == utf8.RuneError && n == 1:
			b.WriteRune(charmap.Windows1252.DecodeByte(s[i]))
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// beforeBareCR returns v up to its first bare CR (one no LF follows),
// where Dovecot ends an address field too: the text after it is no
// address ("From: ann@example.org<CR>Subject: x" was the addresses
// "ann@example.orgSubject" and "x", the CR dropped as a line break).
func beforeBareCR(v string) string {
	for i := strings.IndexByte(v, '\r'); i >= 0 && i < len(v); {
		if i+1 == len(v) || v[i+1] != '\n' {
			return v[:i]
		}
		j := strings.IndexByte(v[i+1:], '\r')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return v
}

// unfold undoes header folding (RFC 5322 section 2.2.3): line breaks go,
// the white space after them stays.
func unfold(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	var b strings.Builder
	b.Grow(len(v))
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != '\r' && c != '\n' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// maxEnvelopeAddresses is the most addresses (group markers included) an
// envelope's list holds: the first ones of the message's fields. A header
// of 400,000 recipients in one To field (16 MB, under the size limit, and
// anyone can mail it) made a stored ENVELOPE of 17 MB, sent whole on every
// FETCH of it, and took the device's daemon from 34 to 483 MB while it
// applied the message; no mail client shows more. SEARCH reads the header
// itself, so it still finds every address.
const maxEnvelopeAddresses = 1000

// maxNestedAddresses is the most addresses (group markers included) the
// envelopes of the message/rfc822 parts of one message hold together in
// its BODYSTRUCTURE, the first parts' first: each part's lists are also
// within maxEnvelopeAddresses. A multipart of 495 forwarded messages,
// each with 1,000 recipients in From, To, Cc and Bcc (27 MB, as anyone
// may mail), made a BODYSTRUCTURE of 83 MB, two million addresses, sent
// whole on each FETCH of it; the daemon grew to 575 MB while it applied
// the message, and took 9 s to write the structure through the library
// and 13 s to answer BODY[1.MIME] of it. A digest of 500 forwarded
// messages of ten recipients each keeps every one.
const maxNestedAddresses = 10000

// addressList parses every field named key as an address-list (RFC 5322
// section 3.4), groups included, up to maxEnvelopeAddresses, and up to
// what is left of nested when it is not nil, which it takes them from.
func addressList(h textproto.Header, key string, nested *int) []imap.Address {
	limit := maxEnvelopeAddresses
	if nested != nil {
		limit = min(limit, *nested)
	}
	var out []imap.Address
	for f := h.FieldsByKey(key); f.Next() && len(out) < limit; {
		out = append(out, parseAddressList(unfold(beforeBareCR(f.Value())), limit-len(out))...)
	}
	if nested != nil {
		*nested = max(0, *nested-len(out))
	}
	return out
}

// parseAddressList splits an address-list at the commas, colons and
// semicolons that are not inside a quoted string, a comment or angle
// brackets, and parses each mailbox, until it has limit addresses (and
// the end of a group it is in, when it stops inside one). It never fails:
// what does not parse as a mailbox is left out.
func parseAddressList(v string, limit int) []imap.Address {
	var out []imap.Address
	// The text since the last separator, every byte of it: v[start:i].
	start := 0
	inGroup := false
	emit := func(i int) {
		if a, ok := parseMailbox(v[start:i]); ok {
			out = append(out, a)
		}
		start = i + 1
	}
	depth, angle, quoted := 0, false, false
	i := 0
	for ; i < len(v) && len(out) < limit; i++ {
		c := v[i]
		switch {
		case quoted || depth > 0:
			if c == '\\' && i+1 < len(v) {
				i++ // the byte it quotes, whatever it is
			} else if quoted && c == '"' {
				quoted = false
			} else if !quoted && c == '(' {
				depth++
			} else if !quoted && c == ')' {
				depth--
			}
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case angle:
		case c == ':' && !inGroup:
			name := phrase(v[start:i])
			start = i + 1
			out = append(out, imap.Address{Mailbox: name})
			inGroup = true
		case c == ',':
			emit(i)
		case c == ';' && inGroup:
			emit(i)
			out = append(out, imap.Address{})
			inGroup = false
		}
	}
	if len(out) < limit {
		emit(i)
	}
	if inGroup {
		out = append(out, imap.Address{})
	}
	return out
}

// parseMailbox parses one mailbox: [display-name] <addr-spec>, or an
// addr-spec alone.
//
// An addr-spec alone with a comment ("bob@example.org (Bob Smith)", the
// form of RFC 733 that old software still writes) takes the comment for
// its display name, as Dovecot and mail clients read it; it had none. A
// display name before an addr-spec without its angle brackets ("Dave
// d@example.net") is read as the name and the address (looseMailbox).
func parseMailbox(s string) (imap.Address, bool) {
	var comment string
	if topLevelIndex(s, '<') < 0 {
		comment = firstComment(s)
	}
	s = stripComments(s)
	var name, spec string
	if i := topLevelIndex(s, '<'); i >= 0 {
		name = phrase(s[:i])
		spec = s[i+1:]
		if j := strings.LastIndexByte(spec, '>'); j >= 0 {
			spec = spec[:j]
		}
		// An obsolete route (RFC 5322 section 4.4) is dropped.
		if strings.HasPrefix(strings.TrimSpace(spec), "@") {
			if k := strings.IndexByte(spec, ':'); k >= 0 {
				spec = spec[k+1:]
			}
		}
	} else if n, sp, ok := looseMailbox(s); ok {
		name, spec = n, sp
	} else {
		spec = s
	}
	spec = dropSpaces(spec)
	if spec == "" {
		return imap.Address{}, false
	}
	local, host := spec, missingDomain
	if k := strings.LastIndexByte(spec, '@'); k >= 0 {
		local, host = spec[:k], spec[k+1:]
	}
	if host == "" {
		host = missingDomain
	}
	if len(local) >= 2 && local[0] == '"' && local[len(local)-1] == '"' {
		local = unquote(local[1 : len(local)-1])
	}
	if local == "" {
		return imap.Address{}, false
	}
	if name == "" && comment != "" {
		name = phrase(comment)
	}
	return imap.Address{Name: name, Mailbox: local, Host: host}, true
}

// looseMailbox reads a mailbox without angle brackets whose words make
// no one addr-spec, a display name with the brackets left out ("Dave
// d@example.net"), as the name and the addr-spec: the run of words with
// an "@" is the addr-spec, the words around it the name. Words a "." or
// an "@" joins are one run (RFC 5322 section 4.4 allows white space
// around them: "john . doe @ example.net" is one addr-spec). The words
// were joined into one address ("Daved@example.net"), which was no one's;
// Dovecot keeps the name and drops the address. ok is false when the
// words make one run, or when no run or more than one has an "@".
func looseMailbox(s string) (name, spec string, ok bool) {
	if !strings.ContainsAny(s, " \t\r\n") {
		return "", "", false // one word at most: one run
	}
	var runs []string
	var run strings.Builder
	joins := false // the last word ends in "." or "@"
	for _, w := range topLevelWords(s) {
		if run.Len() > 0 && !joins && w[0] != '.' && w[0] != '@' {
			runs = append(runs, run.String())
			run.Reset()
		}
		run.WriteString(w)
		joins = strings.HasSuffix(w, ".") || strings.HasSuffix(w, "@")
	}
	if run.Len() > 0 {
		runs = append(runs, run.String())
	}
	if len(runs) < 2 {
		return "", "", false
	}
	at := -1
	for i, r := range runs {
		if topLevelIndex(r, '@') >= 0 {
			if at >= 0 {
				return "", "", false
			}
			at = i
		}
	}
	if at < 0 {
		return "", "", false
	}
	words := append(runs[:at:at], runs[at+1:]...)
	return phrase(strings.Join(words, " ")), runs[at], true
}

// topLevelWords splits s at the white space outside quoted strings.
func topLevelWords(s string) []string {
	var words []string
	start, quoted := -1, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		space := !quoted && (c == ' ' || c == '\t' || c == '\r' || c == '\n')
		switch {
		case space:
			if start >= 0 {
				words = append(words, s[start:i])
				start = -1
			}
			continue
		case c == '\\' && quoted && i+1 < len(s):
			i++
		case c == '"':
			quoted = !quoted
		}
		if start < 0 {
			start = i
		}
	}
	if start >= 0 {
		words = append(words, s[start:])
	}
	return words
}

// firstComment returns the text of the first comment of s outside quoted
// strings, its own nested comments and quoting backslashes kept out, or
// "" when there is none.
func firstComment(s string) string {
	i := topLevelIndex(s, '(')
	if i < 0 {
		return ""
	}
	var b strings.Builder
	depth := 0
	for j := i; j < len(s); j++ {
		c := s[j]
		switch {
		case c == '\\' && j+1 < len(s):
			j++
			if depth == 1 {
				b.WriteByte(s[j])
			}
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth == 0 {
				return strings.TrimSpace(b.String())
			}
		case depth == 1:
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// wordDecoder decodes RFC 2047 words in every charset go-message knows,
// with or without an RFC 2231 language tag.
var wordDecoder = &mime.WordDecoder{CharsetReader: wordCharset}

// wordCharset is charset.Reader for the charset of an encoded word, whose
// RFC 2231 language tag (section 5: =?utf-8*en?Q?...?=) it drops: the
// mime package takes "utf-8*en" for the name of a charset, which no
// reader knows, so such a word was left undecoded, its subject shown and
// searched as the raw word. The tag says nothing about the bytes.
func wordCharset(name string, input io.Reader) (io.Reader, error) {
	name, _, _ = strings.Cut(name, "*")
	return charset.Reader(name, input)
}

// phrase is a display name: quotes removed, white space runs made one
// space, RFC 2047 words decoded (kept as they are when they do not decode).
func phrase(s string) string {
	p := eightBitText(plainPhrase(s))
	if strings.Contains(p, "=?") {
		if d, err := wordDecoder.DecodeHeader(p); err == nil {
			return d
		}
	}
	return p
}

func plainPhrase(s string) string {
	if strings.IndexByte(s, '"') < 0 {
		// Nothing quoted: every byte is kept.
		return oneSpaced(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quoted && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == '"':
			quoted = !quoted
		default:
			b.WriteByte(c)
		}
	}
	return oneSpaced(b.String())
}

// oneSpaced is strings.Join(strings.Fields(s), " "): s without the ASCII
// white space around it when that is it already (ASCII, one space between
// its words), as most display names are.
func oneSpaced(s string) string {
	s0 := s
	s = strings.Trim(s, " \t\n\v\f\r")
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r' ||
			c == ' ' && s[i+1] == ' ' {
			return strings.Join(strings.Fields(s0), " ")
		}
	}
	return s
}

func unquote(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// stripComments removes comments (RFC 5322 section 3.2.2) outside quoted
// strings.
func stripComments(s string) string {
	if strings.IndexByte(s, '(') < 0 {
		// No comment: every byte is kept.
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	depth, quoted := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (quoted || depth > 0):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case depth > 0 && c == '(':
			depth++
		case depth > 0 && c == ')':
			depth--
		case depth > 0:
		case c == '"':
			quoted = !quoted
			b.WriteByte(c)
		case c == '(' && !quoted:
			depth++
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// topLevelIndex returns the index of the first c outside quoted strings.
func topLevelIndex(s string, c byte) int {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == c && !quoted:
			return i
		}
	}
	return -1
}

// dropSpaces removes white space outside quoted strings (folding and CFWS
// around the parts of an addr-spec).
func dropSpaces(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		// No white space: every byte is kept.
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quoted && i+1 < len(s):
			b.WriteByte(c)
			i++
			c = s[i]
		case c == '"':
			quoted = !quoted
		case !quoted && (c == ' ' || c == '\t' || c == '\r' || c == '\n'):
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
