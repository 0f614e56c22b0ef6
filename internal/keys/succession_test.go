package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

// TestSuccession: a statement verifies under the key that made it and no
// other; one changed in any part, or naming the key as its own previous,
// does not; and its signature does not verify as one over the message
// without the context string.
func TestSuccession(t *testing.T) {
	gen := func() *SecretKey {
		k, err := Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	nw, old, other := gen(), gen(), gen()
	s, err := SignSuccession(nw, old.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify(nw.Public()); err != nil {
		t.Fatalf("a statement under the key that made it: %v", err)
	}
	if !s.Names(old.Public().Ed25519) || s.Names(other.Public().Ed25519) {
		t.Error("Names does not name the previous key alone")
	}
	bad := map[string]Succession{
		"verified under another key":    s,
		"naming another previous key":   {Key: s.Key, Previous: other.Public(), Signature: s.Signature},
		"a flipped signature bit":       {Key: s.Key, Previous: s.Previous, Signature: append([]byte{s.Signature[0] ^ 1}, s.Signature[1:]...)},
		"made by another key, named as": {Key: nw.Public(), Previous: old.Public(), Signature: other.Sign(SuccessionMessage(nw.Public(), old.Public()))},
	}
	for what, b := range bad {
		trusted := nw.Public()
		if what == "verified under another key" {
			trusted = other.Public()
		}
		if err := b.Verify(trusted); !errors.Is(err, ErrSuccession) {
			t.Errorf("%s: %v, want ErrSuccession", what, err)
		}
	}
	self := Succession{Key: nw.Public(), Previous: nw.Public(), Signature: nw.Sign(SuccessionMessage(nw.Public(), nw.Public()))}
	if err := self.Verify(nw.Public()); !errors.Is(err, ErrSuccession) {
		t.Errorf("a statement naming the key as its own previous: %v, want ErrSuccession", err)
	}
	if _, err := SignSuccession(nw, nw.Public()); err == nil {
		t.Error("SignSuccession of the key as its own previous was taken")
	}
	bare := append(nw.Public().Bytes(), old.Public().Bytes()...)
	if ed25519.Verify(nw.Public().Ed25519, bare, s.Signature) {
		t.Error("the signature verifies over the keys without the context string")
	}
}

// TestVerifyChain: a succession C replaced B, B replaced A, each
// statement signed by the key that replaced, verifies from C and gives B
// then A; a statement signed by a key not in the chain, one out of order,
// and one naming a key the chain named already (a loop) are refused,
// the error naming that statement.
func TestVerifyChain(t *testing.T) {
	gen := func() *SecretKey {
		k, err := Generate(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	sign := func(k *SecretKey, prev *SecretKey) Succession {
		s, err := SignSuccession(k, prev.Public())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, c, other := gen(), gen(), gen(), gen()
	got, err := VerifyChain(c.Public(), []Succession{sign(c, b), sign(b, a)})
	if err != nil || len(got) != 2 || !got[0].Equal(b.Public()) || !got[1].Equal(a.Public()) {
		t.Fatalf("C, B, A: %v, %v", got, err)
	}
	forged := Succession{Key: b.Public(), Previous: a.Public(), Signature: other.Sign(SuccessionMessage(b.Public(), a.Public()))}
	for name, tc := range map[string]struct {
		chain []Succession
		want  string
	}{
		"forged":       {[]Succession{sign(c, b), forged}, "statement 2 "},
		"out of order": {[]Succession{sign(b, a), sign(c, b)}, "statement 1 "},
		"skips a link": {[]Succession{sign(c, b), sign(other, a)}, "statement 2 "},
		"loop":         {[]Succession{sign(c, b), sign(b, c)}, "statement 2 "},
		"loop later":   {[]Succession{sign(c, b), sign(b, a), sign(a, b)}, "statement 3 "},
	} {
		got, err := VerifyChain(c.Public(), tc.chain)
		if !errors.Is(err, ErrSuccession) || got != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, %v; want an ErrSuccession naming %q", name, got, err, tc.want)
		}
	}
}
