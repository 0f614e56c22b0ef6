// Package entry seals commands into the opaque entries the spool stores, and
// opens them again on the user's devices.
//
// Implementation notes:
//
//   - Confidentiality: HPKE (RFC 9180) in export-only mode with
//     DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, to the user's X25519 key, with
//     a fresh ephemeral key per entry. The exported 32-byte key is used for
//     ChaCha20-Poly1305 (RFC 8439) over the inner plaintext in 64 KiB chunks,
//     each with its own counter nonce, and once more for the signature box.
//     The outer header is every chunk's associated data. The author's static
//     key takes no part in encryption, so the spool, which holds only its own
//     secret key, cannot decrypt what it delivered.
//   - Authorship: the inner plaintext carries the author's Ed25519 public key;
//     the signature box holds an Ed25519 (RFC 8032) signature over a BLAKE3
//     digest of a domain string, the recipient key id, and the BLAKE3 hash of
//     every plaintext chunk: entry id, author, user name, command and
//     padding. Both are inside the encryption, so the spool learns neither
//     author nor content.
//     A reader checks signatures by ZIP 215's rules (ed25519consensus),
//     under which a signature checked alone (Open, OpenFrom) and in a
//     batch (VerifyBatch, about half the cost) gets the same answer.
//   - Padding: inside the encryption, zero bytes after the command, covered
//     by the signature; Open refuses non-zero padding but accepts any
//     length of it. How much a writer adds is PaddedLen's rule: a device's
//     commands other than Append fill a power-of-two bucket of at least
//     MinPadded bytes, so the spool cannot tell them apart by size, and
//     entries carrying a message or a checkpoint's state are padded with
//     Padmé (at most 12% more) above the same floor.
//   - Speed: hashing a chunk and encrypting (or decrypting) it is independent
//     of every other chunk, so large entries are spread over a few
//     goroutines; when sealing, chunks are already hashed while the HPKE
//     setup runs. BLAKE3 is used because it is about twice as fast as
//     SHA-256 here; the signature's hash is the only pass over the message
//     besides the cipher.
//   - Errors are distinct sentinels (ErrTruncated, ErrUnknownVersion,
//     ErrNotForUser, ErrCorrupt, ErrUnknownAuthor, ErrBadSignature,
//     ErrBadCommand) checked in that order of layers; Open never panics.
//   - Memory: Seal encrypts from the caller's bytes into the output buffer
//     (1x the message of extra heap; an entry under parallelMin, nearly
//     all mail, is put together in that buffer and encrypted over itself,
//     a larger one takes a scratch chunk of at most 64 KiB per worker); Open
//     allocates the plaintext once and the command's body aliases it. A
//     Sealer (stream.go) seals a body of announced length written to it
//     into a writer, the same bytes as Seal, holding a batch of chunks
//     (up to maxWorkers of them, sealed on as many goroutines): how a
//     device writes a checkpoint of any size. OpenFrom (openfrom.go)
//     opens one from an io.ReaderAt in two passes, holding a chunk and
//     the chunks' hashes: how a device reads a checkpoint of any size.
//
// docs/FORMAT.md is the normative description.
package entry

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hdevalence/ed25519consensus"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/command"
	"cspool/internal/keys"
)

// Version is the entry format version written unless Options.Chains
// asks for Version3 or the command is of encoding version 2 (Version4);
// all three are read.
const Version = 2

// Version4 is format 2 for a command of encoding version 2
// (command.Version2): the same HPKE context, chunks and signature, with
// 4 as the version byte, which every chunk's tag authenticates. An entry
// of format 2 or 3 holds a command of version 1, and one of format 4 a
// command of version 2; Open refuses any other pairing
// (ErrBadCommand). The spool holds format 4 back from a device that does
// not say it reads it (docs/API.md §3), so that a device built before
// it stops there until upgraded instead of passing the change by.
const Version4 = 4

// Newest is the newest entry format this release reads, which a device
// says on every read of its log (docs/API.md §3).
const Newest = Version4

// formatFor returns the entry format a command is sealed in without
// chains: Version4 for a command of encoding version 2, else Version.
func formatFor(c *command.Command) byte {
	if c.Version == command.Version2 {
		return Version4
	}
	return Version
}

// checkPairing refuses a command whose encoding version is not the one
// entry format v holds.
func checkPairing(v byte, c *command.Command) error {
	if (v == Version4) != (c.Version == command.Version2) {
		return fmt.Errorf("%w: a command of encoding version %d in entry format %d", ErrBadCommand, max(c.Version, command.Version), v)
	}
	return nil
}

