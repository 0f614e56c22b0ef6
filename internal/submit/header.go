package submit

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/unicode/norm"

	"cspool/internal/mimeform"
)

// HeaderEnd returns the offset of msg's body: just past the blank line
// that ends the header (a line of CRLF or of a bare LF alone), or len(msg)
// when there is none.
func HeaderEnd(msg []byte) int {
	for off := 0; off < len(msg); {
		nl := bytes.IndexByte(msg[off:], '\n')
		if nl < 0 {
			return len(msg)
		}
		line := msg[off : off+nl+1]
		off += nl + 1
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return off
		}
	}
	return len(msg)
}

// MaxLineBytes is the longest line a submitted message may hold, without
// its CRLF (RFC 5322 section 2.1.1; RFC 5321 section 4.5.3.1.6, 1000
// octets with it).
const MaxLineBytes = 998

// errHeaderBareCR: the header holds a CR that no LF follows.
var errHeaderBareCR = errors.New("the message header has a CR without an LF after it (RFC 5322 section 2.3): some readers end a line there and would see a header field the checks did not")

// checkLineEnds refuses a message holding a bare CR (one no LF follows)
// or a bare LF (one no CR precedes), in the header or the body, and one
// whose last line does not end with CRLF: in SMTP data only CRLF ends a
// line (RFC 5321 section 2.3.8). It refuses a NUL too, which no message
// holds (RFC 5322 section 2.3; 8BITMIME excludes it, RFC 6152), and
// which programs written in C take for the end of a line or a text. And
// it refuses a line of over MaxLineBytes: the relay writes it as it is,
// and the smarthost or a hop after it breaks it in two (Postfix inserts
// CRLF and a space at 998 bytes) or refuses it after the client had its
// 250, so the recipients got another message than the one kept in Sent,
// or none and a bounce.
//
// In the header, the checks read a line up to its LF, as go-message does,
// so "X: y\rFrom: boss@..." is one field X to them; a reader or a next hop
// that ends lines at a bare CR sees a From field there, which no check
// read. In the body, the relay (go-smtp's client, net/textproto's dot
// writer) writes a bare CR as it is, so "\r.\r\n" reaches the smarthost,
// and from it the next hops: one that ends lines at a bare CR takes it for
// the end of the data and reads what follows as commands of its own (SMTP
// smuggling), a message no identity check here saw. Refusing, rather than
// changing the line ends, keeps what is accepted byte for byte (the Sent
// copy is what the client sent).
func checkLineEnds(msg []byte) error {
	end := HeaderEnd(msg)
	start := 0 // the current line's first byte
	for i, c := range msg {
		var bare string
		switch {
		case c == '\n' && i > 0 && msg[i-1] == '\r':
			if n := i - 1 - start; n > MaxLineBytes {
				part, line := where(msg, end, start)
				return fmt.Errorf("the message has a line of %d bytes (line %d of its %s), over the %d bytes a line may hold before its CRLF "+
					"(RFC 5322 section 2.1.1, RFC 5321 section 4.5.3.1.6): a server on the way breaks it in two, which changes the message, or refuses it; "+
					"encode long lines (quoted-printable or base64)", n, line, part, MaxLineBytes)
			}
			start = i + 1
			continue
		case c == '\r' && (i+1 == len(msg) || msg[i+1] != '\n'):
			if i < end {
				return errHeaderBareCR
			}
			bare = "CR (a CR without an LF after it)"
		case c == '\n' && (i == 0 || msg[i-1] != '\r'):
			bare = "LF (an LF without a CR before it)"
		case c == 0:
			part, line := where(msg, end, i)
			return fmt.Errorf("the message has a NUL in line %d of its %s: mail holds no NUL (RFC 5322 section 2.3, RFC 6152; BINARYMIME is not offered), "+
				"and a program on the way that ends a line or a text at a NUL reads another message than the one checked and kept here; "+
				"encode binary content (base64)", line, part)
		default:
			continue
		}
		part, line := where(msg, end, i)
		return fmt.Errorf("the message has a bare %s in line %d of its %s: SMTP data ends every line with CRLF (RFC 5321 section 2.3.8), "+
			"and a server on the way that ends lines elsewhere could read what follows as commands of its own (SMTP smuggling); "+
			"send the message with CRLF line ends", bare, line, part)
	}
	if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\r\n")) {
		// Only BDAT can send it (DATA ends at a CRLF): the relay's dot
		// writer ends the last line with a CRLF, and the message relayed
		// was not the one kept in Sent.
		return errNoFinalCRLF
	}
	return nil
}

