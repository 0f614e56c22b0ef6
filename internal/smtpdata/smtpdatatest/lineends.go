// Package smtpdatatest holds the CR/LF shapes of DATA contents that the
// tests of package smtpdata and of both listeners using it (LMTP, SMTP
// submission) send byte for byte.
package smtpdatatest

import "strings"

// Case is one DATA content: its name, the bytes on the wire (ending in the
// final ".\r\n") and the message they carry.
type Case struct{ Name, Wire, Want string }

// LineEndCases are DATA contents as they appear on the wire, each with the
// bytes a listener must keep for it: dot-unstuffed, with every byte up to and including
// the CRLF before the final "." kept as sent. Only CRLF ends a line, so a
// "." after a bare CR or a bare LF is data.
func LineEndCases() []Case {
	return []Case{
		{"last line ends in a bare CR", "Subject: x\r\n\r\nbody\r\r\n.\r\n", "Subject: x\r\n\r\nbody\r\r\n"},
		{"message of one bare CR", "\r\r\n.\r\n", "\r\r\n"},
		{"CR CR CR LF at the end", "a\r\r\r\n.\r\n", "a\r\r\r\n"},
		{"CR LF then a line of a bare CR", "a\r\n\r\r\n.\r\n", "a\r\n\r\r\n"},
		{"bare CR inside a line", "a\rb\r\n.\r\n", "a\rb\r\n"},
		{"bare CR inside every line", "a\rb\r\nc\rd\r\r\n.\r\n", "a\rb\r\nc\rd\r\r\n"},
		{"bare LF inside a line", "a\nb\r\n.\r\n", "a\nb\r\n"},
		{"last line ends in a bare LF", "a\n\r\n.\r\n", "a\n\r\n"},
		{"LF CR CR LF at the end", "a\n\r\r\n.\r\n", "a\n\r\r\n"},
		{"dot after a bare CR is data", "a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n"},
		{"dot after a bare LF is data", "a\n.\r\nb\r\n.\r\n", "a\n.\r\nb\r\n"},
		{"two dots after a bare CR are kept", "a\r..b\r\n.\r\n", "a\r..b\r\n"},
		{"two dots after a bare LF are kept", "a\n..b\r\n.\r\n", "a\n..b\r\n"},
		{"stuffed dot after CR CR LF", "a\r\r\n..b\r\n.\r\n", "a\r\r\n.b\r\n"},
		{"stuffed lone dot after CR CR LF", "a\r\r\n..\r\n.\r\n", "a\r\r\n.\r\n"},
		{"stuffed line of a dot and a bare CR", "..\r\r\n.\r\n", ".\r\r\n"},
		{"line of a bare CR with its dot unstuffed", ".\r\r\n.\r\n", "\r\r\n"},
		{"dot, bare CR and a letter", ".\rx\r\n.\r\n", "\rx\r\n"},
		{"dot, bare CR, dot", ".\r.\r\n.\r\n", "\r.\r\n"},
		{"empty message", ".\r\n", ""},
		{"empty last line", "a\r\n\r\n.\r\n", "a\r\n\r\n"},
		{"8-bit and NUL before a bare CR", "\x00\xff\xe9\r\r\n.\r\n", "\x00\xff\xe9\r\r\n"},
		{"line of 1 MiB", strings.Repeat("x", 1<<20) + "\r\n.\r\n", strings.Repeat("x", 1<<20) + "\r\n"},
		{"line of 1 MiB ending in a bare CR", strings.Repeat("y", 1<<20) + "\r\r\n.\r\n", strings.Repeat("y", 1<<20) + "\r\r\n"},
	}
}

// DotStuff encodes msg as DATA content (RFC 5321 section 4.5.2), ending in
// CRLF "." CRLF. A message not ending in CRLF gets one, as a real client
// would add.
func DotStuff(msg []byte) string {
	var b strings.Builder
	atLineStart := true
	for i, c := range msg {
		if atLineStart && c == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(c)
		atLineStart = c == '\n' && i > 0 && msg[i-1] == '\r'
	}
	if !strings.HasSuffix(b.String(), "\r\n") {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}