// Wire constants of version 2.
const (
	magic      = "CSPE"
	keyIDSize  = 8
	encSize    = 32 // DHKEM(X25519) encapsulated key
	headerSize = len(magic) + 1 + keyIDSize + 8 + encSize
	tagSize    = chacha20poly1305.Overhead
	sigSize    = ed25519.SignatureSize
	authorSize = ed25519.PublicKeySize
	// ChunkSize is the plaintext size of every chunk but the last.
	ChunkSize  = 64 << 10
	sealedSize = ChunkSize + tagSize
	sigBoxSize = sigSize + tagSize
	// MaxUserLen bounds the user name inside an entry.
	MaxUserLen = 255
	// innerFixed is the inner plaintext without user name and command.
	innerFixed = command.IDSize + authorSize + 1 + 8

	hpkeInfo      = "cspool/v2 entry"
	exportContext = "cspool/v2 entry key"
	sigDomain     = "cspool/v2 entry signature\x00"

	// parallelMin is the inner size from which chunks are hashed and
	// encrypted on several goroutines at once, maxWorkers the most used.
	parallelMin = 256 << 10
	maxWorkers  = 4
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
	// ErrOtherUserName is the ErrNotForUser of an entry sealed to the
	// reader's key for another user name: a spool that gives two users
	// one key, or puts another user's entries in this log.
	ErrOtherUserName = fmt.Errorf("%w under this key", ErrNotForUser)
)

// UnknownAuthorError is the error of an entry whose inner header names
// an author none of the trusted keys is; errors.Is(err, ErrUnknownAuthor)
// holds. Author is the Ed25519 key the entry names, not checked: no
// signature is verified under a key not trusted.
type UnknownAuthorError struct {
	Author ed25519.PublicKey
}

func (e *UnknownAuthorError) Error() string {
	return fmt.Sprintf("%v: signed by %x", ErrUnknownAuthor, []byte(e.Author))
}

// Is makes errors.Is(err, ErrUnknownAuthor) hold.
func (e *UnknownAuthorError) Is(target error) bool { return target == ErrUnknownAuthor }

// Options tune Seal. The zero value is the production setting.
type Options struct {
	// Rand supplies the entry id; nil means crypto/rand. (HPKE's ephemeral
	// key always comes from crypto/rand.)
	Rand io.Reader
	// ID, if not zero, is used as the entry id instead of a random one.
	ID command.ID
	// NoPadding turns off length padding (PaddedLen).
	NoPadding bool
	// BodyPrefix is sealed in front of c.Body as the start of the
	// command's body: the entry is the one Seal gives for a command whose
	// Body is BodyPrefix followed by c.Body, and Open returns them joined.
	// A delivery prepends its trace header fields with it without copying
	// the message.
	BodyPrefix []byte
	// Chains, if set, seals the entry in format version 3, as the next
	// step of Chains' context for the recipient; nil seals version 2.
	Chains *Chains
}

// Opened is an entry after Open: verified and decoded.
type Opened struct {
	ID     command.ID
	Author keys.PublicKey // the trusted key that signed it
	User   string
	Cmd    *command.Command
	// plain is the inner plaintext's buffer, when it may be given back
	// (Release).
	plain []byte
}

// chunkNonce is the nonce of chunk i; the signature box uses sigNonce, which
// no chunk can have.
func chunkNonce(n *[chacha20poly1305.NonceSize]byte, i int) []byte {
	clear(n[:4])
	binary.BigEndian.PutUint64(n[4:], uint64(i))
	return n[:]
}

var sigNonce = [chacha20poly1305.NonceSize]byte{0xff, 0xff, 0xff, 0xff}

// ciphertextSize is the length after the header of an entry whose inner
// plaintext is innerLen bytes (innerLen > 0).
func ciphertextSize(innerLen int) int {
	return innerLen + numChunks(innerLen)*tagSize + sigBoxSize
}

// innerSize inverts ciphertextSize, or reports that no inner length gives
// size.
func innerSize(size uint64) (int, bool) {
	if size < sigBoxSize+tagSize+innerFixed+1 || size > 1<<50 {
		return 0, false
	}
	rest := size - sigBoxSize
	chunks := (rest + sealedSize - 1) / sealedSize
	last := rest - (chunks-1)*sealedSize
	if last <= tagSize {
		return 0, false
	}
	return int(rest - chunks*tagSize), true
}

