// Package termtext makes text that came from elsewhere fit to print on a
// terminal: what a spool server answered, the names in a certificate
// presented in its place, a smarthost's reply. An escape sequence among
// them would act on the terminal (clear the screen over an alarm, retitle
// it), and a line end would start a line of the sender's choosing.
package termtext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Printable is s made fit to print as one line: control characters (C0
// with tab and line ends, DEL, C1) are written as \xHH and bidirectional
// controls as \uHHHH.
func Printable(s string) string {
	if !strings.ContainsFunc(s, unprintable) {
		return s
	}
	return escape(s, -1)
}

// Short is Printable(s) with invalid UTF-8 as U+FFFD, cut after about n
// bytes with "..." where it was cut.
func Short(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) && !strings.ContainsFunc(s, unprintable) {
		return s
	}
	return escape(s, n)
}

// escape writes s's runes as Printable does, stopping with "..." once n
// bytes are written (n < 0: no limit).
func escape(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if n >= 0 && b.Len() >= n {
			b.WriteString("...")
			break
		}
		switch {
		case r < 0x100 && unicode.IsControl(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		case unicode.Is(unicode.Bidi_Control, r):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unprintable(r rune) bool {
	return r < 0x100 && unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

// WithoutUserinfo is s, a URL, with what comes between its "//" and the
// last "@" after it (a name and password, which may hold a "/", a ":" or
// a "?" themselves) written as "…", for notices, logs and errors:
// smtps://alice:secret@host is said smtps://…@host. A text without both
// is s.
func WithoutUserinfo(s string) string {
	i := strings.Index(s, "//")
	if i < 0 {
		return s
	}
	at := strings.LastIndex(s[i+2:], "@")
	if at < 0 {
		return s
	}
	return s[:i+2] + "…@" + s[i+2+at+1:]
}
