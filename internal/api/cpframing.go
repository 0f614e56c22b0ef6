package api

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// CheckpointContentType is the media type of a checkpoint upload (the keep
// list and the checkpoint) and of a checkpoint download (the checkpoint
// alone).
const CheckpointContentType = "application/vnd.cspool.checkpoint"

// errTooManyKept: a checkpoint upload lists more kept positions than the
// server accepts (413).
var errTooManyKept = errors.New("too many kept positions")

// EncodeCheckpoint returns the body of a checkpoint upload: the number of
// kept positions as a uvarint, each kept position as the uvarint difference
// from the previous one (the first from 0), then data to the end. keep must
// be strictly increasing and start above 0, so that each upload has exactly
// one encoding.
func EncodeCheckpoint(keep []uint64, data []byte) ([]byte, error) {
	b, err := appendKeep(make([]byte, 0, binary.MaxVarintLen64*(1+len(keep))+len(data)), keep)
	if err != nil {
		return nil, err
	}
	return append(b, data...), nil
}

// appendKeep appends what comes before the checkpoint in an upload: the
// kept positions as EncodeCheckpoint encodes them.
func appendKeep(b []byte, keep []uint64) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(keep)))
	prev := uint64(0)
	for i, p := range keep {
		if p <= prev {
			return nil, fmt.Errorf("kept position %d (index %d) after %d: positions must be increasing and above 0", p, i, prev)
		}
		b = binary.AppendUvarint(b, p-prev)
		prev = p
	}
	return b, nil
}

// DecodeCheckpoint parses a checkpoint upload. keep is strictly increasing
// and above 0; data aliases body. It fails on a truncated or non-minimal
// varint, a zero difference (a repeated position or position 0), a
// position beyond 2^64-1, a count larger than the bytes that follow could
// hold, or more than maxKeep positions (errTooManyKept).
func DecodeCheckpoint(body []byte, maxKeep int) (keep []uint64, data []byte, err error) {
	n, off, err := uvarint(body)
	if err != nil {
		return nil, nil, fmt.Errorf("kept count: %w", err)
	}
	if n > uint64(maxKeep) {
		return nil, nil, fmt.Errorf("%d kept positions, limit %d: %w", n, maxKeep, errTooManyKept)
	}
	if n > uint64(len(body)-off) { // each difference takes at least one byte
		return nil, nil, fmt.Errorf("%d kept positions announced, %d bytes left: %w", n, len(body)-off, errTruncated)
	}
	keep = make([]uint64, 0, n)
	prev := uint64(0)
	for i := uint64(0); i < n; i++ {
		d, k, err := uvarint(body[off:])
		if err != nil {
			return nil, nil, fmt.Errorf("kept position %d at byte %d: %w", i, off, err)
		}
		if d == 0 {
			return nil, nil, fmt.Errorf("kept position %d at byte %d: difference 0: positions must be increasing and above 0", i, off)
		}
		if prev+d < prev {
			return nil, nil, fmt.Errorf("kept position %d at byte %d: %w", i, off, errOverflow)
		}
		prev += d
		keep = append(keep, prev)
		off += k
	}
	return keep, body[off:], nil
}
