package mailstore

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestFoldRunesAsWhole: foldCase made a code point at a time (foldRunes)
// gives foldWhole's bytes for every code point alone, and for texts of
// letters, combining marks of several classes in and out of order, long
// runs of marks, Hangul, ligatures, decompositions of many code points
// and bytes that are not UTF-8 mixed at random; where it declines,
// foldWhole folds the text.
func TestFoldRunesAsWhole(t *testing.T) {
	t.Parallel()
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		s := string(r)
		if got, want := foldCase(s), foldWhole(s); got != want {
			t.Fatalf("%U: %q, want %q", r, got, want)
		}
	}
	pool := []string{
		"a", "Z", "é", "É", "e\u0301", "\u0301", "\u0323", "\u0302", "\u0345", "\u031b", "\u0327",
		"ệ", "Ệ", "ς", "Σ", "ΐ", "İ", "ı", "ſ", "ß", "ẞ", "K", "ﬁ", "Ａ", "™", "ℌ", "ﷺ",
		"한", "\u1100", "\u1161", "\u11a8", "\u0f73", "\u0f71", "\u0f72", "ゔ", "\u3099", "ｶ", "\uff9e",
		"Ω", "Ä", "ö", "\xff", "\xc3", "\xe2\x82", " ", "\u034f", "ǅ", "ǆ", "Ǆ", "\U0001d400", "𝔄",
	}
	rng := rand.New(rand.NewPCG(5, 1))
	declined := 0
	for range 50000 {
		var b strings.Builder
		for range 1 + rng.IntN(12) {
			p := pool[rng.IntN(len(pool))]
			if rng.IntN(20) == 0 {
				p = strings.Repeat("\u0301", 1+rng.IntN(40))
			}
			b.WriteString(p)
		}
		s := b.String()
		want := foldWhole(s)
		if got := foldCase(s); got != want {
			t.Fatalf("%+q: %+q, want %+q", s, got, want)
		}
		if _, ok := foldRunes(s); !ok {
			declined++
		}
	}
	if declined == 0 || declined > 45000 {
		t.Errorf("foldRunes declined %d texts of 50,000: the test is not reaching both ways", declined)
	}
	// Text of letters with one mark each, decomposed, is folded a code
	// point at a time.
	if _, ok := foldRunes("Cafe\u0301 Gro\u0308ße Ελλα\u0301δα"); !ok {
		t.Error("foldRunes declined a text whose marks follow a letter each")
	}
}
