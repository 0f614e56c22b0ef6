package entry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"

	"github.com/hdevalence/ed25519consensus"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// MaxStreamedHeader bounds the part of a command OpenFrom holds to decode
// its header: a command longer than this whose CBOR header does not end
// within it is refused (ErrBadCommand), though Open would decode it. The
// header of a Checkpoint or a Restoration is under 200 bytes.
const MaxStreamedHeader = 1 << 20

// Streamed is an entry opened by OpenFrom: verified, its command decoded
// but for the body, which Body reads.
type Streamed struct {
	ID     command.ID
	Author keys.PublicKey
	User   string
	Cmd    *command.Command // Body nil; BodyLen says how long it is
	// BodyLen is the length of the command's body, BodySHA256 its
	// SHA-256 (of what Body reads).
	BodyLen    int64
	BodySHA256 [sha256.Size]byte

	src     io.ReaderAt
	header  [maxHeaderSize]byte
	hlen    int // the header's length in header
	aead    cipherAEAD
	size    int   // inner plaintext length
	start   int64 // the body's offset in the inner plaintext
	hashes  [][32]byte
	keyID   [keyIDSize]byte
	trusted bool
}

// OpenFrom verifies an entry of size bytes read from src and decodes its
// command but for the body, without holding the entry or its plaintext:
// what Open accepts it accepts, with the same errors, and what Open
// refuses it refuses (but for a command header longer than
// MaxStreamedHeader). It reads src twice: a first pass decrypts every
// chunk and hashes it, keeping its BLAKE3 hash only, and checks the
// padding, the author and the signature over the hashes. In that pass the
// command's header is parsed only to find where the body starts, so that
// the body's SHA-256 is taken too; no error of it is reported, and
// nothing of it returned, before the signature is checked (Open's order).
// The body is decrypted again by Body's reader, which checks every chunk
// against the hash the signature covered.
func OpenFrom(src io.ReaderAt, size int64, me *keys.SecretKey, user string, trusted ...keys.PublicKey) (*Streamed, error) {
	keyID := me.Public().KeyID()
	s := &Streamed{src: src, keyID: keyID}
	// The longest header of any version: what follows a shorter one is
	// read and not used.
	hb := s.header[:min(int64(maxHeaderSize), max(size, 0))]
	if err := readAt(src, hb, 0); err != nil {
		return nil, err
	}
	innerLen, hl, err := checkOuterSize(hb, size, keyID)
	if err != nil {
		return nil, err
	}
	s.size, s.hlen = innerLen, hl
	if s.aead, err = openAEAD(s.header[:hl], me); err != nil {
		return nil, err
	}

	// The first pass: every chunk decrypted and hashed; the fields and
	// the command's start kept; the body's SHA-256 taken once the header's
	// length is known; the padding checked.
	s.hashes = make([][32]byte, numChunks(innerLen))
	var (
		sealed    = make([]byte, min(sealedSize, innerLen+tagSize))
		plain     = make([]byte, 0, min(ChunkSize, innerLen))
		f         innerFields
		head      []byte // the start of the command, up to MaxStreamedHeader
		cmdOff    int64  // the command's offset in the inner plaintext
		cmdLen    int64
		hdrLen    = int64(-1) // the command header's length, once decoded
		hdrErr    error
		body      hash.Hash
		padBad    bool
		prefixErr error
		bh        = blake3.New()
	)
	for i := range s.hashes {
		off := int64(i) * ChunkSize
		k := min(ChunkSize, innerLen-int(off))
		ct := sealed[:k+tagSize]
		if err := readAt(src, ct, int64(hl)+int64(i)*sealedSize); err != nil {
			return nil, err
		}
		var nonce [chacha20poly1305.NonceSize]byte
		pt, err := s.aead.Open(plain[:0], chunkNonce(&nonce, i), ct, s.header[:hl])
		if err != nil {
			return nil, fmt.Errorf("%w: chunk %d failed authentication", ErrCorrupt, i)
		}
		sum(bh, &s.hashes[i], pt)
		if i == 0 {
			// Open reports a bad prefix after every chunk and the
			// signature box opened: so here too, the command left empty.
			f, cmdOff, cmdLen, prefixErr = parsePrefixLen(pt, innerLen)
		}
		// The command's bytes in this chunk, as offsets in the command:
		// [ca, cb).
		ca, cb := max(off, cmdOff)-cmdOff, min(off+int64(len(pt)), cmdOff+cmdLen)-cmdOff
		at := func(c int64) int64 { return c + cmdOff - off } // offset in pt
		if prefixErr == nil && ca < cb && hdrLen < 0 && hdrErr == nil {
			upTo := min(cb, MaxStreamedHeader)
			head = append(head, pt[at(ca):at(upTo)]...)
			// A CBOR item ends where it ends: one that decodes from
			// the start of the command decodes the same from all of
			// it. One that does not may not be complete yet.
			_, n, err := command.DecodeHeader(head, cmdLen)
			switch {
			case err == nil:
				hdrLen = int64(n)
				body = sha256.New()
				body.Write(head[hdrLen:])
				ca = int64(len(head))
			case int64(len(head)) == min(cmdLen, MaxStreamedHeader):
				hdrErr = err
			}
		}
		if body != nil && ca < cb {
			body.Write(pt[at(ca):at(cb)])
		}
		if pad := max(cmdOff+cmdLen-off, 0); prefixErr == nil && pad < int64(len(pt)) && len(bytes.Trim(pt[pad:], "\x00")) != 0 {
			padBad = true
		}
	}
	sigBox := sealed[:sigBoxSize]
	if err := readAt(src, sigBox, size-sigBoxSize); err != nil {
		return nil, err
	}
	sig, err := s.aead.Open(make([]byte, 0, sigSize), sigNonce[:], sigBox, s.header[:hl])
	if err != nil {
		return nil, fmt.Errorf("%w: signature box failed authentication", ErrCorrupt)
	}
	// Open's checks, in its order.
	if prefixErr != nil {
		return nil, prefixErr
	}
	if padBad {
		return nil, fmt.Errorf("%w: padding is not zero", ErrCorrupt)
	}
	if f.user != user {
		return nil, fmt.Errorf("%w: sealed for user %q", ErrOtherUserName, f.user)
	}
	for _, k := range trusted {
		if k.Ed25519.Equal(f.author) {
			s.Author, s.trusted = k, true
			break
		}
	}
	if !s.trusted {
		return nil, &UnknownAuthorError{Author: bytes.Clone(f.author)}
	}
	if !ed25519consensus.Verify(f.author, digest(keyID, s.hashes), sig) {
		return nil, ErrBadSignature
	}
	// Authentic: now the header's decoding counts.
	if hdrErr == nil && hdrLen < 0 {
		hdrErr = fmt.Errorf("%w: header beyond its first %d bytes", command.ErrMalformed, MaxStreamedHeader)
	}
	if hdrErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, hdrErr)
	}
	c, _, err := command.DecodeHeader(head, cmdLen)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if err := checkPairing(s.header[len(magic)], c); err != nil {
		return nil, err
	}
	s.ID, s.User, s.Cmd = f.id, f.user, c
	s.start = cmdOff + hdrLen
	s.BodyLen = cmdLen - hdrLen
	body.Sum(s.BodySHA256[:0])
	return s, nil
}