// where names the part (header or body, the header ending at end) and
// the line in it of msg's byte i.
func where(msg []byte, end, i int) (string, int) {
	part, from := "body", end
	if i < end {
		part, from = "header", 0
	}
	return part, bytes.Count(msg[from:i], []byte("\n")) + 1
}

// errNoFinalCRLF: the message's last line does not end with CRLF.
var errNoFinalCRLF = errors.New("the message does not end with CRLF: SMTP data is lines, each ending with CRLF (RFC 5321 section 2.3.8); end the last BDAT chunk with CRLF")

// checkFieldNames refuses a header field whose name has blanks between
// it and its colon ("From : a@x"), the obsolete syntax of RFC 5322
// section 4.5 that readers take two ways: go-message, and so the checks,
// read it as the field; Postfix takes such a first line for a mailbox
// separator line ("From " and a blank), writes it as X-Mailbox-Line and
// adds a From field of its own, and Python's email takes it for the
// envelope line too, or ends the header at it when it is not the first.
func checkFieldNames(msg []byte) error {
	end := HeaderEnd(msg)
	for off, n := 0, 1; off < end; n++ {
		next := end
		if nl := bytes.IndexByte(msg[off:end], '\n'); nl >= 0 {
			next = off + nl + 1
		}
		line := msg[off:next]
		off = next
		if line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		if trimmed := bytes.TrimRight(name, " \t"); ok && len(trimmed) > 0 && len(trimmed) < len(name) {
			return fmt.Errorf("line %d of the message header has blanks between the field name %q and its colon (obsolete syntax, RFC 5322 section 4.5), "+
				"which readers take two ways: Postfix and Python's email take a first line \"From :\" for a mailbox separator and drop it, "+
				"and Python ends the header at such a line; write %q", n, trimmed, string(trimmed)+":")
		}
	}
	return nil
}

// StripBcc returns msg without its Bcc and Resent-Bcc header fields
// (with their continuation lines), byte for byte otherwise: what is
// relayed, since blind recipients are told only by the envelope
// (Resent-Bcc, RFC 5322 section 3.6.6, names those of a message resent).
// msg itself is returned when it has no such field.
func StripBcc(msg []byte) []byte {
	end := HeaderEnd(msg)
	var out []byte
	skipping := false
	last := 0 // start of the bytes not yet copied
	for off := 0; off < end; {
		nl := bytes.IndexByte(msg[off:end], '\n')
		next := end
		if nl >= 0 {
			next = off + nl + 1
		}
		line := msg[off:next]
		continuation := len(line) > 0 && (line[0] == ' ' || line[0] == '\t')
		if !continuation {
			name, _, ok := bytes.Cut(line, []byte(":"))
			field := strings.TrimRight(string(name), " \t")
			skipping = ok && (strings.EqualFold(field, "bcc") || strings.EqualFold(field, "resent-bcc"))
			if skipping && out == nil {
				out = make([]byte, 0, len(msg))
			}
		}
		if skipping {
			out = append(out, msg[last:off]...)
			last = next
		}
		off = next
	}
	if out == nil {
		return msg
	}
	return append(out, msg[last:]...)
}