// hashers keeps BLAKE3 hashers for sealing and opening. A hasher holds an
// 8 KiB buffer, which blake3.Sum256 and a hasher that does not escape put
// on the goroutine's stack and clear at every call: an LMTP delivery is
// sealed on a goroutine go-smtp starts for each message, whose stack grew
// past that for every message. One taken from the pool is only reset.
var hashers = sync.Pool{New: func() any { return blake3.New() }}

// sum256 writes blake3.Sum256(p) into out, through a hasher of the pool.
func sum256(out *[32]byte, p []byte) {
	h := hashers.Get().(*blake3.Hasher)
	sum(h, out, p)
	hashers.Put(h)
}

// digest is what the signature covers: BLAKE3 of the domain string, the
// recipient key id and the BLAKE3 hash of every plaintext chunk, in order.
func digest(keyID [keyIDSize]byte, chunkHashes [][32]byte) []byte {
	h := hashers.Get().(*blake3.Hasher)
	defer hashers.Put(h)
	return digestWith(h, keyID, chunkHashes)
}

// digestWith is digest through h.
func digestWith(h *blake3.Hasher, keyID [keyIDSize]byte, chunkHashes [][32]byte) []byte {
	h.Reset()
	h.WriteString(sigDomain)
	h.Write(keyID[:])
	for i := range chunkHashes {
		h.Write(chunkHashes[i][:])
	}
	return h.Sum(nil)
}

// innerDigest computes digest from a whole inner plaintext.
func innerDigest(keyID [keyIDSize]byte, in []byte) []byte {
	hashes := make([][32]byte, 0, numChunks(len(in)))
	for off := 0; off < len(in); off += ChunkSize {
		var h [32]byte
		sum256(&h, in[off:min(off+ChunkSize, len(in))])
		hashes = append(hashes, h)
	}
	return digest(keyID, hashes)
}

func numChunks(innerLen int) int { return (innerLen + ChunkSize - 1) / ChunkSize }

// workers is how many goroutines hash and encrypt (or decrypt) an inner
// plaintext of innerLen bytes: one below parallelMin, else one per core up
// to maxWorkers and the number of chunks.
func workers(innerLen int) int {
	if innerLen < parallelMin {
		return 1
	}
	return min(runtime.GOMAXPROCS(0), maxWorkers, numChunks(innerLen))
}

// eachChunk calls fn for every chunk of an inner plaintext of innerLen
// bytes, on workers(innerLen) goroutines; fn must only touch its own chunk.
func eachChunk(innerLen int, fn func(i, off, n int)) {
	chunks := numChunks(innerLen)
	var next atomic.Int64
	run := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= chunks {
				return
			}
			off := i * ChunkSize
			fn(i, off, min(ChunkSize, innerLen-off))
		}
	}
	var wg sync.WaitGroup
	for range workers(innerLen) - 1 {
		wg.Go(run)
	}
	run()
	wg.Wait()
}

// Seal encrypts c to the user's public key `to`, signed by author, bound to
// user. It returns the entry bytes and the entry id.
func Seal(c *command.Command, author *keys.SecretKey, to keys.PublicKey, user string, o *Options) ([]byte, command.ID, error) {
	return AppendSeal(nil, c, author, to, user, o)
}

// AppendSeal is Seal appending the entry to dst, in dst's spare capacity if
// it is large enough; dst must not overlap c.Body.
func AppendSeal(dst []byte, c *command.Command, author *keys.SecretKey, to keys.PublicKey, user string, o *Options) ([]byte, command.ID, error) {
	if o == nil {
		o = &Options{}
	}
	prefix, id, innerLen, err := begin(c, 0, author, user, o)
	if err != nil {
		return nil, command.ID{}, err
	}
	src := innerSource{prefix: prefix, body: c.Body, size: innerLen}
	t := recipient{to: to, chains: o.Chains, version: formatFor(c)}
	if t.chains != nil && t.version != Version {
		return dst, command.ID{}, errors.New("sealing entry: a command of encoding version 2 is sealed in format 4, without chains")
	}

	n := t.headerLen() + ciphertextSize(innerLen)
	ret := slices.Grow(dst, n)
	ret = ret[:len(dst)+n]
	out := ret[len(dst):]
	aead, hashes, err := sealBody(out, t, src)
	if err != nil {
		return dst, command.ID{}, fmt.Errorf("sealing entry: %w", err)
	}
	sig := author.Sign(digest(to.KeyID(), hashes))
	aead.Seal(out[len(out)-sigBoxSize:len(out)-sigBoxSize], sigNonce[:], sig, out[:t.headerLen()])
	return ret, id, nil
}

