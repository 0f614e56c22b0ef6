package api

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ContentType is the media type of both entry framings.
const ContentType = "application/vnd.cspool.entries"

// Framing errors; they are wrapped in ErrBadRequest on the server and
// ErrProtocol in the client.
var (
	errTruncated   = errors.New("truncated frame")
	errOverflow    = errors.New("varint overflows 64 bits")
	errNonMinimal  = errors.New("varint not minimally encoded")
	errTrailing    = errors.New("data after the end marker")
	errEntryTooBig = errors.New("entry length exceeds the limit")
)

// entryTooBigError is errEntryTooBig for one entry: its position and the
// length its frame announced.
type entryTooBigError struct {
	pos, size uint64
}

func (e *entryTooBigError) Error() string {
	return fmt.Sprintf("entry %d: %d bytes: %v", e.pos, e.size, errEntryTooBig)
}

func (e *entryTooBigError) Is(target error) bool { return target == errEntryTooBig }

// uvarint decodes a minimally encoded unsigned varint from b.
func uvarint(b []byte) (uint64, int, error) {
	v, n := binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, 0, errTruncated
	case n < 0:
		return 0, 0, errOverflow
	case n > 1 && b[n-1] == 0:
		return 0, 0, errNonMinimal
	}
	return v, n, nil
}

// readUvarint is uvarint over a stream. io.EOF is returned only when no byte
// of the varint was read.
func readUvarint(r io.ByteReader) (uint64, error) {
	var x uint64
	var s uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				return 0, errTruncated
			}
			return 0, err
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, errOverflow
			}
			if i > 0 && b == 0 {
				return 0, errNonMinimal
			}
			return x | uint64(b)<<s, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, errOverflow
}

// EncodeBatch returns the append body for batch: for each entry, its length
// as a uvarint and its bytes.
func EncodeBatch(batch [][]byte) []byte {
	size := 0
	for _, d := range batch {
		size += binary.MaxVarintLen64 + len(d)
	}
	b := make([]byte, 0, size)
	for _, d := range batch {
		b = binary.AppendUvarint(b, uint64(len(d)))
		b = append(b, d...)
	}
	return b
}

// DecodeBatch parses an append body. The returned entries alias body. It
// fails on a truncated frame, a non-minimal or overflowing varint, more than
// maxCount entries, or an empty body.
func DecodeBatch(body []byte, maxCount int) ([][]byte, error) {
	var batch [][]byte
	for off := 0; off < len(body); {
		if len(batch) == maxCount {
			return nil, fmt.Errorf("batch has more than %d entries", maxCount)
		}
		n, k, err := uvarint(body[off:])
		if err != nil {
			return nil, fmt.Errorf("entry %d at byte %d: length: %w", len(batch), off, err)
		}
		off += k
		if n > uint64(len(body)-off) {
			return nil, fmt.Errorf("entry %d at byte %d: %d bytes announced, %d left: %w", len(batch), off, n, len(body)-off, errTruncated)
		}
		batch = append(batch, body[off:off+int(n):off+int(n)])
		off += int(n)
	}
	if len(batch) == 0 {
		return nil, errors.New("empty batch")
	}
	return batch, nil
}

// entryWriter writes the frames of a read response.
type entryWriter struct {
	w   *bufio.Writer
	buf [2 * binary.MaxVarintLen64]byte
}

func (ew *entryWriter) write(pos uint64, data []byte) error {
	b := binary.AppendUvarint(ew.buf[:0], pos)
	b = binary.AppendUvarint(b, uint64(len(data)))
	if _, err := ew.w.Write(b); err != nil {
		return err
	}
	_, err := ew.w.Write(data)
	return err
}

// end writes the end marker and flushes.
func (ew *entryWriter) end() error {
	if err := ew.w.WriteByte(0); err != nil {
		return err
	}
	return ew.w.Flush()
}

// entryReader decodes a read response.
type entryReader struct {
	r        *bufio.Reader
	maxEntry uint64
	done     bool
	// arena, if it has room, holds the entries' bytes one after another:
	// an entry that fits in its spare capacity is read there (its slice
	// capped at its end) instead of into an allocation of its own.
	arena []byte
}

// next returns the next entry, or io.EOF after the end marker. Any other
// end of the stream is errTruncated.
func (er *entryReader) next() (pos uint64, data []byte, err error) {
	if er.done {
		return 0, nil, io.EOF
	}
	pos, err = readUvarint(er.r)
	if err == io.EOF {
		return 0, nil, errTruncated
	}
	if err != nil {
		return 0, nil, err
	}
	if pos == 0 {
		er.done = true
		if _, err := er.r.ReadByte(); err != io.EOF {
			return 0, nil, errTrailing
		}
		return 0, nil, io.EOF
	}
	n, err := readUvarint(er.r)
	if err == io.EOF {
		return 0, nil, errTruncated
	}
	if err != nil {
		return 0, nil, err
	}
	if n > er.maxEntry {
		return 0, nil, &entryTooBigError{pos: pos, size: n}
	}
	if free := uint64(cap(er.arena) - len(er.arena)); n <= free {
		// The caller's buffer is there already: announcing a length
		// costs the peer as much as sending it would.
		start := len(er.arena)
		er.arena = er.arena[:start+int(n)]
		data = er.arena[start : start+int(n) : start+int(n)]
		if _, err := io.ReadFull(er.r, data); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return 0, nil, errTruncated
			}
			return 0, nil, err
		}
		return pos, data, nil
	}
	// Grow with the data actually received, not with the announced length:
	// start small and at most double what has arrived so far, so a peer
	// announcing a large entry and sending little costs little.
	data = make([]byte, 0, min(n, 64<<10))
	for uint64(len(data)) < n {
		chunk := min(n-uint64(len(data)), max(64<<10, uint64(len(data))))
		start := len(data)
		data = slices.Grow(data, int(chunk))[:start+int(chunk)]
		if _, err := io.ReadFull(er.r, data[start:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return 0, nil, errTruncated
			}
			return 0, nil, err
		}
	}
	return pos, data, nil
}