// checkOuterSize is checkOuter for an entry of size bytes whose first
// bytes are b (its header, or all of it if shorter).
func checkOuterSize(b []byte, size int64, keyID [keyIDSize]byte) (innerLen, hl int, err error) {
	h, err := ParseHeader(b)
	if err != nil {
		return 0, 0, err
	}
	if h.KeyID != keyID {
		return 0, 0, fmt.Errorf("%w: sealed to key %x", ErrNotForUser, h.KeyID)
	}
	hl = h.Len()
	switch body := uint64(size - int64(hl)); {
	case body < h.Size:
		return 0, 0, fmt.Errorf("%w: %d of %d ciphertext bytes", ErrTruncated, body, h.Size)
	case body > h.Size:
		return 0, 0, fmt.Errorf("%w: %d bytes after the ciphertext", ErrCorrupt, body-h.Size)
	}
	innerLen, ok := innerSize(h.Size)
	if !ok {
		return 0, 0, fmt.Errorf("%w: no inner plaintext gives a ciphertext of %d bytes", ErrCorrupt, h.Size)
	}
	return innerLen, hl, nil
}

// parsePrefixLen is parsePrefix on the first chunk of an inner plaintext
// of innerLen bytes: the fields, and the command's offset and length.
func parsePrefixLen(first []byte, innerLen int) (innerFields, int64, int64, error) {
	var f innerFields
	if innerLen < innerFixed {
		return f, 0, 0, fmt.Errorf("%w: inner plaintext of %d bytes is too short", ErrCorrupt, innerLen)
	}
	copy(f.id[:], first)
	rest := first[command.IDSize:]
	f.author = ed25519.PublicKey(bytes.Clone(rest[:authorSize]))
	rest = rest[authorSize:]
	ulen := int(rest[0])
	rest = rest[1:]
	if len(rest) < ulen+8 {
		return f, 0, 0, fmt.Errorf("%w: inner fields overrun", ErrCorrupt)
	}
	f.user = string(rest[:ulen])
	rest = rest[ulen:]
	cmdLen := binary.BigEndian.Uint64(rest)
	rest = rest[8:]
	at := len(first) - len(rest)
	if cmdLen > uint64(innerLen-at) {
		return f, 0, 0, fmt.Errorf("%w: command length %d overruns the entry", ErrCorrupt, cmdLen)
	}
	return f, int64(at), int64(cmdLen), nil
}

