package entry

import (
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"

	"cspool/internal/keys"
)

// The recipient's side of HPKE, the key schedule written out.
//
// An entry's key is HPKE's exporter secret (RFC 9180, mode_base,
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, export-only) for hpkeInfo,
// exported for exportContext. crypto/hpke computes it with a new HMAC,
// two new SHA-256 states and their buffers for every one of its eight
// extracts and expands: 18 µs and 7.3 KB in 96 allocations an entry on
// top of the X25519 exchange (41 µs), most of what a first sync allocates
// besides the plaintexts. recipientKey computes the same bytes (RFC 9180
// §4.1, §5.1, §5.3, §7.2.1; TestRecipientKeyAsHPKE against crypto/hpke)
// with the HMACs' SHA-256 states taken from a pool, the two extracts that
// depend on hpkeInfo alone done once, and the exchange the same call to
// crypto/ecdh, which refuses an all-zero shared secret as crypto/hpke
// does. Sealing still goes through crypto/hpke.

// HPKE's identifiers and labels (RFC 9180 §4, §5.1, §7).
const (
	hpkeVersion = "HPKE-v1"
	kemSuite    = "KEM\x00\x20"                  // DHKEM(X25519, HKDF-SHA256)
	hpkeSuite   = "HPKE\x00\x20\x00\x01\xff\xff" // that KEM, HKDF-SHA256, export-only
)

// keyScheduleContext is mode_base's key_schedule_context for hpkeInfo
// and no PSK: the mode, then psk_id_hash and info_hash.
var keyScheduleContext = func() []byte {
	h := hmacPool.Get().(*hmacSHA256)
	defer hmacPool.Put(h)
	var salt [sha256.Size]byte
	pskID := h.mac(salt[:], []byte(hpkeVersion+hpkeSuite+"psk_id_hash"))
	info := h.mac(salt[:], []byte(hpkeVersion+hpkeSuite+"info_hash"+hpkeInfo))
	return append(append([]byte{0}, pskID[:]...), info[:]...)
}()

// hmacSHA256 computes HMAC-SHA256 (RFC 2104) with two SHA-256 states it
// keeps.
type hmacSHA256 struct {
	inner, outer hash.Hash
	pad          [sha256.BlockSize]byte
	sum          [sha256.Size]byte
}

var hmacPool = sync.Pool{New: func() any { return &hmacSHA256{inner: sha256.New(), outer: sha256.New()} }}

// mac returns HMAC-SHA256 under key (at most a block: every key here is
// a hash or empty) of msg.
func (h *hmacSHA256) mac(key, msg []byte) [sha256.Size]byte {
	clear(h.pad[:])
	copy(h.pad[:], key)
	for i := range h.pad {
		h.pad[i] ^= 0x36
	}
	h.inner.Reset()
	h.inner.Write(h.pad[:])
	h.inner.Write(msg)
	in := h.inner.Sum(h.sum[:0])
	for i := range h.pad {
		h.pad[i] ^= 0x36 ^ 0x5c
	}
	h.outer.Reset()
	h.outer.Write(h.pad[:])
	h.outer.Write(in)
	var out [sha256.Size]byte
	h.outer.Sum(out[:0])
	return out
}

// recipientKey is the AEAD key of an entry whose encapsulated key is
// enc, for the recipient me: what hpke.NewRecipient(enc, me, HKDF-SHA256,
// export-only, hpkeInfo) exports for exportContext, 32 bytes.
func recipientKey(me *keys.SecretKey, enc []byte) ([32]byte, error) {
	var key [32]byte
	if len(enc) != encSize {
		return key, fmt.Errorf("%w: encapsulated key of %d bytes", ErrCorrupt, len(enc))
	}
	pkE, err := ecdh.X25519().NewPublicKey(enc)
	if err != nil {
		return key, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	sk := me.X25519()
	dh, err := sk.ECDH(pkE)
	if err != nil {
		return key, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	pkR := sk.PublicKey().Bytes()
	if len(pkR) != encSize {
		return key, errors.New("opening entry: not an X25519 key")
	}
	h := hmacPool.Get().(*hmacSHA256)
	defer hmacPool.Put(h)
	var zero [sha256.Size]byte
	var buf [160]byte
	// ExtractAndExpand (§4.1): eae_prk, then shared_secret over the KEM
	// context enc || pkRm.
	m := append(append(buf[:0], hpkeVersion+kemSuite+"eae_prk"...), dh...)
	prk := h.mac(zero[:], m)
	m = binary.BigEndian.AppendUint16(buf[:0], sha256.Size)
	m = append(m, hpkeVersion+kemSuite+"shared_secret"...)
	m = append(append(append(m, enc...), pkR...), 1)
	shared := h.mac(prk[:], m)
	// KeySchedule (§5.1), no PSK: secret, then exporter_secret.
	secret := h.mac(shared[:], append(buf[:0], hpkeVersion+hpkeSuite+"secret"...))
	m = binary.BigEndian.AppendUint16(buf[:0], sha256.Size)
	m = append(m, hpkeVersion+hpkeSuite+"exp"...)
	m = append(append(m, keyScheduleContext...), 1)
	exporter := h.mac(secret[:], m)
	// Export (§5.3): LabeledExpand(exporter_secret, "sec", context, 32).
	m = binary.BigEndian.AppendUint16(buf[:0], uint16(len(key)))
	m = append(m, hpkeVersion+hpkeSuite+"sec"+exportContext...)
	m = append(m, 1)
	key = h.mac(exporter[:], m)
	clear(buf[:])
	clear(h.pad[:])
	clear(h.sum[:])
	return key, nil
}
