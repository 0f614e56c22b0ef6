// Package entry seals commands into the opaque entries the spool stores, and
// opens them again on the user's devices.
//
// Implementation notes:
//
//   - Confidentiality: HPKE (RFC 9180) in export-only mode with
//     DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, to the user's X25519 key, with
//     a fresh ephemeral key per entry. The exported 32-byte secret keys one
//     ChaCha20-Poly1305 (RFC 8439) seal of the inner plaintext with a zero
//     nonce (the key is used exactly once). The outer header is the AEAD's
//     associated data. The author's static key takes no part in encryption, so
//     the spool, which holds only its own secret key, cannot decrypt what it
//     delivered.
//   - Authorship: the inner plaintext carries the author's Ed25519 public key
//     and an Ed25519 (RFC 8032) signature over SHA-256 of a domain string, the
//     recipient key id, and every inner byte before the signature: entry id,
//     author, user name and command. The signature is inside the encryption, so
//     the spool learns neither author nor content.
//   - Errors are distinct sentinels (ErrTruncated, ErrUnknownVersion,
//     ErrNotForUser, ErrCorrupt, ErrUnknownAuthor, ErrBadSignature,
//     ErrBadCommand) checked in that order of layers; Open never panics.
//   - Memory: Seal builds the plaintext in its output buffer and encrypts in
//     place (about 1x the message of extra heap); Open allocates the plaintext
//     once and the command's body aliases it.
//
// docs/FORMAT.md is the normative description.
package entry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"

	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// Version is the entry format version written by Seal.
const Version = 1

// Wire constants of version 1.
const (
	magic      = "CSPE"
	keyIDSize  = 8
	encSize    = 32 // DHKEM(X25519) encapsulated key
	headerSize = len(magic) + 1 + keyIDSize + 8 + encSize
	tagSize    = chacha20poly1305.Overhead
	sigSize    = ed25519.SignatureSize
	authorSize = ed25519.PublicKeySize
	// MaxUserLen bounds the user name inside an entry.
	MaxUserLen = 255
	// innerFixed is the inner plaintext without user name and command.
	innerFixed = command.IDSize + authorSize + 1 + 8 + sigSize

	hpkeInfo      = "cspool/v1 entry"
	exportContext = "cspool/v1 entry key"
	sigDomain     = "cspool/v1 entry signature\x00"
)

// Errors returned by Open.
var (
	ErrTruncated      = errors.New("entry truncated")
	ErrUnknownVersion = errors.New("unknown entry format version")
	ErrNotForUser     = errors.New("entry sealed for another user")
	ErrCorrupt        = errors.New("entry corrupt")
	ErrUnknownAuthor  = errors.New("entry author not trusted")
	ErrBadSignature   = errors.New("entry signature invalid")
	ErrBadCommand     = errors.New("entry command invalid")
)

// Options tune Seal. The zero value is the production setting.
type Options struct {
	// Rand supplies the entry id; nil means crypto/rand. (HPKE's ephemeral
	// key always comes from crypto/rand.)
	Rand io.Reader
	// ID, if not zero, is used as the entry id instead of a random one.
	ID command.ID
	// NoPadding turns off length padding.
	NoPadding bool
}

// Opened is an entry after Open: verified and decoded.
type Opened struct {
	ID     command.ID
	Author keys.PublicKey // the trusted key that signed it
	User   string
	Cmd    *command.Command
}

