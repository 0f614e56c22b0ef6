package entry

import (
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"cspool/internal/keys"
)

// Version 3 (docs/FORMAT.md §2, "Version 3: a chain of keys") seals a run of entries to one recipient
// under one HPKE context: the context's exported secret starts a chain of
// keys, each entry takes the next key and the writer keeps only the key
// after it. So a writer that seals many entries to one user (the spool's
// deliveries) makes one X25519 key and agreement for up to MaxChainSteps of
// them instead of one for each, and a reader one agreement for each
// context it meets; what the writer holds after an entry opens no entry
// sealed before it.
const (
	// Version3 is the entry format of a chain of keys.
	Version3 = 3
	// MaxChainSteps bounds the entries one context seals: a reader
	// refuses a step at or past it (ErrCorrupt), so an entry costs it at
	// most this many derivations.
	MaxChainSteps = 1024

	stepSize    = 4
	header3Size = headerSize + stepSize
	// maxHeaderSize is the longest outer header of any version read.
	maxHeaderSize = header3Size

	chainInfo    = "cspool/v3 entry chain"
	chainExport  = "cspool/v3 chain key"
	chainNext    = "cspool/v3 next chain key"
	chainKey     = "cspool/v3 entry key"
	chainMarkGap = 16 // a reader keeps every 16th chain key of a context
	// maxOpenChains bounds the contexts a process keeps to open entries.
	maxOpenChains = 64
)

// headerLen is the outer header's length in format version v.
func outerLen(v byte) int {
	if v == Version3 {
		return header3Size
	}
	return headerSize
}

// chainStep returns the entry key of chain key ck and replaces ck with the
// chain key after it: HKDF-Expand (SHA-256) of ck under two labels.
func chainStep(ck *[32]byte) [chacha20poly1305.KeySize]byte {
	key := entryKey(ck)
	advance(ck)
	return key
}

// derived, if set (by tests), is called at each derivation of a chain.
var derived func()

// entryKey returns the entry key of chain key ck.
func entryKey(ck *[32]byte) [chacha20poly1305.KeySize]byte {
	if derived != nil {
		derived()
	}
	var key [chacha20poly1305.KeySize]byte
	k, err := hkdf.Expand(sha256.New, ck[:], chainKey, len(key))
	if err != nil {
		panic(err) // a 32-byte output of SHA-256's HKDF cannot fail
	}
	copy(key[:], k)
	clear(k)
	return key
}

// advance replaces chain key ck with the chain key after it.
func advance(ck *[32]byte) {
	if derived != nil {
		derived()
	}
	next, err := hkdf.Expand(sha256.New, ck[:], chainNext, len(ck))
	if err != nil {
		panic(err)
	}
	copy(ck[:], next)
	clear(next)
}

// Chains seals entries in format version 3, one context for each
// recipient key, each entry a step of its context's chain (Options.Chains).
// A context is replaced after MaxChainSteps entries. It holds at most max
// recipients' contexts (0 means 65,536); past that an arbitrary one is
// dropped, which costs its recipient a new context at the next entry.
// Safe for concurrent use.
type Chains struct {
	max int
	mu  sync.Mutex
	m   map[[32]byte]*sendChain
}

// NewChains returns Chains holding at most max contexts (0: 65,536).
func NewChains(max int) *Chains {
	if max <= 0 {
		max = 1 << 16
	}
	return &Chains{max: max, m: make(map[[32]byte]*sendChain)}
}

// sendChain is a writer's context for one recipient: its encapsulated key,
// the next step and that step's chain key.
type sendChain struct {
	mu   sync.Mutex
	enc  [encSize]byte
	step uint32
	ck   [32]byte
	live bool
}

// Len says how many recipients' contexts c holds.
func (c *Chains) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// next returns the encapsulated key, step and entry key of the next entry
// to `to`, starting a new context when there is none or the last is used
// up.
func (c *Chains) next(to keys.PublicKey) (enc [encSize]byte, step uint32, key [chacha20poly1305.KeySize]byte, err error) {
	var id [32]byte
	copy(id[:], to.X25519.Bytes())
	c.mu.Lock()
	s := c.m[id]
	if s == nil {
		if len(c.m) >= c.max {
			for k := range c.m {
				delete(c.m, k)
				break
			}
		}
		s = &sendChain{}
		c.m[id] = s
	}
	c.mu.Unlock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.live || s.step >= MaxChainSteps {
		if err := s.start(to); err != nil {
			return enc, 0, key, err
		}
	}
	enc, step = s.enc, s.step
	key = chainStep(&s.ck)
	s.step++
	return enc, step, key, nil
}

// start begins a new context to `to`: a new ephemeral key, its chain key 0.
func (s *sendChain) start(to keys.PublicKey) error {
	enc, ck, err := senderSecret(to, chainInfo, chainExport)
	if err != nil {
		return err
	}
	copy(s.enc[:], enc)
	copy(s.ck[:], ck)
	clear(ck)
	s.step, s.live = 0, true
	return nil
}