// begin returns the start of the inner plaintext of an entry holding c
// whose body is o.BodyPrefix, c.Body and extra bytes more (the fields
// before the command, the command's header and o.BodyPrefix), the entry
// id, and the length of the inner plaintext with its padding. The id is
// drawn here, before anything else random.
func begin(c *command.Command, extra int64, author *keys.SecretKey, user string, o *Options) ([]byte, command.ID, int, error) {
	if len(user) == 0 || len(user) > MaxUserLen {
		return nil, command.ID{}, 0, fmt.Errorf("sealing entry: user name must be 1 to %d bytes", MaxUserLen)
	}
	if extra < 0 || extra > maxStreamed {
		return nil, command.ID{}, 0, fmt.Errorf("sealing entry: a body of %d bytes", extra)
	}
	hdr, err := command.EncodeHeaderPrefixed(c, len(o.BodyPrefix)+int(extra))
	if err != nil {
		return nil, command.ID{}, 0, fmt.Errorf("sealing entry: %w", err)
	}
	id := o.ID
	if id.IsZero() {
		r := o.Rand
		if r == nil {
			r = rand.Reader
		}
		if _, err := io.ReadFull(r, id[:]); err != nil {
			return nil, command.ID{}, 0, fmt.Errorf("sealing entry: reading entry id: %w", err)
		}
	}
	cmdLen := len(hdr) + len(o.BodyPrefix) + len(c.Body) + int(extra)
	var prefix []byte
	prefix = append(prefix, id[:]...)
	prefix = append(prefix, author.Public().Ed25519...)
	prefix = append(prefix, byte(len(user)))
	prefix = append(prefix, user...)
	prefix = binary.BigEndian.AppendUint64(prefix, uint64(cmdLen))
	prefix = append(prefix, hdr...)
	prefix = append(prefix, o.BodyPrefix...)
	innerLen := len(prefix) + len(c.Body) + int(extra)
	if !o.NoPadding {
		innerLen = PaddedLen(c.Kind, innerLen)
	}
	return prefix, id, innerLen, nil
}

// sealBody writes the header (sealHeader) and every chunk of the inner
// plaintext into out, and returns the entry's AEAD and the chunks' hashes.
// A large entry uses up to maxWorkers goroutines: hashing a chunk needs no
// key, so other workers hash chunks while the calling goroutine does the
// HPKE setup, and once the key is ready every worker encrypts, then hashes
// what is left.
func sealBody(out []byte, to recipient, src innerSource) (cipherAEAD, [][32]byte, error) {
	n := numChunks(src.size)
	hashes := make([][32]byte, n)
	hl := to.headerLen()
	header := out[:hl]
	if workers(src.size) == 1 {
		return sealInPlace(out, to, src, hashes)
	}
	var aead cipherAEAD // set before ready is closed; nil if the setup failed
	ready := make(chan struct{})
	var nextHash, nextSeal atomic.Int64
	worker := func() {
		var scratch []byte
		plain := func(i int) []byte {
			off := i * ChunkSize
			size := min(ChunkSize, src.size-off)
			if pt := src.slice(off, size); pt != nil {
				return pt
			}
			if scratch == nil {
				// A chunk at most; a message smaller than a chunk (most
				// mail) needs only its own size, not 64 KiB.
				scratch = make([]byte, min(ChunkSize, src.size))
			}
			return src.fill(scratch[:size], off)
		}
		for {
			select {
			case <-ready:
				if aead == nil {
					return
				}
				if i := int(nextSeal.Add(1) - 1); i < n {
					var nonce [chacha20poly1305.NonceSize]byte
					pos := hl + i*sealedSize
					aead.Seal(out[pos:pos], chunkNonce(&nonce, i), plain(i), header)
					continue
				}
				if i := int(nextHash.Add(1) - 1); i < n {
					sum256(&hashes[i], plain(i))
					continue
				}
				return
			default:
				if i := int(nextHash.Add(1) - 1); i < n {
					sum256(&hashes[i], plain(i))
					continue
				}
				<-ready
			}
		}
	}
	var wg sync.WaitGroup
	for range workers(src.size) - 1 {
		wg.Go(worker)
	}
	a, err := sealHeader(out, to)
	if err == nil {
		aead = a
	}
	close(ready)
	worker()
	wg.Wait()
	if err != nil {
		return nil, nil, err
	}
	return aead, hashes, nil
}

