package deliver

import (
	"bytes"
	"strings"
)

// Envelope is the SMTP envelope of one delivery to one user. From it the
// delivery adds the header fields a mail delivery agent adds at final
// delivery (RFC 5321 section 4.4): Return-Path with the envelope sender,
// so that it is not lost, and Delivered-To with the recipient's address.
// They go in front of the message, which follows unchanged. The zero
// Envelope adds nothing.
type Envelope struct {
	// Sender is the envelope sender (MAIL FROM) without angle brackets;
	// "" is the null sender, written Return-Path: <>. It is used only
	// when HasSender is set.
	Sender    string
	HasSender bool
	// Recipient is the address the message was delivered to (RCPT TO),
	// written as Delivered-To; empty adds none.
	Recipient string
}

// lineEnd is how msg's first line ends: LF if in a bare LF (a message as a
// mail transfer agent's delivery command gets it), else CRLF.
func lineEnd(msg []byte) string {
	if i := bytes.IndexByte(msg, '\n'); i >= 0 && (i == 0 || msg[i-1] != '\r') {
		return "\n"
	}
	return "\r\n"
}

// traceFields returns the header fields env adds, each ended with eol, or
// nil if env adds none.
func traceFields(env Envelope, eol string) []byte {
	if !env.HasSender && env.Recipient == "" {
		return nil
	}
	var b []byte
	if env.HasSender {
		b = append(b, "Return-Path: <"...)
		if env.Sender != "" {
			b = append(b, fieldAddress(env.Sender)...)
		}
		b = append(b, '>')
		b = append(b, eol...)
	}
	if env.Recipient != "" {
		b = append(b, "Delivered-To: "...)
		b = append(b, fieldAddress(env.Recipient)...)
		b = append(b, eol...)
	}
	return b
}

// fieldAddress writes an address as RFC 5321 section 4.1.2 spells a
// mailbox: a local part that is not a dot-string is quoted, as go-smtp
// hands it over unquoted. Control characters (C0, DEL and C1, as RCPT
// refuses them: isControl), which neither form can hold and which would
// break the header (a CR or LF) or a terminal that shows it (CSI, U+009B,
// starts an escape sequence as ESC [ does), become '?'; a header field is
// never split by what a sender wrote.
func fieldAddress(addr string) string {
	addr = strings.Map(func(r rune) rune {
		if isControl(r) {
			return '?'
		}
		return r
	}, addr)
	local, domain, hasDomain := addr, "", false
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain, hasDomain = addr[:i], addr[i+1:], true
	}
	if !isDotString(local) {
		var q strings.Builder
		q.WriteByte('"')
		for i := 0; i < len(local); i++ {
			if local[i] == '"' || local[i] == '\\' {
				q.WriteByte('\\')
			}
			q.WriteByte(local[i])
		}
		q.WriteByte('"')
		local = q.String()
	}
	if !hasDomain {
		return local
	}
	return local + "@" + domain
}

// isDotString reports whether s is an RFC 5321 Dot-string: atoms of atext
// (UTF-8 allowed, RFC 6531) joined by single dots.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80, c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0:
		default:
			return false
		}
	}
	return true
}
