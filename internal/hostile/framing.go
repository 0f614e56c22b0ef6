package hostile

import (
	"bufio"
	"encoding/binary"

	"cspool/internal/spool"
)

// writeFrames writes the body of a read response (docs/API.md §3): for each
// entry its position and length as minimal uvarints and its data, then the
// end marker, a zero position, unless cut is set (a body cut short).
func writeFrames(w *bufio.Writer, entries []spool.Entry, cut bool) error {
	var buf [binary.MaxVarintLen64]byte
	for _, e := range entries {
		n := binary.PutUvarint(buf[:], e.Pos)
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		n = binary.PutUvarint(buf[:], uint64(len(e.Data)))
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		if _, err := w.Write(e.Data); err != nil {
			return err
		}
	}
	if !cut {
		if err := w.WriteByte(0); err != nil {
			return err
		}
	}
	return w.Flush()
}
