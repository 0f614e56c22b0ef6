package imapd

import (
	"encoding/base64"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
)

// Modified UTF-7 (RFC 3501 section 5.1.3) is how IMAP4rev1 clients spell
// mailbox names: printable ASCII stands for itself, "&-" for "&", and
// anything else is UTF-16 in a modified base64 ("," for "/", no padding)
// between "&" and "-". go-imap decodes names before the session sees them
// but keeps its codec internal, so error texts that name a mailbox and the
// framer's check of names go-imap refused use these.
var mbase64 = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding)

// encodeMUTF7 spells a UTF-8 name in modified UTF-7.
func encodeMUTF7(name string) string {
	var b strings.Builder
	var run []rune
	flush := func() {
		if len(run) == 0 {
			return
		}
		u := utf16.Encode(run)
		raw := make([]byte, 0, 2*len(u))
		for _, c := range u {
			raw = append(raw, byte(c>>8), byte(c))
		}
		b.WriteByte('&')
		b.WriteString(mbase64.EncodeToString(raw))
		b.WriteByte('-')
		run = run[:0]
	}
	for _, r := range name {
		switch {
		case r == '&':
			flush()
			b.WriteString("&-")
		case r >= 0x20 && r < 0x7f:
			flush()
			b.WriteRune(r)
		default:
			run = append(run, r)
		}
	}
	flush()
	return b.String()
}

// validMUTF7 reports whether s is well-formed modified UTF-7 as go-imap
// decodes it (raw UTF-8 is accepted too): printable ASCII, "&-", and
// base64 runs that decode to whole UTF-16 text. As go-imap, it refuses
// (RFC 3501 section 5.1.3) a run that encodes printable ASCII, which
// represents itself ("&AGE-" for "a"), a run right after another ("&AOQ-&AOQ-",
// which is one run), and base64 padding: a name go-imap refuses that this
// took answered NO [SERVERBUG] instead of the reason.
func validMUTF7(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	afterRun := false // the previous character ended a base64 run
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return false
		}
		if c != '&' {
			afterRun = false
			continue
		}
		end := strings.IndexByte(s[i+1:], '-')
		if end < 0 {
			return false
		}
		run := s[i+1 : i+1+end]
		i += end + 1
		if run == "" {
			afterRun = false
			continue
		}
		if afterRun || strings.Contains(run, "=") {
			return false
		}
		afterRun = true
		raw, err := mbase64.DecodeString(run)
		if err != nil || len(raw)%2 != 0 || len(raw) == 0 {
			return false
		}
		u := make([]uint16, len(raw)/2)
		for k := range u {
			u[k] = uint16(raw[2*k])<<8 | uint16(raw[2*k+1])
		}
		for _, r := range utf16.Decode(u) {
			if r == utf8.RuneError || r >= 0x20 && r < 0x7f {
				return false
			}
		}
	}
	return true
}

// quoteName quotes a mailbox name for an error text as the client spells
// it: in modified UTF-7 for IMAP4rev1 (resp-text is 7-bit, RFC 3501 section
// 9), in UTF-8 once the client enabled IMAP4rev2 or UTF8=ACCEPT (RFC 9051
// section 9, RFC 6855 section 3).
func (s *session) quoteName(name string) string {
	caps := s.conn.EnabledCaps()
	if caps.Has(imap.CapIMAP4rev2) || caps.Has(imap.CapUTF8Accept) {
		return strconv.Quote(strings.ToValidUTF8(name, "\uFFFD"))
	}
	return strconv.Quote(encodeMUTF7(name))
}

// respText makes a text that may hold mailbox names safe as resp-text: one
// line, non-ASCII spelled in modified UTF-7 for IMAP4rev1 clients and kept
// as UTF-8 for the others (see quoteName).
func (s *session) respText(t string) string {
	t = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(t, "\uFFFD"))
	caps := s.conn.EnabledCaps()
	if caps.Has(imap.CapIMAP4rev2) || caps.Has(imap.CapUTF8Accept) {
		return t
	}
	for i := 0; i < len(t); i++ {
		if t[i] >= 0x80 {
			return encodeMUTF7(t)
		}
	}
	return t
}
