package mailstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/fxamacker/cbor/v2"
)

// ReadSnapshot decodes an encoded snapshot read from r, as DecodeSnapshot
// decodes it from bytes: it accepts what DecodeSnapshot accepts and
// refuses what it refuses, without holding the encoding. DecodeSnapshot
// decodes the whole and encodes it again to compare; ReadSnapshot reads
// the top-level map's heads itself, requiring the canonical ones, and
// decodes and encodes again each mailbox, subscription, keyword and
// message alone, comparing it with the bytes it was read from: canonical
// CBOR of the whole is the canonical heads and the canonical items in
// order, so both accept the same encodings. The state it returns is held
// whole (what Restore takes).
func ReadSnapshot(r io.Reader) (*Snapshot, error) {
	d := &snapDecoder{r: bufio.NewReaderSize(r, 32<<10)}
	sn, err := d.snapshot()
	if err != nil {
		return nil, snapshotError(err)
	}
	if err := sn.check(); err != nil {
		return nil, err
	}
	return sn, nil
}

// snapshotError is err as an ErrSnapshot.
func snapshotError(err error) error {
	if errors.Is(err, ErrSnapshot) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrSnapshot, err)
}

// snapDecoder reads canonical CBOR from r.
type snapDecoder struct {
	r     *bufio.Reader
	item  []byte       // the current array element's bytes
	again bytes.Buffer // the element encoded again
	arg   [8]byte      // a head's argument being read

	// When message is set, each message is handed to it as it is
	// decoded (m is reused for the next) instead of being held in
	// Snapshot.Messages; when entry is set, each 24-byte record of
	// Entries (old false) and Superseded (old true) is handed to it
	// instead of being held. The snapshot's fields before the messages
	// (position, mailboxes) are decoded when they are called.
	message func(sn *Snapshot, m *SnapMessage) error
	entry   func(sn *Snapshot, rec []byte, old bool) error
}

// snapBufEnc is snapCodecs' encoder into a buffer the caller gives, so
// that encoding each element again allocates nothing. Immutable.
var snapBufEnc = func() cbor.UserBufferEncMode {
	enc, err := cbor.CoreDetEncOptions().UserBufferEncMode()
	if err != nil {
		panic(err)
	}
	return enc
}()

var errNotCanonical = fmt.Errorf("%w: not in canonical form", ErrSnapshot)

// head reads an item's head: its major type and argument, which must be
// in the shortest form and not indefinite.
func (d *snapDecoder) head() (byte, uint64, error) {
	b, err := d.r.ReadByte()
	if err != nil {
		return 0, 0, unexpected(err)
	}
	d.item = append(d.item, b)
	major, ai := b>>5, b&0x1f
	var n uint64
	switch {
	case ai < 24:
		return major, uint64(ai), nil
	case ai <= 27:
		k := 1 << (ai - 24)
		buf := d.arg[:]
		clear(buf)
		if _, err := io.ReadFull(d.r, buf[8-k:]); err != nil {
			return 0, 0, unexpected(err)
		}
		d.item = append(d.item, buf[8-k:]...)
		n = binary.BigEndian.Uint64(buf)
		if major == 7 {
			return major, n, nil // a float or simple value: the element's decoder judges it
		}
		if min := [4]uint64{24, 1 << 8, 1 << 16, 1 << 32}[ai-24]; n < min {
			return 0, 0, errNotCanonical
		}
		return major, n, nil
	}
	return 0, 0, fmt.Errorf("%w: indefinite length or reserved value", ErrSnapshot)
}

// uint reads an unsigned integer.
func (d *snapDecoder) uint() (uint64, error) {
	major, n, err := d.head()
	if err != nil {
		return 0, err
	}
	if major != cborUint {
		return 0, fmt.Errorf("%w: major type %d where an unsigned integer belongs", ErrSnapshot, major)
	}
	return n, nil
}

