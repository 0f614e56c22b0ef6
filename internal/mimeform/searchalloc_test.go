package mimeform

import (
	"runtime"
	"strings"
	"testing"
)

// TestBodyTextsGarbage: the bytes BodyTexts allocates for a message of
// about 40 KB (one text part, and two parts of a multipart) stay within
// three times the message (2.2 and 2.4 times): each part read into one
// buffer of the message's size and copied once into its string, and
// go-message's own. With io.ReadAll, growing a slice from 512 bytes, 3.4
// and 3.5 times; that and the copy were most of what a SEARCH BODY
// allocated while the index lacked the messages it read.
func TestBodyTextsGarbage(t *testing.T) {
	line := strings.Repeat("the quick brown fox jumps over the lazy dog ", 2) + "\r\n"
	text := strings.Repeat(line, 440) // about 39 KB
	half := text[:len(text)/2]
	cases := []struct{ name, raw string }{
		{"plain", "From: a@example.org\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n" + text},
		{"multipart", "From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n" +
			"--b\r\nContent-Type: text/plain\r\n\r\n" + half + "\r\n--b\r\nContent-Type: text/html\r\n\r\n" + half + "\r\n--b--\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := []byte(c.raw)
			hl := headerLength(raw)
			if got := strings.Join(BodyTexts(raw, hl), ""); !strings.Contains(got, "lazy dog") {
				t.Fatalf("BodyTexts gave %.80q..., want the text", got)
			}
			const runs = 50
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			for range runs {
				BodyTexts(raw, hl)
			}
			runtime.ReadMemStats(&after)
			per := float64(after.TotalAlloc-before.TotalAlloc) / runs
			if limit := 3 * float64(len(raw)); per > limit {
				t.Errorf("BodyTexts of a message of %d bytes allocated %.0f bytes a call, want at most %.0f (three times the message)",
					len(raw), per, limit)
			}
		})
	}
}