// sealInPlace is sealBody on the calling goroutine alone (an entry under
// parallelMin: nearly all mail). A chunk that does not lie within the
// message body (the first, with the fields and the command's header in
// front, and the last, with the padding) is put together where its
// ciphertext goes, hashed there and encrypted over itself; one that does
// is hashed and encrypted from the body. So the plaintext is copied once,
// into out, with no scratch buffer.
func sealInPlace(out []byte, to recipient, src innerSource, hashes [][32]byte) (cipherAEAD, [][32]byte, error) {
	aead, err := sealHeader(out, to)
	if err != nil {
		return nil, nil, err
	}
	hl := to.headerLen()
	header := out[:hl]
	var nonce [chacha20poly1305.NonceSize]byte
	for i := range hashes {
		off := i * ChunkSize
		size := min(ChunkSize, src.size-off)
		pos := hl + i*sealedSize
		pt := src.slice(off, size)
		if pt == nil {
			pt = src.fill(out[pos:pos+size], off)
		}
		sum256(&hashes[i], pt)
		// pt is out[pos:pos+size] or the body: the ciphertext either
		// overwrites it exactly or does not touch it.
		aead.Seal(out[pos:pos], chunkNonce(&nonce, i), pt, header)
	}
	return aead, hashes, nil
}

// innerSource is the inner plaintext as pieces: the fields and command
// header, the message body, and zero padding up to size.
type innerSource struct {
	prefix, body []byte
	size         int
}

// slice returns inner[off:off+n] without copying when it lies within body,
// and nil otherwise.
func (s innerSource) slice(off, n int) []byte {
	if off >= len(s.prefix) && off+n <= len(s.prefix)+len(s.body) {
		return s.body[off-len(s.prefix) : off-len(s.prefix)+n]
	}
	return nil
}

// fill copies inner[off:off+len(b)] into b.
func (s innerSource) fill(b []byte, off int) []byte {
	for i := 0; i < len(b); {
		o := off + i
		switch {
		case o < len(s.prefix):
			i += copy(b[i:], s.prefix[o:])
		case o < len(s.prefix)+len(s.body):
			i += copy(b[i:], s.body[o-len(s.prefix):])
		default:
			clear(b[i:])
			i = len(b)
		}
	}
	return b
}

// recipient is whom an entry is sealed to, and how: version 2, or
// version 3 as a step of chains' context.
type recipient struct {
	to      keys.PublicKey
	chains  *Chains
	version byte // without chains: Version4 (formatFor), or Version when 0
}

func (r recipient) headerLen() int {
	if r.chains != nil {
		return header3Size
	}
	return headerSize
}

// sealHeader writes the outer header into out[:to.headerLen()], taking the
// ciphertext size from len(out), and returns the entry's AEAD.
func sealHeader(out []byte, to recipient) (cipherAEAD, error) {
	hl := to.headerLen()
	if to.chains != nil {
		return writeHeader3(out[:hl], uint64(len(out)-hl), to.to, to.chains)
	}
	v := to.version
	if v == 0 {
		v = Version
	}
	return writeHeader(out[:hl], uint64(len(out)-hl), to.to, v)
}

// writeHeader writes the outer header of an entry with size bytes after
// it into out (headerSize bytes), and returns the entry's AEAD.
func writeHeader(out []byte, size uint64, to keys.PublicKey, v byte) (cipherAEAD, error) {
	enc, key, err := senderSecret(to, hpkeInfo, exportContext)
	if err != nil {
		return nil, err
	}
	h := appendHeaderStart(out[:0], v, to, size)
	copy(out[len(h):headerSize], enc)
	return chacha20poly1305.New(key)
}

// appendHeaderStart appends the fields every version's outer header
// starts with: magic, version, the recipient's key id, size.
func appendHeaderStart(h []byte, v byte, to keys.PublicKey, size uint64) []byte {
	keyID := to.KeyID()
	h = append(h, magic...)
	h = append(h, v)
	h = append(h, keyID[:]...)
	return binary.BigEndian.AppendUint64(h, size)
}

// senderSecret sets up an export-only HPKE context to `to` with info and
// a fresh ephemeral key: its encapsulated key, and its 32-byte export
// under exportCtx.
func senderSecret(to keys.PublicKey, info, exportCtx string) (enc, secret []byte, err error) {
	pk, err := hpke.NewDHKEMPublicKey(to.X25519)
	if err != nil {
		return nil, nil, err
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(info))
	if err != nil {
		return nil, nil, err
	}
	if len(enc) != encSize {
		return nil, nil, fmt.Errorf("encapsulated key is %d bytes, want %d", len(enc), encSize)
	}
	secret, err = sender.Export(exportCtx, 32)
	return enc, secret, err
}

