// Package keys holds cspool key pairs and their text encoding.
//
// Implementation notes:
//
//   - A secret key is one 32-byte seed. Two independent keys are derived from
//     it with HKDF-SHA256 (RFC 5869, empty salt): the X25519 key that entries
//     are encrypted to (info "cspool/v1 x25519") and the Ed25519 key that signs
//     (info "cspool/v1 ed25519", used as the RFC 8032 seed). One seed keeps the
//     secret file short and makes the two halves impossible to mismatch.
//   - A public key is the X25519 public key followed by the Ed25519 public key
//     (64 bytes).
//   - Text form: PREFIX + base64url(payload || checksum), no padding, where
//     checksum is the first 4 bytes of SHA-256(PREFIX || payload). The prefix
//     names the kind and the format version ("CSPOOL-SECRET-KEY-1:" and
//     "cspool-pub-1:"), so a key of the wrong kind or version is recognised as
//     such before anything else is checked. Exactly one encoding is accepted.
//   - A key file holds optional comment lines starting with '#' and exactly
//     one key line. Secret key files are created with mode 0600 and refused when
//     group or others can read them.
//
// docs/FORMAT.md is the normative description.
package keys

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Text prefixes; the trailing digit is the format version.
const (
	SecretPrefix = "CSPOOL-SECRET-KEY-1:"
	PublicPrefix = "cspool-pub-1:"
)

const (
	seedSize     = 32
	publicSize   = 64
	checksumSize = 4
)

// Errors returned while parsing keys; they are wrapped with the file name and
// detail, so test with errors.Is.
var (
	ErrWrongKind     = errors.New("wrong kind of key")
	ErrBadChecksum   = errors.New("bad checksum")
	ErrMalformed     = errors.New("malformed key")
	ErrUnknownFormat = errors.New("not a cspool key")
	ErrTooOpen       = errors.New("secret key file is readable by its group or others")
	ErrNoKey         = errors.New("no key in file")
	// ErrWritableByAll: a users file every user of the machine may write;
	// whoever writes it gives any user a key of theirs.
	ErrWritableByAll = errors.New("writable by every user of this machine")
)

// SecretKey is a user's or the spool's secret key: the seed and the keys
// derived from it.
type SecretKey struct {
	seed   [seedSize]byte
	x25519 *ecdh.PrivateKey
	signer ed25519.PrivateKey
	public PublicKey
}

// PublicKey is the public half of a key pair.
type PublicKey struct {
	// X25519 receives encrypted entries.
	X25519 *ecdh.PublicKey
	// Ed25519 verifies signatures made with the secret key.
	Ed25519 ed25519.PublicKey
}

// Generate makes a new key pair from rand (crypto/rand.Reader in production).
func Generate(rand io.Reader) (*SecretKey, error) {
	var seed [seedSize]byte
	if _, err := io.ReadFull(rand, seed[:]); err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	return NewSecretKey(seed[:])
}

// NewSecretKey derives a key pair from a 32-byte seed.
func NewSecretKey(seed []byte) (*SecretKey, error) {
	if len(seed) != seedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", ErrMalformed, len(seed), seedSize)
	}
	k := &SecretKey{}
	copy(k.seed[:], seed)
	xs, err := hkdf.Key(sha256.New, seed, nil, "cspool/v1 x25519", 32)
	if err != nil {
		return nil, err
	}
	k.x25519, err = ecdh.X25519().NewPrivateKey(xs)
	if err != nil {
		return nil, err
	}
	es, err := hkdf.Key(sha256.New, seed, nil, "cspool/v1 ed25519", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	k.signer = ed25519.NewKeyFromSeed(es)
	k.public = PublicKey{
		X25519:  k.x25519.PublicKey(),
		Ed25519: k.signer.Public().(ed25519.PublicKey),
	}
	return k, nil
}

// DatabaseKey derives the 32-byte key that encrypts one of the device's
// databases at rest: HKDF-SHA256 over the seed with info
// "cspool/v1 device database " || purpose ("mailstore", "outbox").
func (k *SecretKey) DatabaseKey(purpose string) [32]byte {
	b, err := hkdf.Key(sha256.New, k.seed[:], nil, "cspool/v1 device database "+purpose, 32)
	if err != nil {
		panic(err) // unreachable: 32 bytes of SHA-256 HKDF output
	}
	return [32]byte(b)
}

// Public returns the public half.
func (k *SecretKey) Public() PublicKey { return k.public }

// X25519 returns the decryption key.
func (k *SecretKey) X25519() *ecdh.PrivateKey { return k.x25519 }

