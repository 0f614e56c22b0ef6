package chain

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func mustHash(t *testing.T, s string) Hash {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(Hash{}) {
		t.Fatalf("bad hash %q", s)
	}
	var h Hash
	copy(h[:], b)
	return h
}

// TestNextVectors freezes the chain: h(1) was computed apart from this
// code, as SHA-256 over "cspool/v1 chain", 32 zero bytes and SHA-256 of
// "entry 1" (sha256sum), and a change of Next breaks every device's
// record of its history.
func TestNextVectors(t *testing.T) {
	h1 := mustHash(t, "a81bd5322098fcd7a1d4479ba0329b51c32829623328fe4eac62c438d266b596")
	h2 := mustHash(t, "e6dfc6c73b030af32b7944063ecc3751c1c00c97f9460ec90a34ec89b91f15ed")
	if got := Next(Hash{}, []byte("entry 1")); got != h1 {
		t.Errorf("h(1) = %x, want %x", got, h1)
	}
	if got := Next(h1, []byte("entry 2")); got != h2 {
		t.Errorf("h(2) = %x, want %x", got, h2)
	}
	if got := Over(Hash{}, []byte("entry 1"), []byte("entry 2")); len(got) != 2 || got[0] != h1 || got[1] != h2 {
		t.Errorf("Over = %x, want [%x %x]", got, h1, h2)
	}
}

// TestChainDistinguishesHistories: extending a history gives a new hash
// each time, and a history that differs in any way (an entry altered,
// dropped, added or two swapped) ends at another hash.
func TestChainDistinguishesHistories(t *testing.T) {
	a, b, c := []byte("a"), []byte("b"), []byte("c")
	head := func(data ...[]byte) Hash {
		hs := Over(Hash{}, data...)
		return hs[len(hs)-1]
	}
	honest := head(a, b, c)
	for _, tc := range []struct {
		name string
		data [][]byte
	}{
		{"altered", [][]byte{a, []byte("B"), c}},
		{"dropped", [][]byte{a, c}},
		{"added", [][]byte{a, b, b, c}},
		{"reordered", [][]byte{a, c, b}},
		{"moved across the boundary", [][]byte{[]byte("ab"), c}},
	} {
		if head(tc.data...) == honest {
			t.Errorf("%s: same head hash as the honest history", tc.name)
		}
	}
	seen := map[Hash]bool{{}: true}
	for i, h := range Over(Hash{}, a, a, a) {
		if seen[h] {
			t.Errorf("extension %d repeats an earlier hash", i+1)
		}
		seen[h] = true
	}
}

func TestCheckRead(t *testing.T) {
	hs := Over(Hash{}, []byte("1"), []byte("2"), []byte("3"))
	h2, h3 := hs[1], hs[2]
	other := Next(hs[0], []byte("other 2"))
	for _, tc := range []struct {
		name string
		pos  uint64
		mine *Hash
		c    Claim
		want Kind // 0: passes
		says string
	}{
		{"extension", 2, &h2, Claim{Head: 3, Chained: true, StartHash: h2, HeadHash: h3}, 0, ""},
		{"at the head, nothing new", 2, &h2, Claim{Head: 2, Chained: true, StartHash: h2, HeadHash: h2, Empty: true}, 0, ""},
		{"no hash of our own: the spool's is taken", 2, nil, Claim{Head: 3, Chained: true, StartHash: other}, 0, ""},
		{"rollback: head behind the position", 3, &h3, Claim{Head: 2, Chained: true, StartHash: h2, HeadHash: h2}, RolledBack, "the spool's head 2 is behind position 3"},
		{"rollback checked without a hash of our own", 3, nil, Claim{Head: 1, Chained: true}, RolledBack, "the log was rolled back"},
		{"hashes stripped", 2, &h2, Claim{Head: 3}, Unchained, "carries no chain hashes"},
		{"hashes stripped, no hash of our own", 2, nil, Claim{Head: 3}, Unchained, "carries no chain hashes"},
		{"fork: another history up to the position", 2, &h2, Claim{Head: 3, Chained: true, StartHash: other, HeadHash: h3}, Rewritten, "rewritten, rolled back or forked"},
		{"head hash lies at the head", 2, &h2, Claim{Head: 2, Chained: true, StartHash: h2, HeadHash: other, Empty: true}, HeadMismatch, "head hash at position 2 differs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := CheckRead(tc.pos, tc.mine, tc.c)
			check(t, f, tc.want, tc.pos, tc.says)
		})
	}
}

func check(t *testing.T, f *Failure, want Kind, pos uint64, says string) {
	t.Helper()
	if want == 0 {
		if f != nil {
			t.Fatalf("failed: %v (%v)", f, f.Kind)
		}
		return
	}
	if f == nil {
		t.Fatalf("passed, want %v", want)
	}
	if f.Kind != want || f.Pos != pos || !strings.Contains(f.Detail, says) {
		t.Fatalf("got %v at %d: %q; want %v at %d saying %q", f.Kind, f.Pos, f.Detail, want, pos, says)
	}
}