// writeHeader3 writes the outer header of a version 3 entry with size
// bytes after it into out (header3Size bytes), taking the next step of
// ch's context for `to`, and returns the entry's AEAD.
func writeHeader3(out []byte, size uint64, to keys.PublicKey, ch *Chains) (cipherAEAD, error) {
	enc, step, key, err := ch.next(to)
	if err != nil {
		return nil, err
	}
	h := appendHeaderStart(out[:0], Version3, to, size)
	h = append(h, enc[:]...)
	binary.BigEndian.AppendUint32(h, step)
	a, err := chacha20poly1305.New(key[:])
	clear(key[:])
	return a, err
}

// openChain is a reader's context: chain keys at every chainMarkGap-th
// step from 0 as far as derived, the furthest chain key derived, and a few
// cursors: the chain keys just after steps opened behind it. A device's
// read is opened by a worker per core, each taking the next run of
// entries (the syncer's openAll); the worker ahead moves the furthest key,
// the others each follow a cursor, so every entry costs two derivations
// (its key and the chain key after it) whichever worker opens it.
type openChain struct {
	mu       sync.Mutex
	marks    [][32]byte // marks[i] is the chain key of step i*chainMarkGap
	last     [32]byte   // the chain key of step lastStep
	lastStep uint32
	cursors  [chainCursors]chainCursor
}

// chainCursors is how many cursors a reader's context keeps.
const chainCursors = 4

// chainCursor is the chain key of step; a step of 0 is no cursor (a
// cursor is left after a step opened, at 1 or more).
type chainCursor struct {
	ck   [32]byte
	step uint32
}

// key returns the entry key of step.
func (c *openChain) key(step uint32) [chacha20poly1305.KeySize]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if step >= c.lastStep {
		for c.lastStep < step {
			c.forward()
		}
		key := entryKey(&c.last)
		c.forward()
		return key
	}
	// Behind the furthest key: from the nearest of the step's mark and
	// the cursors at or before it, and a cursor left after it, in place
	// of the one it started from or else of the furthest behind.
	ck, from, slot := c.marks[step/chainMarkGap], step-step%chainMarkGap, -1
	for i, cu := range c.cursors {
		if cu.step <= step && cu.step > from {
			ck, from, slot = cu.ck, cu.step, i
		}
	}
	for ; from < step; from++ {
		advance(&ck)
	}
	key := entryKey(&ck)
	advance(&ck)
	if slot < 0 {
		slot = 0
		for i, cu := range c.cursors {
			if cu.step < c.cursors[slot].step {
				slot = i
			}
		}
	}
	c.cursors[slot] = chainCursor{ck: ck, step: step + 1}
	clear(ck[:])
	return key
}

// forward moves the furthest chain key one step on, marking every
// chainMarkGap-th.
func (c *openChain) forward() {
	advance(&c.last)
	c.lastStep++
	if c.lastStep%chainMarkGap == 0 {
		c.marks = append(c.marks, c.last)
	}
}

// openChains are the contexts this process has met, by recipient key and
// encapsulated key.
var openChains = struct {
	mu sync.Mutex
	m  map[[2 * encSize]byte]*openChain
}{m: make(map[[2 * encSize]byte]*openChain)}

// chainAEAD returns the AEAD of the version 3 entry whose outer header is
// header, sealed to me: the context's setup (one X25519 agreement) the
// first time its encapsulated key is met, a few derivations after that.
func chainAEAD(header []byte, me *keys.SecretKey) (cipherAEAD, error) {
	enc := header[headerSize-encSize : headerSize]
	step := binary.BigEndian.Uint32(header[headerSize:header3Size])
	if step >= MaxChainSteps {
		return nil, fmt.Errorf("%w: chain step %d, at most %d", ErrCorrupt, step, MaxChainSteps-1)
	}
	var id [2 * encSize]byte
	copy(id[:], me.Public().X25519.Bytes())
	copy(id[encSize:], enc)
	openChains.mu.Lock()
	c := openChains.m[id]
	openChains.mu.Unlock()
	if c == nil {
		ck, err := recipientSecret(me, enc, chainInfo, chainExport)
		if err != nil {
			return nil, err
		}
		c = &openChain{marks: make([][32]byte, 1, 4)}
		copy(c.marks[0][:], ck)
		c.last = c.marks[0]
		openChains.mu.Lock()
		if had := openChains.m[id]; had != nil {
			c = had
		} else {
			if len(openChains.m) >= maxOpenChains {
				for k := range openChains.m {
					delete(openChains.m, k)
					break
				}
			}
			openChains.m[id] = c
		}
		openChains.mu.Unlock()
	}
	key := c.key(step)
	a, err := chacha20poly1305.New(key[:])
	clear(key[:])
	if err != nil {
		return nil, fmt.Errorf("opening entry: %w", err)
	}
	return a, nil
}