// Seal encrypts c to the user's public key `to`, signed by author, bound to
// user. It returns the entry bytes and the entry id.
func Seal(c *command.Command, author *keys.SecretKey, to keys.PublicKey, user string, o *Options) ([]byte, command.ID, error) {
	if o == nil {
		o = &Options{}
	}
	if len(user) == 0 || len(user) > MaxUserLen {
		return nil, command.ID{}, fmt.Errorf("sealing entry: user name must be 1 to %d bytes", MaxUserLen)
	}
	hdr, err := command.EncodeHeader(c)
	if err != nil {
		return nil, command.ID{}, fmt.Errorf("sealing entry: %w", err)
	}
	id := o.ID
	if id.IsZero() {
		r := o.Rand
		if r == nil {
			r = rand.Reader
		}
		if _, err := io.ReadFull(r, id[:]); err != nil {
			return nil, command.ID{}, fmt.Errorf("sealing entry: reading entry id: %w", err)
		}
	}
	cmdLen := len(hdr) + len(c.Body)
	innerLen := innerFixed + len(user) + cmdLen
	if !o.NoPadding {
		innerLen = Padme(innerLen)
	}
	out := make([]byte, headerSize+innerLen+tagSize)
	keyID := to.KeyID()
	in := out[headerSize : headerSize+innerLen]
	p := in[:0]
	p = append(p, id[:]...)
	p = append(p, author.Public().Ed25519...)
	p = append(p, byte(len(user)))
	p = append(p, user...)
	p = binary.BigEndian.AppendUint64(p, uint64(cmdLen))
	p = append(p, hdr...)
	p = append(p, c.Body...)
	sig := author.Sign(signedDigest(keyID, p))
	p = append(p, sig...)
	clear(in[len(p):]) // padding: zeros
	if err := encryptInPlace(out, to); err != nil {
		return nil, command.ID{}, fmt.Errorf("sealing entry: %w", err)
	}
	return out, id, nil
}

// encryptInPlace writes the outer header into out[:headerSize] and encrypts
// out[headerSize:len(out)-tagSize] in place, appending the tag.
func encryptInPlace(out []byte, to keys.PublicKey) error {
	pk, err := hpke.NewDHKEMPublicKey(to.X25519)
	if err != nil {
		return err
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(hpkeInfo))
	if err != nil {
		return err
	}
	if len(enc) != encSize {
		return fmt.Errorf("encapsulated key is %d bytes, want %d", len(enc), encSize)
	}
	keyID := to.KeyID()
	h := out[:0]
	h = append(h, magic...)
	h = append(h, Version)
	h = append(h, keyID[:]...)
	h = binary.BigEndian.AppendUint64(h, uint64(len(out)-headerSize))
	h = append(h, enc...)
	key, err := sender.Export(exportContext, chacha20poly1305.KeySize)
	if err != nil {
		return err
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	in := out[headerSize : len(out)-tagSize]
	aead.Seal(in[:0], nonce[:], in, h)
	return nil
}

func signedDigest(keyID [keyIDSize]byte, prefix []byte) []byte {
	h := sha256.New()
	h.Write([]byte(sigDomain))
	h.Write(keyID[:])
	h.Write(prefix)
	return h.Sum(nil)
}

// Header is the outer header of an entry, readable without keys.
type Header struct {
	Version byte
	KeyID   [keyIDSize]byte
	Size    uint64 // ciphertext size, tag included
}

// ParseHeader reads the outer header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < len(magic)+1 {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrTruncated, len(b))
	}
	if string(b[:len(magic)]) != magic {
		return Header{}, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	if b[len(magic)] != Version {
		return Header{}, fmt.Errorf("%w %d", ErrUnknownVersion, b[len(magic)])
	}
	if len(b) < headerSize {
		return Header{}, fmt.Errorf("%w: header needs %d bytes, have %d", ErrTruncated, headerSize, len(b))
	}
	var h Header
	h.Version = b[len(magic)]
	copy(h.KeyID[:], b[len(magic)+1:])
	h.Size = binary.BigEndian.Uint64(b[len(magic)+1+keyIDSize:])
	return h, nil
}

// Open decrypts and verifies an entry sealed to me for user, accepting only
// signatures by one of the trusted keys.
func Open(b []byte, me *keys.SecretKey, user string, trusted ...keys.PublicKey) (*Opened, error) {
	in, err := decrypt(b, me)
	if err != nil {
		return nil, err
	}
	return openInner(in, me.Public().KeyID(), user, trusted)
}