// Body returns a reader of the command's body, decrypting the entry again
// from its source: every chunk must be the one the signature covered (its
// BLAKE3 hash the first pass's), or Read fails with ErrCorrupt. Each call
// reads from the start.
func (s *Streamed) Body() io.Reader {
	return &bodyReader{s: s, off: s.start, end: s.start + s.BodyLen}
}

// bodyReader reads a Streamed entry's body, a chunk at a time.
type bodyReader struct {
	s        *Streamed
	off, end int64 // next inner plaintext offset to hand out, and the end
	chunk    int   // index of the chunk in plain, -1 none
	sealed   []byte
	plain    []byte
	err      error
	began    bool
	bh       *blake3.Hasher
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if !r.began {
		r.began, r.chunk = true, -1
	}
	if r.off >= r.end {
		r.err = io.EOF
		return 0, io.EOF
	}
	i := int(r.off / ChunkSize)
	if i != r.chunk {
		if err := r.load(i); err != nil {
			r.err = err
			return 0, err
		}
	}
	in := r.off - int64(i)*ChunkSize
	n := copy(p, r.plain[in:min(int64(len(r.plain)), r.end-int64(i)*ChunkSize)])
	r.off += int64(n)
	return n, nil
}

// load decrypts chunk i into plain and checks it against its hash.
func (r *bodyReader) load(i int) error {
	s := r.s
	if r.sealed == nil {
		r.sealed = make([]byte, sealedSize)
		r.plain = make([]byte, 0, ChunkSize)
	}
	k := min(ChunkSize, s.size-i*ChunkSize)
	ct := r.sealed[:k+tagSize]
	if err := readAt(s.src, ct, int64(s.hlen)+int64(i)*sealedSize); err != nil {
		return err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	pt, err := s.aead.Open(r.plain[:0], chunkNonce(&nonce, i), ct, s.header[:s.hlen])
	var h [32]byte
	if err == nil {
		if r.bh == nil {
			r.bh = blake3.New()
		}
		sum(r.bh, &h, pt)
	}
	if err != nil || h != s.hashes[i] {
		return fmt.Errorf("%w: chunk %d changed since it was verified", ErrCorrupt, i)
	}
	r.plain, r.chunk = pt, i
	return nil
}

// readAt fills p from src at off.
func readAt(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("opening entry: reading it: %w", err)
}

// sum writes the BLAKE3 hash of p into out through h, without the
// allocation of blake3.Sum256.
func sum(h *blake3.Hasher, out *[32]byte, p []byte) {
	h.Reset()
	h.Write(p)
	h.Sum(out[:0])
}
