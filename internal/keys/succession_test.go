package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
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
