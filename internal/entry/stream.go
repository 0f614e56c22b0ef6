package entry

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// maxStreamed bounds the body a Sealer takes.
const maxStreamed = 1 << 40

// Sealer seals an entry whose body is written to it, into a writer, with
// memory bounded by a few chunks whatever the body's size: the entry Seal
// returns for the same command with that body, byte for byte given the
// same randomness, which Open opens unchanged. The body's length must be
// known first: it is in the command's header, which comes before the body
// in the inner plaintext, and the outer header carries the entry's size.
// The signature covers the hash of every chunk, so it is written last,
// by Close.
//
// A Sealer gathers up to maxWorkers chunks (workers) and hashes and
// encrypts them on as many goroutines before it writes them out.
type Sealer struct {
	w      io.Writer
	author *keys.SecretKey
	keyID  [keyIDSize]byte
	aead   cipherAEAD
	header [headerSize]byte
	id     command.ID

	size    int   // inner plaintext length, padding included
	body    int64 // body bytes still expected
	chunk   int   // index of the first chunk in plain
	plain   []byte
	sealed  []byte
	hashes  [][32]byte
	sig     *blake3.Hasher // what the signature covers
	written int64
	err     error
}

// NewSealer starts an entry holding c (which must have no Body) whose body
// will be the bodyLen bytes written to the Sealer, sealed to `to`, signed
// by author, bound to user, as Seal does; o.BodyPrefix, if set, comes
// first. It writes the outer header to w at once.
func NewSealer(w io.Writer, c *command.Command, bodyLen int64, author *keys.SecretKey, to keys.PublicKey, user string, o *Options) (*Sealer, error) {
	if o == nil {
		o = &Options{}
	}
	if len(c.Body) != 0 {
		return nil, errors.New("sealing entry: a streamed command has its body written, not in Body")
	}
	if o.Chains != nil {
		return nil, errors.New("sealing entry: a Sealer writes format version 2 only")
	}
	prefix, id, innerLen, err := begin(c, bodyLen, author, user, o)
	if err != nil {
		return nil, err
	}
	s := &Sealer{w: w, author: author, keyID: to.KeyID(), id: id, size: innerLen, body: bodyLen, sig: blake3.New()}
	aead, err := writeHeader(s.header[:], uint64(ciphertextSize(innerLen)), to, formatFor(c))
	if err != nil {
		return nil, fmt.Errorf("sealing entry: %w", err)
	}
	s.aead = aead
	n := workers(innerLen)
	s.plain = make([]byte, 0, min(n*ChunkSize, innerLen))
	s.sealed = make([]byte, n*sealedSize)
	s.hashes = make([][32]byte, n)
	s.sig.WriteString(sigDomain)
	s.sig.Write(s.keyID[:])
	if err := s.out(s.header[:]); err != nil {
		return nil, err
	}
	if err := s.add(prefix); err != nil {
		return nil, err
	}
	return s, nil
}

// ID returns the entry id.
func (s *Sealer) ID() command.ID { return s.id }

// Size returns the length of the whole entry: SealedLen of its inner
// plaintext.
func (s *Sealer) Size() int64 { return int64(SealedLen(s.size)) }

// Write takes the next bytes of the body.
func (s *Sealer) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if int64(len(p)) > s.body {
		s.err = fmt.Errorf("sealing entry: %d bytes of body more than announced", int64(len(p))-s.body)
		return 0, s.err
	}
	s.body -= int64(len(p))
	if err := s.add(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close pads the inner plaintext, seals what is left and writes the
// signature box. It fails if the body was shorter than announced. It
// does not close the underlying writer.
func (s *Sealer) Close() error {
	if s.err != nil {
		return s.err
	}
	if s.body != 0 {
		s.err = fmt.Errorf("sealing entry: %d bytes of body missing", s.body)
		return s.err
	}
	var zeros [4096]byte
	for pad := s.size - int(s.written); pad > 0; pad -= min(pad, len(zeros)) {
		if err := s.add(zeros[:min(pad, len(zeros))]); err != nil {
			return err
		}
	}
	if err := s.flush(); err != nil {
		return err
	}
	var box [sigBoxSize]byte
	sig := s.author.Sign(s.sig.Sum(nil))
	s.aead.Seal(box[:0], sigNonce[:], sig, s.header[:])
	if err := s.out(box[:]); err != nil {
		return err
	}
	s.err = errors.New("sealing entry: closed")
	return nil
}

// add appends inner plaintext, sealing every full batch of chunks.
func (s *Sealer) add(p []byte) error {
	for len(p) > 0 {
		k := copy(s.plain[len(s.plain):cap(s.plain)], p)
		s.plain = s.plain[:len(s.plain)+k]
		s.written += int64(k)
		p = p[k:]
		if len(s.plain) == cap(s.plain) {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush hashes and encrypts the chunks gathered, one goroutine each, and
// writes them out.
func (s *Sealer) flush() error {
	if len(s.plain) == 0 {
		return nil
	}
	n := (len(s.plain) + ChunkSize - 1) / ChunkSize
	one := func(k int) {
		pt := s.plain[k*ChunkSize : min((k+1)*ChunkSize, len(s.plain))]
		var nonce [chacha20poly1305.NonceSize]byte
		s.aead.Seal(s.sealed[k*sealedSize:k*sealedSize], chunkNonce(&nonce, s.chunk+k), pt, s.header[:])
		sum256(&s.hashes[k], pt)
	}
	var wg sync.WaitGroup
	for k := 1; k < n; k++ {
		wg.Go(func() { one(k) })
	}
	one(0)
	wg.Wait()
	for k := range n {
		s.sig.Write(s.hashes[k][:])
	}
	size := len(s.plain) + n*tagSize
	s.chunk += n
	s.plain = s.plain[:0]
	return s.out(s.sealed[:size])
}

func (s *Sealer) out(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		s.err = fmt.Errorf("sealing entry: %w", err)
		return s.err
	}
	return nil
}

// SealFrom writes to w the entry Seal returns for c with a body of bodyLen
// bytes read from body (c.Body must be empty), through a Sealer. It
// returns the entry's size and id.
func SealFrom(w io.Writer, c *command.Command, body io.Reader, bodyLen int64, author *keys.SecretKey, to keys.PublicKey, user string, o *Options) (int64, command.ID, error) {
	s, err := NewSealer(w, c, bodyLen, author, to, user, o)
	if err != nil {
		return 0, command.ID{}, err
	}
	n, err := io.Copy(s, io.LimitReader(body, bodyLen))
	if err != nil {
		return 0, command.ID{}, err
	}
	if n != bodyLen {
		return 0, command.ID{}, fmt.Errorf("sealing entry: the body ended after %d of %d bytes", n, bodyLen)
	}
	if err := s.Close(); err != nil {
		return 0, command.ID{}, err
	}
	return s.Size(), s.id, nil
}