// skip reads the rest of an item whose head was read, into d.item.
func (d *snapDecoder) skip(major byte, n uint64, depth int) error {
	if depth > 8 {
		return fmt.Errorf("%w: nested too deep", ErrSnapshot)
	}
	switch major {
	case cborUint, cborNeg, 7:
		return nil
	case cborBytes, cborText:
		if n > 1<<30 {
			return fmt.Errorf("%w: a string of %d bytes", ErrSnapshot, n)
		}
		var err error
		d.item, err = readN(d.r, d.item, n)
		return err
	case cborArray, cborMap:
		if major == cborMap {
			n *= 2
		}
		if n > 1<<20 {
			return fmt.Errorf("%w: an element of %d items", ErrSnapshot, n)
		}
		for range n {
			m, k, err := d.head()
			if err != nil {
				return err
			}
			if err := d.skip(m, k, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: major type %d", ErrSnapshot, major)
}

// element reads one whole item into d.item.
func (d *snapDecoder) element() error {
	d.item = d.item[:0]
	major, n, err := d.head()
	if err != nil {
		return err
	}
	return d.skip(major, n, 0)
}

// arrayHead reads the head of an array, bounded in length.
func (d *snapDecoder) arrayHead() (uint64, error) {
	d.item = d.item[:0]
	major, n, err := d.head()
	if err != nil {
		return 0, err
	}
	if major != cborArray {
		return 0, fmt.Errorf("%w: major type %d where an array belongs", ErrSnapshot, major)
	}
	if n > 1<<26 {
		return 0, fmt.Errorf("%w: an array of %d elements", ErrSnapshot, n)
	}
	return n, nil
}

// decodeElement reads the next element into v, which must encode again to
// the element's bytes.
func decodeElement[T any](d *snapDecoder, v *T) error {
	if err := d.element(); err != nil {
		return err
	}
	if err := snapCodecs.dec.Unmarshal(d.item, v); err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	d.again.Reset()
	if err := snapBufEnc.MarshalToBuffer(v, &d.again); err != nil || !bytes.Equal(d.again.Bytes(), d.item) {
		return errNotCanonical
	}
	return nil
}

// readArray reads an array's head and each element, decoded into a new
// T appended to list.
func readArray[T any](d *snapDecoder, list *[]T) error {
	n, err := d.arrayHead()
	if err != nil {
		return err
	}
	// The length is what the array says, up to a bound: it is trusted to
	// allocate no more than the elements read would.
	*list = make([]T, 0, min(n, 1<<16))
	for range n {
		*list = append(*list, *new(T))
		if err := decodeElement(d, &(*list)[len(*list)-1]); err != nil {
			return err
		}
	}
	return nil
}

// eachElement is readArray handing each element to use instead of
// holding it; v is reused, zeroed before each.
func eachElement[T any](d *snapDecoder, use func(v *T) error) error {
	n, err := d.arrayHead()
	if err != nil {
		return err
	}
	v := new(T)
	for range n {
		*v = *new(T)
		if err := decodeElement(d, v); err != nil {
			return err
		}
		if err := use(v); err != nil {
			return err
		}
	}
	return nil
}

// eachRecord reads a byte string, not null, of 24-byte records, handing
// each to use; it returns whether the string was empty.
func (d *snapDecoder) eachRecord(what string, use func(rec []byte) error) (bool, error) {
	d.item = d.item[:0]
	major, n, err := d.head()
	if err != nil {
		return false, err
	}
	if major != cborBytes {
		return false, fmt.Errorf("%w: major type %d where a byte string belongs", ErrSnapshot, major)
	}
	if n%24 != 0 {
		return false, fmt.Errorf("%w: %s field of %d bytes", ErrSnapshot, what, n)
	}
	var rec [24]byte
	for k := n / 24; k > 0; k-- {
		if _, err := io.ReadFull(d.r, rec[:]); err != nil {
			return false, unexpected(err)
		}
		if err := use(rec[:]); err != nil {
			return false, err
		}
	}
	return n == 0, nil
}

// byteString reads a byte string, not null.
func (d *snapDecoder) byteString() ([]byte, error) {
	d.item = d.item[:0]
	major, n, err := d.head()
	if err != nil {
		return nil, err
	}
	if major != cborBytes {
		return nil, fmt.Errorf("%w: major type %d where a byte string belongs", ErrSnapshot, major)
	}
	if n > 1<<40 {
		return nil, fmt.Errorf("%w: a byte string of %d bytes", ErrSnapshot, n)
	}
	return readN(d.r, []byte{}, n)
}

// readN appends n bytes read from r to b, in pieces: a length read is not
// trusted to allocate before the bytes are there.
func readN(r io.Reader, b []byte, n uint64) ([]byte, error) {
	for n > 0 {
		k := min(n, 1<<20)
		start := len(b)
		b = slices.Grow(b, int(k))[:start+int(k)]
		if _, err := io.ReadFull(r, b[start:]); err != nil {
			return nil, unexpected(err)
		}
		n -= k
	}
	return b, nil
}

// snapshot reads the top-level map: keys 1 to 8 in order, then 9 and 10
// when present, each once; the map's size must be their number.
func (d *snapDecoder) snapshot() (*Snapshot, error) {
	major, pairs, err := d.head()
	if err != nil {
		return nil, err
	}
	if major != cborMap {
		return nil, fmt.Errorf("%w: major type %d where a map belongs", ErrSnapshot, major)
	}
	if pairs < 8 || pairs > 10 {
		return nil, fmt.Errorf("%w: a map of %d pairs", ErrSnapshot, pairs)
	}
	sn := &Snapshot{}
	last := uint64(0)
	superseded := false // key 10 handed to d.entry
	for range pairs {
		key, err := d.uint()
		if err != nil {
			return nil, err
		}
		if key <= last || key > 10 {
			return nil, fmt.Errorf("%w: key %d after %d", ErrSnapshot, key, last)
		}
		if key <= 8 && key != last+1 {
			return nil, fmt.Errorf("%w: key %d missing", ErrSnapshot, last+1)
		}
		last = key
		switch key {
		case 1:
			if sn.Version, err = d.uint(); err == nil && sn.Version != SnapshotVersion {
				err = fmt.Errorf("%w: version %d", ErrSnapshot, sn.Version)
			}
		case 2:
			sn.Position, err = d.uint()
		case 3:
			var uv uint64
			if uv, err = d.uint(); err == nil && uv > 0xffffffff {
				err = fmt.Errorf("%w: UIDVALIDITY %d", ErrSnapshot, uv)
			}
			sn.NextUIDValidity = uint32(uv)
		case 4:
			err = readArray(d, &sn.Mailboxes)
		case 5:
			err = readArray(d, &sn.Subscriptions)
		case 6:
			err = readArray(d, &sn.Keywords)
		case 7:
			if d.message != nil {
				err = eachElement(d, func(m *SnapMessage) error { return d.message(sn, m) })
			} else {
				err = readArray(d, &sn.Messages)
			}
		case 8:
			if d.entry != nil {
				_, err = d.eachRecord("entries", func(rec []byte) error { return d.entry(sn, rec, false) })
			} else {
				sn.Entries, err = d.byteString()
			}
		case 9:
			// omitempty: present only when not empty.
			if sn.Chain, err = d.byteString(); err == nil && len(sn.Chain) == 0 {
				err = errNotCanonical
			}
		case 10:
			if d.entry != nil {
				var empty bool
				if empty, err = d.eachRecord("superseded entries", func(rec []byte) error { return d.entry(sn, rec, true) }); err == nil && empty {
					err = errNotCanonical
				}
				superseded = true
			} else if sn.Superseded, err = d.byteString(); err == nil && len(sn.Superseded) == 0 {
				err = errNotCanonical
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if last < 8 || pairs != 8+b2u(sn.Chain != nil)+b2u(sn.Superseded != nil || superseded) {
		return nil, errNotCanonical
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: bytes after the state", ErrSnapshot)
	}
	return sn, nil
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// unexpected turns the end of the input inside an item into an error.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