// ContentDigest identifies a message that has no Message-ID by its
// content, so that the copy a client saves in Sent is told for the one it
// submitted (GNU Mailutils' mail writes no Message-ID; the listener adds
// one to what it queues, not to the client's copy). It is a SHA-256 of:
// every header field but Message-ID, Date, Bcc and Resent-Bcc, in order,
// name and value as written (folding included), and the body less the
// line ends at its end; every CRLF is read as an LF. So the submitted
// message and the client's copy compare equal when they differ only in
// the fields the listener adds when they are missing (Message-ID, Date),
// in the blind copies the client keeps in its copy but may leave out of
// what it sends, and in the line ends after the last line.
func ContentDigest(msg []byte) []byte {
	end := HeaderEnd(msg)
	h := sha256.New()
	write := func(b []byte) { h.Write(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))) }
	skipping := false
	for off := 0; off < end; {
		next := end
		if nl := bytes.IndexByte(msg[off:end], '\n'); nl >= 0 {
			next = off + nl + 1
		}
		line := msg[off:next]
		off = next
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if !skipping {
				write(line)
			}
			continue
		}
		name, _, ok := bytes.Cut(line, []byte(":"))
		field := strings.ToLower(strings.TrimRight(string(name), " \t"))
		skipping = ok && (field == "message-id" || field == "date" || field == "bcc" || field == "resent-bcc")
		if !skipping {
			write(line)
		}
	}
	write(bytes.TrimRight(msg[end:], "\r\n"))
	return h.Sum(nil)
}

// ErrHeaderTooLarge: a header beyond the bounds the mail store parses
// within (mimeform.MaxHeaderFields, MaxHeaderBytes).
var ErrHeaderTooLarge = fmt.Errorf("the message header has over %d fields or %d bytes", mimeform.MaxHeaderFields, mimeform.MaxHeaderBytes)

// ParseHeader reads a message's header as go-message does (the mail store
// parses with the same library, so a Message-ID compares equal). A header
// beyond the store's bounds is not parsed (ErrHeaderTooLarge): the library
// keeps a header whole, a few hundred bytes a field.
func ParseHeader(msg []byte) (mail.Header, error) {
	if _, ok := mimeform.BoundedHeader(msg[:HeaderEnd(msg)]); !ok {
		return mail.Header{}, ErrHeaderTooLarge
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg[:HeaderEnd(msg)])))
	if err != nil {
		return mail.Header{}, err
	}
	return mail.Header{Header: message.Header{Header: h}}, nil
}

// MessageID returns msg's Message-ID without angle brackets, or "" when it
// has none or its header does not parse.
func MessageID(msg []byte) string {
	h, err := ParseHeader(msg)
	if err != nil {
		return ""
	}
	id, err := h.MessageID()
	if err != nil {
		return ""
	}
	return id
}

// errNoFrom: the message has no From field.
var errNoFrom = errors.New("the message has no From header field")

// originator is an address the message names as its author or sender, and
// the field that names it. named is set for one written elsewhere in the
// field than as its address: in a display name, a comment, a quoted
// string or an RFC 2047 encoded word (namedAddresses).
type originator struct {
	field, address string
	named          bool
}

