package mailstore

import (
	"strings"
	"testing"
)

// BenchmarkFoldCase folds 64 KiB of text as SEARCH's scan and the index
// fold it (foldCase): English (ASCII alone, strings.ToLower's way), German
// and Greek (a code point outside ASCII every few letters or in every one).
//
//	go test ./internal/mailstore -run - -bench FoldCase
func BenchmarkFoldCase(b *testing.B) {
	for _, c := range []struct{ name, words string }{
		{"ascii", "The quarterly report of the meeting about travel and invoices "},
		{"german", "Größere Änderungen über die Straße für Bücher und Übungen "},
		{"greek", "Σύντομη αναφορά για τη συνάντηση και τα ταξίδια της ομάδας "},
	} {
		text := strings.Repeat(c.words, 64<<10/len(c.words))
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for range b.N {
				if foldCase(text) == "" {
					b.Fatal("empty fold")
				}
			}
		})
	}
}