// recipientSecret is senderSecret's export on the recipient's side, from
// the encapsulated key enc: an enc no context comes from is ErrCorrupt.
func recipientSecret(me *keys.SecretKey, enc []byte, info, exportCtx string) ([]byte, error) {
	sk, err := hpke.NewDHKEMPrivateKey(me.X25519())
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	r, err := hpke.NewRecipient(enc, sk, hpke.HKDFSHA256(), hpke.ExportOnly(), []byte(info))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	secret, err := r.Export(exportCtx, 32)
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	return secret, nil
}

// cipherAEAD is the AEAD interface of golang.org/x/crypto/chacha20poly1305.
type cipherAEAD interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

// Header is the outer header of an entry, readable without keys.
type Header struct {
	Version byte
	KeyID   [keyIDSize]byte
	Size    uint64 // bytes after the header: chunks, their tags, signature box
}

// Len is the length of the outer header itself.
func (h Header) Len() int { return outerLen(h.Version) }

// VersionOf returns the format version byte of entry b, whatever its
// value (ParseHeader refuses versions this release does not know), and
// false when b does not start with the magic and a version.
func VersionOf(b []byte) (byte, bool) {
	if len(b) < len(magic)+1 || string(b[:len(magic)]) != magic {
		return 0, false
	}
	return b[len(magic)], true
}

// ParseHeader reads the outer header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < len(magic)+1 {
		return Header{}, fmt.Errorf("%w: %d bytes", ErrTruncated, len(b))
	}
	if string(b[:len(magic)]) != magic {
		return Header{}, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	v := b[len(magic)]
	if v != Version && v != Version3 && v != Version4 {
		return Header{}, fmt.Errorf("%w %d", ErrUnknownVersion, v)
	}
	if hl := outerLen(v); len(b) < hl {
		return Header{}, fmt.Errorf("%w: header needs %d bytes, have %d", ErrTruncated, hl, len(b))
	}
	var h Header
	h.Version = b[len(magic)]
	copy(h.KeyID[:], b[len(magic)+1:])
	h.Size = binary.BigEndian.Uint64(b[len(magic)+1+keyIDSize:])
	return h, nil
}

// MaxHeaderLen is the length of the longest outer header of any version
// ParseHeader reads: the first bytes of an entry, which say how long it is.
const MaxHeaderLen = maxHeaderSize

// CutShort reports whether an entry of size bytes, whose first bytes are
// first (at least min(size, MaxHeaderLen) of them), is shorter than its
// header says it is, and the length it says (0 when not even the header
// came whole). Bytes that are not an entry of a version this release reads
// (a bad magic, an unknown version, a length no entry has) are not cut
// short: Open refuses them. A transfer that ends early, its length not
// given (a body that ends with its connection), is told from a whole entry
// by this, so that it is retried rather than refused.
func CutShort(first []byte, size int64) (want int64, short bool) {
	first = first[:min(int64(len(first)), max(size, 0))]
	h, err := ParseHeader(first)
	if errors.Is(err, ErrTruncated) {
		if k := min(len(first), len(magic)); string(first[:k]) != magic[:k] {
			return 0, false // not the start of an entry
		}
		return 0, true
	}
	if _, ok := innerSize(h.Size); err != nil || !ok {
		return 0, false
	}
	want = int64(h.Len()) + int64(h.Size)
	return want, size < want
}

// checkOuter runs the checks of an entry that need no secret (docs/FORMAT.md
// section 2, steps 1 to 3): the header, the recipient key id, and a length
// that some inner plaintext gives.
// It returns that length and the header's.
func checkOuter(b []byte, keyID [keyIDSize]byte) (innerLen, hl int, err error) {
	return checkOuterSize(b, int64(len(b)), keyID)
}

// CheckSealedTo checks, without any secret, that b is an entry of this
// format sealed to the key to: what the spool can check before it stores
// an entry (docs/FORMAT.md section 2, steps 1 to 3). The errors are Open's:
// ErrNotForUser for another recipient key; ErrTruncated, ErrCorrupt or
// ErrUnknownVersion for bytes that are not such an entry. Only the
// recipient can check the rest.
func CheckSealedTo(b []byte, to keys.PublicKey) error {
	_, _, err := checkOuter(b, to.KeyID())
	return err
}