// originators returns every address of the header's originator fields (RFC
// 5322 sections 3.6.2 and 3.6.6): From, Sender, and the Resent-From and
// Resent-Sender of every resent block, and Author (RFC 9057), which
// names the author where From may not and which readers that know it
// show in From's place. Each is the user's claim to have written or sent
// the message, and each must be an identity: a reader showing a resent
// message names its newest Resent-From as the one who sent it on, and
// readers differ in which block they take for the newest. The message
// must have one From field and at most one Sender and one Author, and
// its newest resent block, when it has one, one Resent-From and at most
// one Resent-Sender.
func originators(h mail.Header) ([]originator, error) {
	if !h.Has("From") {
		return nil, errNoFrom
	}
	// Only one value of each field would be read below, and readers
	// differ in which one they show: a second From would pass any address
	// off as the author (RFC 5322 section 3.6: at most one of each).
	for _, name := range []string{"From", "Sender", "Author"} {
		if n := len(h.Values(name)); n > 1 {
			rfc := "RFC 5322 section 3.6"
			if name == "Author" {
				rfc = "as for From"
			}
			return nil, fmt.Errorf("the message has %d %s header fields, where one is allowed (%s)", n, name, rfc)
		}
	}
	if err := checkNewestResent(h); err != nil {
		return nil, err
	}
	var out []originator
	for _, name := range []string{"From", "Sender", "Resent-From", "Resent-Sender", "Author"} {
		for _, v := range h.Values(name) {
			if hasGroup(v) {
				return nil, fmt.Errorf("the %s header field holds a group or a route (a ':' or ';' outside quotes and comments), "+
					"where it may hold mailboxes only (RFC 5322 sections 3.4 and 3.6.2): readers differ in what they show of it", name)
			}
			// Bytes that are not UTF-8 (RFC 6532) are read by each reader
			// in a charset of its own, its locale's or the body's: GBK's
			// and EUC-KR's A3 C0, and Shift_JIS's 81 97, are a full-width
			// "@", which no check here would see.
			if !utf8.ValidString(v) {
				return nil, fmt.Errorf("the %s header field has bytes that are not UTF-8 (RFC 6532), which readers decode in charsets of their own, "+
					"some into another name; write the field in UTF-8", name)
			}
			list, err := mail.ParseAddressList(v)
			if err != nil {
				return nil, fmt.Errorf("the %s header field does not parse: %w", name, err)
			}
			// An encoded word in a charset not known here is no name that
			// was read: net/mail drops it after a word that decodes
			// ("=?utf-8?q?ok?= =?x-new?q?...?= <a@x>" is "ok"), and a
			// reader that knows the charset shows what it holds.
			d, ok := mimeform.DecodeHeaderValue(v)
			if !ok {
				return nil, fmt.Errorf("the %s header field has an encoded word (RFC 2047) in a charset not known here, "+
					"which readers may show as another name; write the name in UTF-8", name)
			}
			// The bytes of a word labelled UTF-8 that are not UTF-8 are
			// copied as they are, and read as those of the field are.
			if !utf8.ValidString(d) {
				return nil, fmt.Errorf("the %s header field has an encoded word (RFC 2047) whose text is not UTF-8 (RFC 6532), "+
					"which readers decode in charsets of their own, some into another name; write the name in UTF-8", name)
			}
			// A word that does not decode here is left as it is, while
			// readers decode many leniently: Python's email reads
			// "=?utf-8?b?Ym9zc0BleGFtcGxlLm5ldA?=", its padding left
			// out, and one with a blank inside, as boss@example.net.
			if strings.Contains(d, "=?") {
				return nil, fmt.Errorf("the %s header field has an encoded word (RFC 2047) that does not decode here, or a \"=?\" in its name, "+
					"which readers may decode as another name; write the name in UTF-8", name)
			}
			if len(list) == 0 {
				return nil, fmt.Errorf("the %s header field holds no address", name)
			}
			for _, a := range list {
				out = append(out, originator{field: name, address: a.Address})
			}
			for _, a := range namedAddresses(v) {
				out = append(out, originator{field: name, address: a, named: true})
			}
		}
	}
	return out, nil
}

// hasGroup reports whether an originator field's value v holds a ':' or a
// ';' outside quoted strings, comments and domain literals: a group
// ("Team: a@x, b@y;"), which From, Sender, Resent-From and Resent-Sender
// may not hold (RFC 5322 section 3.6.2, 3.6.6), or an obsolete route
// ("<@relay:a@x>", section 4.4). net/mail reads a group as its members
// and drops its name, which may be anything ("boss@example.net": a@x;),
// and a reader shows the name, or the members, or the text as it is.
func hasGroup(v string) bool {
	depth, quoted, literal := 0, false, false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && (quoted || literal || depth > 0):
			i++ // the byte it quotes
		case quoted:
			quoted = c != '"'
		case literal:
			literal = c != ']'
		case depth > 0:
			if c == '(' {
				depth++
			} else if c == ')' {
				depth--
			}
		case c == '"':
			quoted = true
		case c == '[':
			literal = true
		case c == '(':
			depth++
		case c == ':' || c == ';':
			return true
		}
	}
	return false
}

