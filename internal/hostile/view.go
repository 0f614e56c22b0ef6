package hostile

import (
	"bytes"
	"net/http"
	"slices"

	"cspool/internal/spool"
)

// View is the story a listener tells about the log. The zero View tells the
// truth through the proxy's own read path.
type View struct {
	// Rewrite maps the honest log (every entry the store still holds, in
	// order, with holes where compaction deleted) to the log shown. It must
	// return entries with increasing positions and may reuse data slices;
	// nil shows the honest log.
	Rewrite func(honest []spool.Entry) []spool.Entry
	// KeepHeaders sends the server's real chain hashes rather than the
	// hashes of the log shown: a naive liar.
	KeepHeaders bool
	// Checkpoint, when set, is served on GET checkpoint, and its position as
	// Cspool-Checkpoint on reads, instead of the newest checkpoint.
	Checkpoint *spool.Checkpoint
	// CutShort ends every read body without its end marker.
	CutShort bool
	// HoldCheckpoints makes the proxy answer this listener's checkpoint
	// uploads itself, as a spool that stored them would, and keep them
	// (Proxy.Held) instead of forwarding them: the checkpoint of one side
	// of a fork, to serve to the other side.
	HoldCheckpoints bool
	// LoseAppendAnswers forwards this listener's appends to the server
	// and answers 502 instead of the server's answer: the entries are in
	// the log, but their device never learns their positions.
	LoseAppendAnswers bool
	// Headers, when set, edits the headers of every read response just
	// before they are sent: it may strip, add or alter any of them (see
	// StripHeaders, SetHeader).
	Headers func(http.Header)
}

// StripHeaders removes the named headers from a response.
func StripHeaders(names ...string) func(http.Header) {
	return func(h http.Header) {
		for _, n := range names {
			h.Del(n)
		}
	}
}

// SetHeader sets header name to values (several values: the header given
// several times), in place of what the response had.
func SetHeader(name string, values ...string) func(http.Header) {
	return func(h http.Header) { h[http.CanonicalHeaderKey(name)] = values }
}

// Drop hides the entry at pos. With renumber, the entries after it move
// down one position, so the log shows no hole; without, pos is a hole.
func Drop(pos uint64, renumber bool) func([]spool.Entry) []spool.Entry {
	return DropRange(pos, pos, renumber)
}

// DropRange hides the entries from first to last, like Drop.
func DropRange(first, last uint64, renumber bool) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		out := make([]spool.Entry, 0, len(h))
		var gone uint64
		for _, e := range h {
			if e.Pos >= first && e.Pos <= last {
				gone++
				continue
			}
			if renumber && e.Pos > last {
				e.Pos -= gone
			}
			out = append(out, e)
		}
		return out
	}
}

// Swap shows the entries at a and b in each other's place.
func Swap(a, b uint64) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		out := slices.Clone(h)
		ia, ib := index(out, a), index(out, b)
		if ia >= 0 && ib >= 0 {
			out[ia].Data, out[ib].Data = out[ib].Data, out[ia].Data
		}
		return out
	}
}

// Replay shows the entry at from a second time, right after position
// after; the entries after that move up one position.
func Replay(from, after uint64) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		i := index(h, from)
		if i < 0 {
			return h
		}
		return Insert(after, h[i].Data)(h)
	}
}

// Insert shows data as a new entry right after position after; the entries
// after that move up one position. Before position after exists, it shows
// the honest log.
func Insert(after uint64, data []byte) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		if len(h) == 0 || h[len(h)-1].Pos < after {
			return h
		}
		out := make([]spool.Entry, 0, len(h)+1)
		for _, e := range h {
			if e.Pos > after {
				e.Pos++
			}
			out = append(out, e)
		}
		i, _ := slices.BinarySearchFunc(out, after+1, func(e spool.Entry, p uint64) int { return cmpPos(e.Pos, p) })
		return slices.Insert(out, i, spool.Entry{Pos: after + 1, Data: data})
	}
}

// Truncate shows the log up to position at only, as if nothing came after.
func Truncate(at uint64) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		i := 0
		for i < len(h) && h[i].Pos <= at {
			i++
		}
		return h[:i]
	}
}

// Replace shows data instead of the entry at pos.
func Replace(pos uint64, data []byte) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		out := slices.Clone(h)
		if i := index(out, pos); i >= 0 {
			out[i].Data = data
		}
		return out
	}
}

// Flip shows the entry at pos with the byte at offset (from the end when
// negative) inverted.
func Flip(pos uint64, offset int) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		out := slices.Clone(h)
		if i := index(out, pos); i >= 0 {
			d := bytes.Clone(out[i].Data)
			o := offset
			if o < 0 {
				o += len(d)
			}
			d[o] ^= 0xff
			out[i].Data = d
		}
		return out
	}
}

func index(es []spool.Entry, pos uint64) int {
	i, ok := slices.BinarySearchFunc(es, pos, func(e spool.Entry, p uint64) int { return cmpPos(e.Pos, p) })
	if !ok {
		return -1
	}
	return i
}

func cmpPos(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Backfill shows, besides the honest log, the entries of backup (an older
// copy of the log) up to position upTo that compaction has deleted since:
// an operator that kept what it was told to delete.
func Backfill(backup []spool.Entry, upTo uint64) func([]spool.Entry) []spool.Entry {
	return func(h []spool.Entry) []spool.Entry {
		out := slices.Clone(h)
		for _, e := range backup {
			if e.Pos > upTo {
				break
			}
			if i, ok := slices.BinarySearchFunc(out, e.Pos, func(x spool.Entry, p uint64) int { return cmpPos(x.Pos, p) }); !ok {
				out = slices.Insert(out, i, e)
			}
		}
		return out
	}
}