// Open decrypts and verifies an entry sealed to me for user, accepting only
// signatures by one of the trusted keys.
func Open(b []byte, me *keys.SecretKey, user string, trusted ...keys.PublicKey) (*Opened, error) {
	u, err := OpenUnverified(b, me, user, trusted...)
	if err != nil {
		return nil, err
	}
	return u.Verify()
}

// Unverified is an entry decrypted, with its fields, padding and author
// checked, whose signature is still to be checked: by Verify, or with
// others at once by VerifyBatch. It gives nothing of the command before.
type Unverified struct {
	o        Opened // without Cmd
	author   ed25519.PublicKey
	cmd      []byte
	sig, dig []byte
	plain    []byte // the inner plaintext, when it may be given back
	version  byte   // the entry format, which the command's version must fit
}

// OpenUnverified is Open without the signature's check: every error Open
// returns before ErrBadSignature, in the same order.
func OpenUnverified(b []byte, me *keys.SecretKey, user string, trusted ...keys.PublicKey) (*Unverified, error) {
	keyID := me.Public().KeyID()
	d, err := decrypt(b, me, keyID)
	if err != nil {
		return nil, err
	}
	u, err := checkInner(d.inner, d.sig, d.digest, keyID, user, trusted)
	if err != nil {
		return nil, err
	}
	if d.pooled {
		u.plain = d.inner
	}
	u.version = b[len(magic)]
	return u, nil
}

// Verify checks the entry's signature (ed25519consensus.Verify, the rule
// of ZIP 215, which VerifyBatch agrees with) and decodes its command.
func (u *Unverified) Verify() (*Opened, error) {
	if !ed25519consensus.Verify(u.author, u.dig, u.sig) {
		return nil, ErrBadSignature
	}
	return u.decode()
}

// decode decodes the command of an entry whose signature was checked.
func (u *Unverified) decode() (*Opened, error) {
	c, err := command.Decode(u.cmd)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
	}
	if err := checkPairing(u.version, c); err != nil {
		return nil, err
	}
	o := u.o
	o.Cmd = c
	o.plain = u.plain
	return &o, nil
}

// VerifyBatch checks the signatures of us together and decodes their
// commands: out[i] and errs[i] are what us[i].Verify would return, at about
// a quarter of its cost an entry when one author signed them all. The
// entries' signatures are checked in one batch equation (random
// coefficients, one term an author: batchverify.go); if it fails, each is
// checked alone, so a bad signature costs the whole batch twice but is
// found.
func VerifyBatch(us []*Unverified) (out []*Opened, errs []error) {
	out, errs = make([]*Opened, len(us)), make([]error, len(us))
	batched := len(us) > 1 && verifyBatchEquation(us)
	for i, u := range us {
		if batched {
			out[i], errs[i] = u.decode()
		} else {
			out[i], errs[i] = u.Verify()
		}
	}
	return out, errs
}

// decrypted is an entry's plaintext: the inner plaintext, the signature,
// and the digest the signature should cover.
type decrypted struct {
	inner, sig, digest []byte
	pooled             bool // inner may be given back (Opened.Release)
}

// decrypt checks the outer header, decrypts every chunk and the signature
// box, and hashes what the signature covers.
func decrypt(b []byte, me *keys.SecretKey, keyID [keyIDSize]byte) (decrypted, error) {
	innerLen, hl, err := checkOuter(b, keyID)
	if err != nil {
		return decrypted{}, err
	}
	body := b[hl:]
	header := b[:hl]
	aead, err := openAEAD(header, me)
	if err != nil {
		return decrypted{}, err
	}

	in, pooled := plainBuffer(innerLen)
	hashes := make([][32]byte, numChunks(innerLen))
	var failed atomic.Int64 // 1 + index of a chunk that failed
	eachChunk(innerLen, func(i, off, n int) {
		var nonce [chacha20poly1305.NonceSize]byte
		pos := i * sealedSize
		if _, err := aead.Open(in[off:off], chunkNonce(&nonce, i), body[pos:pos+n+tagSize], header); err != nil {
			failed.CompareAndSwap(0, int64(i)+1)
			return
		}
		sum256(&hashes[i], in[off:off+n])
	})
	if i := failed.Load(); i != 0 {
		return decrypted{}, fmt.Errorf("%w: chunk %d failed authentication", ErrCorrupt, i-1)
	}
	sig, err := aead.Open(make([]byte, 0, sigSize), sigNonce[:], body[len(body)-sigBoxSize:], header)
	if err != nil {
		return decrypted{}, fmt.Errorf("%w: signature box failed authentication", ErrCorrupt)
	}
	return decrypted{inner: in, sig: sig, digest: digest(keyID, hashes), pooled: pooled}, nil
}