// namedAddresses returns, for every "@" in an originator field's value
// v, as written and with its RFC 2047 encoded words decoded, and for
// every character that reads as one (withAts), the run of
// address characters around it (RFC 5322 atext and ".", and every byte
// beyond ASCII), dots at its ends left out. Each must be an identity: a
// display name, a comment or a quoted string that reads as an address
// ("boss@example.net" <alice@example.org>, alice@example.org
// (boss@example.net), =?utf-8?q?boss=40example.net?= <alice@...>) is
// what many readers show as the author, some of them (phones, most
// webmail lists) alone, and net/mail takes a comment for a display name.
// An "@" with no address around it ("Team @ Home") gives "@", no identity,
// so it is refused too: a reader that drops the blanks around an "@", as
// RFC 5322 section 4.4 lets it, reads an address there.
func namedAddresses(v string) []string {
	texts := []string{v}
	if strings.Contains(v, "=?") {
		if d, ok := mimeform.DecodeHeaderValue(v); ok && d != v {
			texts = append(texts, d)
		}
	}
	var out []string
	for _, s := range texts {
		s = withAts(s)
		for i := 0; i < len(s); i++ {
			if s[i] != '@' {
				continue
			}
			a, b := i, i+1
			for a > 0 && addressByte(s[a-1]) {
				a--
			}
			for b < len(s) && addressByte(s[b]) {
				b++
			}
			out = append(out, strings.Trim(s[a:b], "."))
			i = b - 1
		}
	}
	return out
}

// withAts returns s with every character whose NFKC form holds an "@"
// (U+FF20, a full-width one, and U+FE6B, a small one) written as "@":
// readers show them as an "@", and "boss＠example.net" reads as an
// address. Other bytes stay as they are, invalid UTF-8 too.
func withAts(s string) string {
	var b []byte
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r >= utf8.RuneSelf && atLike(r) {
			if b == nil {
				b = append(make([]byte, 0, len(s)), s[:i]...)
			}
			b = append(b, '@')
		} else if b != nil {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	if b == nil {
		return s
	}
	return string(b)
}

// atLike reports whether r's NFKC form holds an "@". A rune without a
// decomposition, most of them, is its own NFKC form, and is looked up
// alone.
func atLike(r rune) bool {
	s := string(r)
	if r == utf8.RuneError || norm.NFKC.PropertiesString(s).Decomposition() == nil {
		return false
	}
	return strings.Contains(norm.NFKC.String(s), "@")
}

// addressByte reports whether c may be part of an address as
// namedAddresses reads one.
func addressByte(c byte) bool {
	return c >= 0x80 || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.IndexByte("!#$%&'*+-/=?^_`{|}~.@", c) >= 0
}

// checkNewestResent checks the newest resent block: the first run of
// Resent- fields in the header, since each resending prepends its block
// (RFC 5322 section 3.6.6). It names the message's last sender, so it
// needs one Resent-From, and may have one Resent-Sender.
func checkNewestResent(h mail.Header) error {
	var from, sender int
	started := false
	for f := h.Fields(); f.Next(); {
		resent := strings.HasPrefix(strings.ToLower(f.Key()), "resent-")
		if !resent {
			if started {
				break
			}
			continue
		}
		started = true
		switch strings.ToLower(f.Key()) {
		case "resent-from":
			from++
		case "resent-sender":
			sender++
		}
	}
	switch {
	case !started:
		return nil
	case from != 1:
		return fmt.Errorf("the newest resent block has %d Resent-From header fields, where it needs one (RFC 5322 section 3.6.6)", from)
	case sender > 1:
		return fmt.Errorf("the newest resent block has %d Resent-Sender header fields, where one is allowed (RFC 5322 section 3.6.6)", sender)
	}
	return nil
}

// completeHeader adds, at the top of the header, the Message-ID and Date
// fields msg lacks (RFC 6409 section 8.3). It returns the message and its
// Message-ID.
func completeHeader(msg []byte, h mail.Header, hostname string, now time.Time) ([]byte, string, error) {
	var add []byte
	id, err := h.MessageID()
	if err != nil || id == "" {
		if h.Has("Message-Id") {
			return nil, "", fmt.Errorf("the Message-ID header field does not parse")
		}
		var r [16]byte
		rand.Read(r[:])
		id = hex.EncodeToString(r[:]) + "@" + hostname
		add = fmt.Appendf(add, "Message-ID: <%s>\r\n", id)
	}
	if !h.Has("Date") {
		add = fmt.Appendf(add, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if len(add) == 0 {
		return msg, id, nil
	}
	return append(add, msg...), id, nil
}
