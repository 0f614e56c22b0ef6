package mimeform

import (
	"fmt"
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

// TestBodyTextsBounded: a message of multiparts nested 2000 deep (about
// 110 KB) costs BodyTexts memory proportional to its size, as Parse's
// bounds promise, and its innermost text stays within SEARCH's reach.
// go-message's Walk went down every level, each reading through the
// readers of all the levels above it: 2000 buffers of 4 KiB, and time
// growing with the square of the depth. Such a message arrives from
// anyone by mail: at 20,000 levels (1.2 MB) the device's indexer held
// its write transaction for minutes, and every change waited.
func TestBodyTextsBounded(t *testing.T) {
	const levels = 2000
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: deep\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n")
	for i := range levels {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i, i+1)
	}
	fmt.Fprintf(&b, "--b%d\r\nContent-Type: text/plain\r\n\r\nneedle\r\n", levels)
	raw := []byte(b.String())
	hl := headerLength(raw)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	texts := BodyTexts(raw, hl)
	runtime.ReadMemStats(&after)
	if got := strings.Join(texts, "\n"); !strings.Contains(got, "needle") {
		t.Errorf("BodyTexts of a message nested %d deep: %.80q..., want its innermost text among them", levels, got)
	}
	if got, limit := after.TotalAlloc-before.TotalAlloc, 8*uint64(len(raw)); got > limit {
		t.Errorf("BodyTexts of a message of %d bytes nested %d deep allocated %d bytes, want at most %d (eight times the message)",
			len(raw), levels, got, limit)
	}
}

// TestBodyTextsAttachment: for a message of a short text and an attachment
// of 16 MB, which it does not read, BodyTexts allocates less than a
// quarter of the message. It made a buffer of the message's size for the
// text before: the search indexer's 16 MB for every such message mailed.
func TestBodyTextsAttachment(t *testing.T) {
	line := strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo", 2) + "\r\n"
	raw := []byte("From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nthe quick brown fox\r\n--b\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + strings.Repeat(line, 16<<20/len(line)) + "--b--\r\n")
	hl := headerLength(raw)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	texts := BodyTexts(raw, hl)
	runtime.ReadMemStats(&after)
	if got := strings.Join(texts, ""); !strings.Contains(got, "quick brown fox") || strings.Contains(got, "QUJD") {
		t.Fatalf("BodyTexts gave %.80q..., want the text and not the attachment", got)
	}
	if used, limit := after.TotalAlloc-before.TotalAlloc, uint64(len(raw)/4); used > limit {
		t.Errorf("BodyTexts of a message of %d bytes, most of it an attachment, allocated %d bytes, want at most %d (a quarter of the message)",
			len(raw), used, limit)
	}
}
