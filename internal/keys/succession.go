package keys

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
)

// SuccessionContext begins every message a succession statement signs. An
// entry's signature covers a 32-byte digest and a request's a text that
// begins "cspool-api-sig-1", so a signature over one can never be taken for
// the other's.
const SuccessionContext = "cspool/v1 spool key succession\x00"

// Succession is a spool key's statement that Previous was the spool key
// before it: the key it replaced (docs/API.md, "Spool keys"). Key signs it,
// so a device that trusts Key learns the key it may trust for the
// deliveries before the cutover without being given it.
type Succession struct {
	Key       PublicKey // the spool key now, which signs
	Previous  PublicKey // the one it replaced
	Signature []byte    // Ed25519 by Key over SuccessionMessage(Key, Previous)
}

// ErrSuccession: a succession statement that does not hold.
var ErrSuccession = errors.New("spool key succession statement not valid")

// SuccessionMessage is what a succession statement signs: SuccessionContext,
// then the 64 bytes of key, then those of previous.
func SuccessionMessage(key, previous PublicKey) []byte {
	m := make([]byte, 0, len(SuccessionContext)+2*publicSize)
	m = append(m, SuccessionContext...)
	m = append(m, key.Bytes()...)
	return append(m, previous.Bytes()...)
}

// SignSuccession has k, the spool key now, state that previous was the one
// before it.
func SignSuccession(k *SecretKey, previous PublicKey) (Succession, error) {
	if previous.Equal(k.Public()) {
		return Succession{}, fmt.Errorf("%w: the previous key is the key", ErrSuccession)
	}
	return Succession{Key: k.Public(), Previous: previous, Signature: k.Sign(SuccessionMessage(k.Public(), previous))}, nil
}

// Verify checks that s is signed by trusted and names trusted as its Key;
// an error wraps ErrSuccession.
func (s Succession) Verify(trusted PublicKey) error {
	switch {
	case trusted.Ed25519 == nil || s.Key.Ed25519 == nil || s.Previous.Ed25519 == nil:
		return fmt.Errorf("%w: a key is missing", ErrSuccession)
	case !s.Key.Equal(trusted):
		return fmt.Errorf("%w: made by the key with id %x, not the spool key trusted (id %x)", ErrSuccession, s.Key.KeyID(), trusted.KeyID())
	case s.Previous.Equal(trusted):
		return fmt.Errorf("%w: it names the spool key as its own previous key", ErrSuccession)
	case !ed25519.Verify(trusted.Ed25519, SuccessionMessage(s.Key, s.Previous), s.Signature):
		return fmt.Errorf("%w: the signature does not verify under the spool key trusted (id %x)", ErrSuccession, trusted.KeyID())
	}
	return nil
}

// Names reports whether s names author (an Ed25519 key) as the previous key.
func (s Succession) Names(author ed25519.PublicKey) bool {
	return s.Previous.Ed25519 != nil && bytes.Equal(s.Previous.Ed25519, author)
}

// VerifyChain checks a succession, newest first, from trusted, the spool
// key given: chain[0] made by trusted, and each statement after it made by
// the key the one before it names as replaced, each signature verifying
// under the key it checks from; no key may come twice (trusted included).
// It returns the keys replaced, newest first: chain[i].Previous for each
// i. An error wraps ErrSuccession and names the statement (1 the first)
// that does not hold and why; nothing of the chain is then taken.
func VerifyChain(trusted PublicKey, chain []Succession) ([]PublicKey, error) {
	seen := []PublicKey{trusted}
	prev := make([]PublicKey, 0, len(chain))
	from := trusted
	for i, s := range chain {
		if err := s.Verify(from); err != nil {
			return nil, fmt.Errorf("statement %d of the spool key succession (the key with id %x replacing %x): %w", i+1, s.Key.KeyID(), s.Previous.KeyID(), err)
		}
		for _, k := range seen {
			if k.Equal(s.Previous) {
				return nil, fmt.Errorf("statement %d of the spool key succession: %w: the key with id %x comes twice (a loop)", i+1, ErrSuccession, s.Previous.KeyID())
			}
		}
		seen = append(seen, s.Previous)
		prev = append(prev, s.Previous)
		from = s.Previous
	}
	return prev, nil
}