// decrypt checks the outer header and returns the inner plaintext.
func decrypt(b []byte, me *keys.SecretKey) ([]byte, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.KeyID != me.Public().KeyID() {
		return nil, fmt.Errorf("%w: sealed to key %x", ErrNotForUser, h.KeyID)
	}
	body := b[headerSize:]
	switch {
	case uint64(len(body)) < h.Size:
		return nil, fmt.Errorf("%w: %d of %d ciphertext bytes", ErrTruncated, len(body), h.Size)
	case uint64(len(body)) > h.Size:
		return nil, fmt.Errorf("%w: %d bytes after the ciphertext", ErrCorrupt, uint64(len(body))-h.Size)
	case h.Size < tagSize+innerFixed:
		return nil, fmt.Errorf("%w: ciphertext of %d bytes is too short", ErrCorrupt, h.Size)
	}
	sk, err := hpke.NewDHKEMPrivateKey(me.X25519())
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	enc := b[headerSize-encSize : headerSize]
	r, err := hpke.NewRecipient(enc, sk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(hpkeInfo))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	key, err := r.Export(exportContext, chacha20poly1305.KeySize)
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	var nonce [chacha20poly1305.NonceSize]byte
	in, err := aead.Open(make([]byte, 0, len(body)-tagSize), nonce[:], body, b[:headerSize])
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	return in, nil
}

func openInner(in []byte, keyID [keyIDSize]byte, user string, trusted []keys.PublicKey) (*Opened, error) {
	var o Opened
	copy(o.ID[:], in)
	rest := in[command.IDSize:]
	author := ed25519.PublicKey(rest[:authorSize])
	rest = rest[authorSize:]
	ulen := int(rest[0])
	rest = rest[1:]
	if len(rest) < ulen+8+sigSize {
		return nil, fmt.Errorf("%w: inner fields overrun", ErrCorrupt)
	}
	o.User = string(rest[:ulen])
	rest = rest[ulen:]
	cmdLen := binary.BigEndian.Uint64(rest)
	rest = rest[8:]
	if cmdLen > uint64(len(rest)-sigSize) {
		return nil, fmt.Errorf("%w: command length %d overruns the entry", ErrCorrupt, cmdLen)
	}
	cmd := rest[:cmdLen]
	sig := rest[cmdLen : cmdLen+sigSize]
	if pad := rest[cmdLen+sigSize:]; len(bytes.Trim(pad, "\x00")) != 0 {
		return nil, fmt.Errorf("%w: padding is not zero", ErrCorrupt)
	}
	if o.User != user {
		return nil, fmt.Errorf("%w: sealed for user %q", ErrNotForUser, o.User)
	}
	found := false
	for _, k := range trusted {
		if k.Ed25519.Equal(author) {
			o.Author, found = k, true
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: signed by %x", ErrUnknownAuthor, []byte(author))
	}
	signedLen := len(in) - len(rest) + int(cmdLen)
	if !ed25519.Verify(author, signedDigest(keyID, in[:signedLen]), sig) {
		return nil, ErrBadSignature
	}
	c, err := command.Decode(cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	o.Cmd = c
	return &o, nil
}

// Padme returns the padded length for an inner plaintext of n bytes: the
// Padmé scheme (Nikitin et al., "Reducing Metadata Leakage from Encrypted
// Files and Communication with PURBs", PETS 2019), which leaks O(log log n)
// bits of the length with at most 12% overhead.
func Padme(n int) int {
	if n < 2 {
		return n
	}
	e := bits.Len(uint(n)) - 1 // floor(log2 n)
	s := bits.Len(uint(e))     // floor(log2 e) + 1
	last := e - s
	mask := (1 << last) - 1
	return (n + mask) &^ mask
}
