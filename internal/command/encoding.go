package command

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// wire is the CBOR item: [version, kind, fields].
type wire struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Kind    uint64
	Fields  wireFields
}

// wireFields uses small integer keys; absent fields are omitted.
type wireFields struct {
	Mailbox    string    `cbor:"1,keyasint,omitempty"`
	MailboxID  []byte    `cbor:"2,keyasint,omitempty"`
	NewName    string    `cbor:"3,keyasint,omitempty"`
	SpecialUse string    `cbor:"4,keyasint,omitempty"`
	Flags      []string  `cbor:"5,keyasint,omitempty"`
	IDs        []byte    `cbor:"6,keyasint,omitempty"` // concatenated 16-byte ids
	Date       int64     `cbor:"7,keyasint,omitempty"`
	BodySize   uint64    `cbor:"8,keyasint,omitempty"`
	Position   uint64    `cbor:"9,keyasint,omitempty"`
	Digest     []byte    `cbor:"10,keyasint,omitempty"`
	Seen       *wireHead `cbor:"11,keyasint,omitempty"`
	Base       *wireHead `cbor:"12,keyasint,omitempty"`
}

type wireHead struct {
	Pos  uint64 `cbor:"1,keyasint,omitempty"`
	Hash []byte `cbor:"2,keyasint,omitempty"`
}

// codec holds the CBOR modes; it is safe for concurrent use.
type codec struct {
	enc cbor.EncMode
	dec cbor.DecMode
}

func newCodec() codec {
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // static options; cannot fail
	}
	dec, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  1 << 16,
		MaxMapPairs:       64,
		UTF8:              cbor.UTF8RejectInvalid,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return codec{enc, dec}
}

// codecs is immutable after package initialisation.
var codecs = newCodec()

func toWire(c *Command) wire {
	w := wire{Version: Version, Kind: uint64(c.Kind)}
	if c.Version == Version2 {
		w.Version = Version2
	}
	f := &w.Fields
	f.Mailbox = c.Mailbox
	if !c.MailboxID.IsZero() {
		f.MailboxID = c.MailboxID[:]
	}
	f.NewName = c.NewName
	f.SpecialUse = c.SpecialUse
	f.Flags = c.Flags
	if len(c.IDs) > 0 {
		f.IDs = make([]byte, 0, len(c.IDs)*IDSize)
		for _, id := range c.IDs {
			f.IDs = append(f.IDs, id[:]...)
		}
	}
	f.Date = c.Date
	f.BodySize = uint64(len(c.Body))
	f.Position = c.Position
	f.Digest = c.Digest
	if c.Seen != nil {
		f.Seen = &wireHead{Pos: c.Seen.Pos, Hash: c.Seen.Hash}
	}
	if c.Base != nil {
		f.Base = &wireHead{Pos: c.Base.Pos, Hash: c.Base.Hash}
	}
	return w
}

// EncodeHeader returns the CBOR item of c, without the body. The full
// encoding is EncodeHeader(c) followed by c.Body.
func EncodeHeader(c *Command) ([]byte, error) {
	return EncodeHeaderPrefixed(c, 0)
}

// EncodeHeaderPrefixed is EncodeHeader for a body of prefixLen bytes
// followed by c.Body: the full encoding is EncodeHeaderPrefixed(c, len(p))
// followed by p and c.Body, the same bytes as for a command whose Body is
// p and c.Body joined.
func EncodeHeaderPrefixed(c *Command, prefixLen int) ([]byte, error) {
	v := c
	if prefixLen > 0 && len(c.Body) == 0 {
		withBody := *c
		withBody.Body = []byte{0}
		v = &withBody
	}
	if err := v.Validate(); err != nil {
		return nil, err
	}
	w := toWire(c)
	w.Fields.BodySize += uint64(prefixLen)
	return codecs.enc.Marshal(w)
}

// Encode returns the full encoding of c: the CBOR item followed by the body.
func Encode(c *Command) ([]byte, error) {
	h, err := EncodeHeader(c)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(h)+len(c.Body))
	return append(append(out, h...), c.Body...), nil
}

// Decode parses an encoded command. The returned command's Body aliases b:
// it is not copied.
func Decode(b []byte) (*Command, error) {
	c, n, err := DecodeHeader(b, int64(len(b)))
	if err != nil {
		return nil, err
	}
	if n < len(b) {
		c.Body = b[n:]
	}
	return c, nil
}