func TestCheckEntries(t *testing.T) {
	hs := Over(Hash{}, []byte("1"), []byte("2"), []byte("3"))
	gap := errors.New("gap in the log")
	for _, tc := range []struct {
		name string
		f    *Failure
		want Kind
		pos  uint64
		says string
	}{
		{"next position", CheckNext(4, 5, gap), 0, 0, ""},
		{"gap", CheckNext(4, 6, gap), Gap, 4, "skipped from position 4 to 6"},
		{"gap names the error", CheckNext(4, 6, gap), Gap, 4, "(gap in the log)"},
		{"going back is a gap too", CheckNext(4, 3, gap), Gap, 4, "skipped from position 4 to 3"},
		{"entries hash to the head", CheckHeadHash(3, hs[2], hs[2]), 0, 0, ""},
		{"entries altered on the way", CheckHeadHash(3, hs[1], hs[2]), HeadMismatch, 3, "do not hash to the head"},
		{"seen: author applied an earlier head", CheckSeen(3, 2, hs[1][:], hs[1]), 0, 0, ""},
		{"seen: reordered (head at the entry)", CheckSeen(3, 3, hs[2][:], hs[2]), Reordered, 3, "at or after the entry itself"},
		{"seen: reordered (head after the entry)", CheckSeenOrder(3, 7), Reordered, 3, "applied position 7"},
		{"seen: fork", CheckSeen(3, 2, hs[0][:], hs[1]), Fork, 3, "saw a different history at position 2"},
		{"seen: fork with a short hash", CheckSeen(3, 2, []byte{1, 2}, hs[1]), Fork, 3, "(hash 0102, here"},
		{"restoration over this history", CheckBase(8, 7, 2, hs[1][:], hs[1]), 0, 0, ""},
		{"restoration over another history", CheckBase(8, 7, 2, hs[0][:], hs[1]), Fork, 8, "the restoration at position 7 restored the log to position 2"},
		{"replay", CheckReplay(9, 4, stringer("00ff"), true), Replay, 9, "entry 9 replays entry 4 (same entry id 00ff)"},
		{"no replay", CheckReplay(9, 0, stringer("00ff"), false), 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) { check(t, tc.f, tc.want, tc.pos, tc.says) })
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

func TestKindNames(t *testing.T) {
	for k := RolledBack; k <= Replay; k++ {
		if strings.HasPrefix(k.String(), "Kind(") {
			t.Errorf("kind %d has no name", int(k))
		}
	}
	if Kind(0).String() != "Kind(0)" {
		t.Errorf("Kind(0) = %q", Kind(0).String())
	}
}

func TestVouch(t *testing.T) {
	hs := append([]Hash{{}}, Over(Hash{}, []byte("1"), []byte("2"), []byte("3"))...)
	boom := errors.New("store down")
	for _, tc := range []struct {
		name      string
		pos, head uint64
		failAt    int64 // -1: none
		want      Claim
		wantErr   bool
		wantReads []uint64
	}{
		{"behind the head", 1, 3, -1, Claim{Head: 3, Chained: true, StartHash: hs[1], HeadHash: hs[3]}, false, []uint64{1, 3}},
		{"from the start", 0, 3, -1, Claim{Head: 3, Chained: true, StartHash: hs[0], HeadHash: hs[3]}, false, []uint64{0, 3}},
		{"at the head: one read", 3, 3, -1, Claim{Head: 3, Chained: true, StartHash: hs[3], HeadHash: hs[3]}, false, []uint64{3}},
		{"past the head: nothing vouched", 5, 3, -1, Claim{Head: 3}, false, nil},
		{"start unreadable", 1, 3, 1, Claim{}, true, []uint64{1}},
		{"head unreadable", 1, 3, 3, Claim{}, true, []uint64{1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reads []uint64
			c, err := Vouch(tc.pos, tc.head, func(p uint64) (Hash, error) {
				reads = append(reads, p)
				if int64(p) == tc.failAt {
					return Hash{}, boom
				}
				return hs[p], nil
			})
			if tc.wantErr != (err != nil) || (err != nil && !errors.Is(err, boom)) {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if c != tc.want {
				t.Errorf("claim = %+v, want %+v", c, tc.want)
			}
			if len(reads) != len(tc.wantReads) {
				t.Fatalf("reads %v, want %v", reads, tc.wantReads)
			}
			for i := range reads {
				if reads[i] != tc.wantReads[i] {
					t.Fatalf("reads %v, want %v", reads, tc.wantReads)
				}
			}
		})
	}
}