// Sign signs msg with the Ed25519 key (pure Ed25519, RFC 8032).
func (k *SecretKey) Sign(msg []byte) []byte { return ed25519.Sign(k.signer, msg) }

// String returns the text form of the secret key. Handle with care.
func (k *SecretKey) String() string { return encode(SecretPrefix, k.seed[:]) }

// Bytes returns the 64-byte binary public key: X25519 then Ed25519.
func (p PublicKey) Bytes() []byte {
	b := make([]byte, 0, publicSize)
	b = append(b, p.X25519.Bytes()...)
	return append(b, p.Ed25519...)
}

// String returns the text form, e.g. "cspool-pub-1:...".
func (p PublicKey) String() string { return encode(PublicPrefix, p.Bytes()) }

// Equal reports whether p and q are the same key.
func (p PublicKey) Equal(q PublicKey) bool {
	if p.X25519 == nil || q.X25519 == nil {
		return p.X25519 == q.X25519 && p.Ed25519.Equal(q.Ed25519)
	}
	return subtle.ConstantTimeCompare(p.Bytes(), q.Bytes()) == 1
}

// KeyID returns a short identifier of the public key: the first 8 bytes of
// SHA-256("cspool/v1 key id" || Bytes()).
func (p PublicKey) KeyID() [8]byte {
	h := sha256.New()
	h.Write([]byte("cspool/v1 key id"))
	h.Write(p.Bytes())
	var id [8]byte
	copy(id[:], h.Sum(nil))
	return id
}

// PublicKeyFromBytes parses the 64-byte binary form.
func PublicKeyFromBytes(b []byte) (PublicKey, error) {
	if len(b) != publicSize {
		return PublicKey{}, fmt.Errorf("%w: public key is %d bytes, want %d", ErrMalformed, len(b), publicSize)
	}
	x, err := ecdh.X25519().NewPublicKey(b[:32])
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return PublicKey{X25519: x, Ed25519: ed25519.PublicKey(append([]byte(nil), b[32:]...))}, nil
}

// ParsePublic parses the text form of a public key.
func ParsePublic(s string) (PublicKey, error) {
	payload, err := decode(PublicPrefix, SecretPrefix, strings.TrimSpace(s), publicSize)
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKeyFromBytes(payload)
}

// ParseSecret parses the text form of a secret key.
func ParseSecret(s string) (*SecretKey, error) {
	seed, err := decode(SecretPrefix, PublicPrefix, strings.TrimSpace(s), seedSize)
	if err != nil {
		return nil, err
	}
	return NewSecretKey(seed)
}

func checksum(prefix string, payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte(prefix))
	h.Write(payload)
	return h.Sum(nil)[:checksumSize]
}

func encode(prefix string, payload []byte) string {
	b := append(append([]byte(nil), payload...), checksum(prefix, payload)...)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// decode checks the prefix (want), recognises the other kind (other), and
// verifies length and checksum.
func decode(want, other, s string, size int) ([]byte, error) {
	switch {
	case strings.HasPrefix(s, want):
	case strings.HasPrefix(s, other):
		return nil, fmt.Errorf("%w: found a %s, want a %s", ErrWrongKind, kindName(other), kindName(want))
	case strings.HasPrefix(strings.ToLower(s), "cspool-"):
		return nil, fmt.Errorf("%w: unknown prefix %q (a newer key format?)", ErrUnknownFormat, prefixOf(s))
	default:
		if what := foreignKind(s); what != "" {
			return nil, fmt.Errorf("%w: the key line holds %s; expected a line starting with %q", ErrUnknownFormat, what, want)
		}
		return nil, fmt.Errorf("%w: expected a line starting with %q", ErrUnknownFormat, want)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s[len(want):])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(b) != size+checksumSize {
		return nil, fmt.Errorf("%w: key is %d bytes, want %d (truncated or damaged)", ErrMalformed, len(b), size+checksumSize)
	}
	payload, sum := b[:size], b[size:]
	if subtle.ConstantTimeCompare(sum, checksum(want, payload)) != 1 {
		return nil, fmt.Errorf("%w: the key was mistyped or damaged", ErrBadChecksum)
	}
	// Only the canonical encoding is accepted.
	if encode(want, payload) != s {
		return nil, fmt.Errorf("%w: non-canonical encoding", ErrMalformed)
	}
	return payload, nil
}

func kindName(prefix string) string {
	if prefix == SecretPrefix {
		return "secret key"
	}
	return "public key"
}

func prefixOf(s string) string {
	if i := strings.IndexByte(s, ':'); i >= 0 && i < 40 {
		return s[:i+1]
	}
	if len(s) > 20 {
		return s[:20]
	}
	return s
}