// oneByte stands for a body Validate sees but DecodeHeader does not hold.
var oneByte = []byte{0}

// DecodeHeader parses the header of an encoded command of size bytes
// whose first bytes are b (at least its CBOR item): what Decode accepts
// and refuses, with a Body of nil. It returns the header's length; the
// body is the size-n bytes after it.
func DecodeHeader(b []byte, size int64) (*Command, int, error) {
	var w wire
	after, err := codecs.dec.UnmarshalFirst(b, &w)
	if err != nil {
		// An array of the wrong length may be a different version.
		if v, ok := peekVersion(b); ok && v != Version && v != Version2 {
			return nil, 0, fmt.Errorf("%w %d", ErrUnknownVersion, v)
		}
		return nil, 0, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	n := len(b) - len(after)
	rest := size - int64(n)
	if w.Version != Version && w.Version != Version2 {
		return nil, 0, fmt.Errorf("%w %d", ErrUnknownVersion, w.Version)
	}
	if w.Kind < 1 || w.Kind > uint64(maxKind) {
		return nil, 0, fmt.Errorf("%w %d", ErrUnknownKind, w.Kind)
	}
	f := &w.Fields
	if f.BodySize != uint64(rest) {
		return nil, 0, fmt.Errorf("%w: body is %d bytes, header says %d", ErrMalformed, rest, f.BodySize)
	}
	c := &Command{
		Kind:       Kind(w.Kind),
		Mailbox:    f.Mailbox,
		NewName:    f.NewName,
		SpecialUse: f.SpecialUse,
		Flags:      f.Flags,
		Date:       f.Date,
		Position:   f.Position,
		Digest:     f.Digest,
	}
	if w.Version == Version2 {
		c.Version = Version2
	}
	if f.MailboxID != nil {
		if len(f.MailboxID) != IDSize {
			return nil, 0, fmt.Errorf("%w: mailbox id is %d bytes", ErrMalformed, len(f.MailboxID))
		}
		copy(c.MailboxID[:], f.MailboxID)
	}
	if len(f.IDs)%IDSize != 0 {
		return nil, 0, fmt.Errorf("%w: ids field is %d bytes, not a multiple of %d", ErrMalformed, len(f.IDs), IDSize)
	}
	if n := len(f.IDs) / IDSize; n > 0 {
		c.IDs = make([]ID, n)
		for i := range c.IDs {
			copy(c.IDs[i][:], f.IDs[i*IDSize:])
		}
	}
	if f.Seen != nil {
		c.Seen = &Head{Pos: f.Seen.Pos, Hash: f.Seen.Hash}
	}
	if f.Base != nil {
		c.Base = &Head{Pos: f.Base.Pos, Hash: f.Base.Hash}
	}
	// Validate and the encoding look at the body's length only.
	if rest > 0 {
		c.Body = oneByte
	}
	err = c.Validate()
	var again []byte
	if err == nil {
		// Exactly one encoding: the item must be what we would write.
		w := toWire(c)
		w.Fields.BodySize = uint64(rest)
		if again, err = codecs.enc.Marshal(w); err != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	c.Body = nil
	if err != nil {
		return nil, 0, err
	}
	if !bytes.Equal(again, b[:n]) {
		return nil, 0, fmt.Errorf("%w: not in canonical form", ErrMalformed)
	}
	return c, n, nil
}

// peekVersion reads the first element of a CBOR array, if b starts with one.
func peekVersion(b []byte) (uint64, bool) {
	var raw []cbor.RawMessage
	if _, err := codecs.dec.UnmarshalFirst(b, &raw); err != nil || len(raw) == 0 {
		return 0, false
	}
	var v uint64
	if err := cbor.Unmarshal(raw[0], &v); err != nil {
		return 0, false
	}
	return v, true
}

// Equal reports whether a and b are the same command (used by tests and the
// replay check).
func Equal(a, b *Command) bool {
	if a == nil || b == nil {
		return a == b
	}
	wa, wb := toWire(a), toWire(b)
	return reflect.DeepEqual(wa, wb) && bytes.Equal(a.Body, b.Body)
}

// IsDecodeError reports whether err is one of Decode's errors.
func IsDecodeError(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnknownVersion) ||
		errors.Is(err, ErrUnknownKind) || errors.Is(err, ErrInvalid)
}