// openAEAD returns the AEAD of an entry whose outer header (checked) is
// header, sealed to me: version 2's HPKE context, or version 3's chain.
func openAEAD(header []byte, me *keys.SecretKey) (cipherAEAD, error) {
	if header[len(magic)] == Version3 {
		return chainAEAD(header, me)
	}
	key, err := recipientSecret(me, header[headerSize-encSize:headerSize], hpkeInfo, exportContext)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	return aead, nil
}

// innerFields are the fields at the start of the inner plaintext.
type innerFields struct {
	id        command.ID
	author    ed25519.PublicKey
	user      string
	cmd       []byte
	signedLen int // the end of the command; zero padding follows
}

// parsePrefix reads the fields before the command and checks that the
// command fits in the inner plaintext's length. in may hold only the first
// chunk, but its length must be the whole inner length.
func parsePrefix(in []byte) (innerFields, error) {
	var f innerFields
	if len(in) < innerFixed {
		return f, fmt.Errorf("%w: inner plaintext of %d bytes is too short", ErrCorrupt, len(in))
	}
	copy(f.id[:], in)
	rest := in[command.IDSize:]
	f.author = ed25519.PublicKey(rest[:authorSize])
	rest = rest[authorSize:]
	ulen := int(rest[0])
	rest = rest[1:]
	if len(rest) < ulen+8 {
		return f, fmt.Errorf("%w: inner fields overrun", ErrCorrupt)
	}
	f.user = string(rest[:ulen])
	rest = rest[ulen:]
	cmdLen := binary.BigEndian.Uint64(rest)
	rest = rest[8:]
	if cmdLen > uint64(len(rest)) {
		return f, fmt.Errorf("%w: command length %d overruns the entry", ErrCorrupt, cmdLen)
	}
	f.cmd = rest[:cmdLen]
	f.signedLen = len(in) - len(rest) + int(cmdLen)
	return f, nil
}

// checkInner checks a decrypted entry's fields, padding and author. dig is
// what the signature must cover (computed while decrypting); nil means
// compute it here.
func checkInner(in, sig, dig []byte, keyID [keyIDSize]byte, user string, trusted []keys.PublicKey) (*Unverified, error) {
	f, err := parsePrefix(in)
	if err != nil {
		return nil, err
	}
	if pad := in[f.signedLen:]; len(bytes.Trim(pad, "\x00")) != 0 {
		return nil, fmt.Errorf("%w: padding is not zero", ErrCorrupt)
	}
	if f.user != user {
		return nil, fmt.Errorf("%w: sealed for user %q", ErrOtherUserName, f.user)
	}
	u := Unverified{o: Opened{ID: f.id, User: f.user}, author: f.author, cmd: f.cmd, sig: sig}
	found := false
	for _, k := range trusted {
		if k.Ed25519.Equal(f.author) {
			u.o.Author, found = k, true
			break
		}
	}
	if !found {
		return nil, &UnknownAuthorError{Author: bytes.Clone(f.author)}
	}
	if dig == nil {
		dig = innerDigest(keyID, in)
	}
	u.dig = dig
	return &u, nil
}

// MinPadded is the smallest inner plaintext a writer seals: every entry is
// padded to at least this length.
const MinPadded = 1 << 10

// PaddedLen returns the length a writer pads an inner plaintext of n bytes
// to, for an entry holding a command of kind k (docs/FORMAT.md §2): the
// kinds that carry a message or a state (Deliver, Append, Checkpoint, Body,
// Restoration) to
// the Padmé length, every other kind to the next power of two, and neither
// below MinPadded. So all of a device's small commands seal to one size,
// and larger batches to a size that tells only the power of two.
func PaddedLen(k command.Kind, n int) int {
	if n <= MinPadded {
		return MinPadded
	}
	if k.HoldsContent() {
		return Padme(n)
	}
	return 1 << bits.Len(uint(n-1))
}

// SealedLen is the size of a version 2 entry whose inner plaintext is
// innerLen bytes (innerLen > 0): what the spool stores and sees. A version
// 3 entry is 4 bytes longer.
func SealedLen(innerLen int) int { return headerSize + ciphertextSize(innerLen) }

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
